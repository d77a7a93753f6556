"""A DFL network on Ray: host actors placed on the cluster, sync rounds or async loops."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dfl_ray.actors.host import NodeHost
from dfl_ray.config import Config
from dfl_ray.data import NodeShard
from dfl_ray.ledger import Genesis
from dfl_ray.messages import Message
from dfl_ray.models.flat import ModelSpec
from dfl_ray.node import HostSetup

PLACEMENT_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 60.0
"""Longest wait, at the end of an async run, for the messages in flight to be handled."""
SETTLE_POLL_S = 0.05
ACTOR_PER_NODE_MAX = 32
"""Largest network that `runtime.hosts = 0` runs as one actor per node."""


class PlacementError(RuntimeError):
    """The cluster cannot hold the requested placement; the message says what is missing."""


def resolve_hosts(requested: int, nodes: int, cluster_cpus: float) -> int:
    """How many host actors carry `nodes` DFL nodes.

    `requested` > 0 is taken as given (at most one host per node). 0 means auto: one actor per
    node for small networks (up to `ACTOR_PER_NODE_MAX` nodes), where every node is its own
    Ray actor; above that one host per CPU of the cluster, since more processes than CPUs only
    add memory and context switches while the nodes of one host run one after another anyway.
    """
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"requested hosts must be an integer >= 0, got {requested!r}")
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes must be an integer >= 1, got {nodes!r}")
    if not cluster_cpus > 0:  # also rejects NaN
        raise ValueError(f"cluster CPUs must be > 0, got {cluster_cpus!r}")
    if requested > 0:
        return min(requested, nodes)
    if nodes <= ACTOR_PER_NODE_MAX:
        return nodes
    return max(1, min(nodes, int(cluster_cpus)))


def split_nodes(n: int, hosts: int) -> list[tuple[int, ...]]:
    """Contiguous, near-equal groups of node ids, one per host."""
    return [tuple(int(i) for i in part) for part in np.array_split(np.arange(n), hosts) if len(part)]


def host_resources(config: Config, hosts: int, nodes_per_host: Sequence[int]) -> tuple[float, list[float]]:
    """CPUs per host actor and GPUs per host actor, sized from the cluster when not given."""
    if config.runtime.device == "cuda" and config.runtime.gpus_per_node <= 0:
        raise PlacementError(
            "--device cuda needs a GPU share per node: pass --gpus-per-node > 0 (e.g. 0.25), "
            "or use --device auto to fall back to the CPU"
        )
    cluster = ray.cluster_resources()
    cpus = config.runtime.cpus_per_host
    if cpus <= 0:
        share = cluster.get("CPU", 1.0) / hosts
        if config.runtime.placement == "spread":
            # One bundle per machine: it must also fit the smallest machine of a mixed cluster.
            sizes = [nd["Resources"].get("CPU", 0.0) for nd in ray.nodes() if nd.get("Alive")]
            share = min([share, *(c for c in sizes if c > 0)])
        # Fractions let more host actors than CPUs start; round down to Ray's resource precision.
        cpus = max(math.floor(share * 1000) / 1000, 0.001)
    gpus = [config.runtime.gpus_per_node * k for k in nodes_per_host]
    if any(g > 0 for g in gpus):
        available = cluster.get("GPU", 0.0)
        if available <= 0 and config.runtime.device != "auto":
            raise PlacementError(
                f"--gpus-per-node {config.runtime.gpus_per_node} asks for GPUs but the Ray cluster "
                "has none; run on a machine with GPUs, or pass --device auto to fall back to the CPU"
            )
        if available <= 0:
            gpus = [0.0 for _ in gpus]
    return cpus, gpus


class Network:
    """Creates and drives the host actors of one DFL network (the driver side)."""

    def __init__(
        self,
        config: Config,
        *,
        shards: Sequence[NodeShard],
        neighbors: Mapping[int, tuple[int, ...]],
        genesis: Genesis,
        spec: ModelSpec,
        arrays: Mapping[str, Any],
        run_dir: str | None,
    ) -> None:
        n = len(shards)
        hosts = resolve_hosts(config.runtime.hosts, n, ray.cluster_resources().get("CPU", 1.0))
        self.config = config
        self.groups = split_nodes(n, hosts)
        self.host_of = {node: h for h, group in enumerate(self.groups) for node in group}
        cpus, gpus = host_resources(config, len(self.groups), [len(g) for g in self.groups])
        self.placement_group = None
        strategies: list[Any] = [None] * len(self.groups)
        if config.runtime.placement == "spread":
            strategies = self._spread(len(self.groups), cpus, gpus)
        refs = {k: (v if isinstance(v, ray.ObjectRef) else ray.put(v)) for k, v in arrays.items()}
        actor_cls = ray.remote(NodeHost)
        self.hosts = []
        for h, group in enumerate(self.groups):
            setup = HostSetup(
                host_index=h,
                node_ids=group,
                config=config,
                shards={i: shards[i] for i in group},
                neighbors={i: tuple(neighbors[i]) for i in group},
                genesis=genesis.encode(),
                spec=spec,
                arrays=refs,
                run_dir=run_dir,
                gpus=gpus[h],
            )
            options: dict[str, Any] = {
                "num_cpus": cpus,
                "num_gpus": gpus[h],
                # async: pushes from the other hosts and the driver's requests arrive while
                # the host's loop thread runs; they only queue work for it.
                "max_concurrency": 8 if config.runtime.schedule == "async" else 1,
                "name": None,
            }
            if strategies[h] is not None:
                options["scheduling_strategy"] = strategies[h]
            self.hosts.append(actor_cls.options(**options).remote(setup))
        keys: dict[int, bytes] = {}
        for part in ray.get([h.public_keys.remote() for h in self.hosts]):
            keys.update(part)
        self.directory = {key: node for node, key in keys.items()}
        self.addresses = {node: key.hex() for node, key in keys.items()}
        ray.get(
            [
                h.connect.remote(self.directory, self.host_of, dict(enumerate(self.hosts)))
                for h in self.hosts
            ]
        )

    def _spread(self, hosts: int, cpus: float, gpus: list[float]) -> list[Any]:
        """One host actor per Ray node: a STRICT_SPREAD placement group with one bundle per host."""
        alive = [node for node in ray.nodes() if node.get("Alive")]
        if len(alive) < hosts:
            raise PlacementError(
                f"placement=spread puts each of {hosts} host actors on its own Ray node, but the "
                f"cluster has {len(alive)} node(s); add machines, or use --hosts {len(alive)} "
                "or --placement pack"
            )
        bundles = [{"CPU": cpus, **({"GPU": g} if g > 0 else {})} for g in gpus]
        pg = placement_group(bundles, strategy="STRICT_SPREAD")
        ready, _ = ray.wait([pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            remove_placement_group(pg)
            raise PlacementError(
                f"placement=spread could not reserve {hosts} bundles of {bundles[0]} on distinct Ray "
                f"nodes within {PLACEMENT_TIMEOUT_S:.0f} s; the cluster has {len(alive)} node(s) with "
                f"resources {ray.cluster_resources()}"
            )
        self.placement_group = pg
        return [
            PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=i)
            for i in range(hosts)
        ]

    # ------------------------------------------------------------ sync schedule

    def _route(self, messages: list[tuple[int, Message]]) -> None:
        """Deliver messages host by host until no host has anything left to send."""
        while messages:
            by_host: dict[int, list[tuple[int, Message]]] = {}
            for dest, message in messages:
                by_host.setdefault(self.host_of[dest], []).append((dest, message))
            replies = ray.get([self.hosts[h].deliver.remote(batch) for h, batch in by_host.items()])
            messages = [m for reply in replies for m in reply]

    def run_round(self, round_index: int) -> None:
        """One synchronous round: all train and publish, all deliveries, all aggregate and seal."""
        out = ray.get([h.begin_round.remote(round_index) for h in self.hosts])
        self._route([m for batch in out for m in batch])
        out = ray.get([h.end_round.remote(round_index) for h in self.hosts])
        self._route([m for batch in out for m in batch])
        ray.get([h.finish_round.remote() for h in self.hosts])

    # ------------------------------------------------------------ async schedule

    def start_async(self, rounds: int) -> None:
        ray.get([h.start_async.remote(rounds) for h in self.hosts])

    def async_progress(self) -> tuple[dict[int, dict[str, Any]], list[str]]:
        """(each node's progress: rounds published, finished, ...; errors raised in host loops)."""
        reports = ray.get([h.progress.remote() for h in self.hosts])
        nodes = {n: p for rep in reports for n, p in rep["nodes"].items()}
        return nodes, [rep["error"] for rep in reports if rep["error"]]

    def stop_async(self, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
        """End the local rounds, let every message in flight be handled, then stop the loops.

        All is quiet when every loop waits with nothing to do and every batch sent has been
        handled, seen twice in a row with the same totals (a batch in flight shows as sent but
        not handled; one handled between the two looks changes the totals). Returns whether that
        happened within `timeout_s`; the loops stop either way and pending blocks are stored
        with the endorsements they have.
        """
        ray.get([h.wind_down.remote() for h in self.hosts])
        deadline = time.monotonic() + timeout_s
        previous: tuple[int, int] | None = None
        quiet = False
        while time.monotonic() < deadline:
            reports = ray.get([h.progress.remote() for h in self.hosts])
            errors = [rep["error"] for rep in reports if rep["error"]]
            if errors:
                raise RuntimeError(f"a host's async loop failed: {errors[0]}")
            totals = (sum(r["sent"] for r in reports), sum(r["handled"] for r in reports))
            if all(r["idle"] for r in reports) and totals[0] == totals[1]:
                if totals == previous:
                    quiet = True
                    break
                previous = totals
            else:
                previous = None
            time.sleep(SETTLE_POLL_S)
        ray.get([h.stop_async.remote() for h in self.hosts])
        return quiet

    # ------------------------------------------------------------ observe

    def evaluate(self) -> dict[int, float]:
        accs: dict[int, float] = {}
        for part in ray.get([h.evaluate.remote() for h in self.hosts]):
            accs.update(part)
        return accs

    def stats(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for part in ray.get([h.stats.remote() for h in self.hosts]):
            out.update(part)
        return out

    def node_locations(self) -> dict[int, str]:
        """Ray node id of each DFL node's host actor (for placement checks)."""
        locs = ray.get([h.ray_node_id.remote() for h in self.hosts])
        return {node: locs[h] for node, h in self.host_of.items()}

    def shutdown(self) -> None:
        try:
            ray.get([h.close.remote() for h in self.hosts])
        finally:
            for h in self.hosts:
                ray.kill(h)
            if self.placement_group is not None:
                remove_placement_group(self.placement_group)
