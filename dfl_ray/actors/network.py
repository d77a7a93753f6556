"""A DFL network on Ray: host actors placed on the cluster, sync rounds or async loops."""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import ray
from ray.exceptions import ActorDiedError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dfl_ray.actors.host import NodeHost
from dfl_ray.code import check_same_code
from dfl_ray.config import Config
from dfl_ray.data import NodeShard
from dfl_ray.ledger import Genesis
from dfl_ray.messages import Message
from dfl_ray.models.flat import ModelSpec
from dfl_ray.node import HostSetup
from dfl_ray.node.node import TraceRead

PLACEMENT_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 60.0
"""Longest wait, at the end of an async run, for the messages in flight to be handled."""
SETTLE_POLL_S = 0.05
FIRST_ROUNDS_TIMEOUT_S = 300.0
"""The deadline of the rounds before `TIMED_ROUNDS_MIN` rounds have been timed (auto rule)."""
TIMED_ROUNDS_MIN = 2
ROUND_TIMEOUT_FACTOR = 4.0
"""Auto deadline: this many times the median time of the rounds every host answered in."""
ROUND_TIMEOUT_FLOOR_S = 10.0
TIMED_ROUNDS_KEPT = 20
"""The auto deadline follows the median of the last this many whole rounds."""
MAJORITY_EXTENSIONS = 4
PHASE_GRACE = 0.25
"""A phase that starts after the round's deadline waits this share of the deadline."""
RECOVER_WAIT_S = 0.5
"""How long a round waits for a down host's answer to `ping` before going on without it."""
PING_RETRY_S = 0.2
FINAL_RECOVER_WAIT_S = 60.0
"""How long the end of a run waits for a host still being restarted, to count its nodes."""
PROGRESS_TIMEOUT_S = 10.0
SHUTDOWN_WAIT_S = 30.0
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
        log: Callable[[str], None] | None = None,
    ) -> None:
        n = len(shards)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.began = time.monotonic()
        self.round_index = 0
        self.down: dict[int, str] = {}
        """Hosts left out of the rounds, and why."""
        self.pending: dict[int, Any] = {}
        """The call each silent host has not answered yet."""
        self.probes: dict[int, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.fault_counts: Counter[str] = Counter()
        self.round_times: list[float] = []
        """Seconds of the rounds every host answered in (the auto deadline's measure)."""
        self.round_seconds: list[float] = []
        self.rest_times: list[float] = []
        """Seconds of those rounds after training (deliveries, aggregation, sealing)."""
        self.round_log: list[dict[str, Any]] = []
        """Each sync round: its seconds, its deadline and the nodes down at its end."""
        self.async_rounds: int | None = None
        self.last_progress: dict[int, dict[str, Any]] = {}
        self._last_eval: dict[int, dict[Any, Any]] = {}
        self._last_stats: dict[int, dict[Any, Any]] = {}
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
        self.array_refs = refs  # held for the run: a restarted host reads its data from them
        actor_cls = ray.remote(NodeHost)
        # Actor handles: ray types their methods as plain callables, without `.remote`.
        self.hosts: list[Any] = []
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
                # A host whose process dies is restarted and resumes its nodes from their
                # chains; its calls are not retried (the driver decides what to ask again).
                "max_restarts": config.runtime.max_restarts,
                "max_task_retries": 0,
            }
            if strategies[h] is not None:
                options["scheduling_strategy"] = strategies[h]
            self.hosts.append(actor_cls.options(**options).remote(setup))
        # Before any node is made: a host importing other code would run the rounds with it.
        codes = ray.get([h.code.remote() for h in self.hosts])
        check_same_code({f"host {h} (nodes {', '.join(map(str, self.groups[h]))})": c
                         for h, c in enumerate(codes)})
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

    # ------------------------------------------------------------ faults

    def _event(self, kind: str, h: int, why: str = "") -> None:
        """Record (and log) that host `h` went down, came back or was restarted."""
        event = {"round": self.round_index, "kind": kind, "host": h,
                 "nodes": list(self.groups[h]), "why": why,
                 "seconds": round(time.monotonic() - self.began, 3)}
        self.events.append(event)
        self.fault_counts[kind] += 1
        nodes = ",".join(str(n) for n in self.groups[h])
        self.log(f"round {self.round_index}: node(s) {nodes} {kind}" + (f" ({why})" if why else ""))

    def _mark_down(self, h: int, why: str, pending: Any = None) -> None:
        if h in self.down:
            return
        self.down[h] = why
        if pending is not None:
            self.pending[h] = pending
        self._event("down", h, why)

    def _gather(self, calls: Mapping[int, Any], deadline: float) -> dict[int, Any]:
        """The answers of the hosts that answered `calls` by `deadline` (monotonic seconds).

        A host that has not answered by then is marked down with its call pending; one whose
        process died (or is being restarted) is marked down too. When half the hosts or more
        are late the deadline is extended instead (up to `MAJORITY_EXTENSIONS` times one round deadline): a
        deadline cuts off a silent minority, not a cluster that is slow as a whole. "Half the
        hosts" counts every host up, not only those called: a delivery phase often calls one or
        two hosts, and a silent one among them is still a minority of the cluster. Any other
        error is a bug and propagates.
        """
        by_ref = {ref: h for h, ref in calls.items()}
        if not by_ref:
            return {}
        ready, late = ray.wait(list(by_ref), num_returns=len(by_ref),
                               timeout=max(deadline - time.monotonic(), 0.0))
        extensions = 0
        up = max(len(self._up()), len(by_ref))
        while 2 * len(late) >= up and extensions < MAJORITY_EXTENSIONS:
            # Half the hosts or more are late: the whole cluster is slow (a loaded machine), which is no
            # host's fault; wait on rather than leave most of the network out of the round.
            extensions += 1
            self.fault_counts["deadline_extended"] += 1
            more, late = ray.wait(late, num_returns=len(late), timeout=self.round_timeout())
            ready += more
        out: dict[int, Any] = {}
        for ref in ready:
            h = by_ref[ref]
            try:
                out[h] = ray.get(ref)
            except RayActorError as err:
                self._mark_down(h, f"process died: {type(err).__name__}")
        for ref in late:
            self._mark_down(by_ref[ref], "missed the deadline", pending=ref)
        return out

    def round_timeout(self) -> float:
        """The round's deadline in seconds: runtime.round_timeout_s, or the auto rule."""
        given = self.config.runtime.round_timeout_s
        if given > 0:
            return float(given)
        if len(self.round_times) < TIMED_ROUNDS_MIN:
            return FIRST_ROUNDS_TIMEOUT_S
        recent = self.round_times[-TIMED_ROUNDS_KEPT:]
        return max(ROUND_TIMEOUT_FLOOR_S, ROUND_TIMEOUT_FACTOR * statistics.median(recent))

    def recover(self, wait_s: float = RECOVER_WAIT_S) -> None:
        """Bring back the down hosts that answer again: a stalled one once its late call
        returns, a restarted one once it has rebuilt its nodes from their chains. A host
        being restarted gets `wait_s` to answer, then is asked again next time."""
        for h in sorted(self.down):
            pending = self.pending.get(h)
            if pending is not None:
                ready, _ = ray.wait([pending], timeout=0)
                if not ready:
                    continue  # still silent
                del self.pending[h]
                with contextlib.suppress(RayActorError):
                    ray.get(pending)  # a late answer: its messages are too late, dropped
            info = self._ping(h, time.monotonic() + wait_s)
            if info is None:
                continue
            if not info["connected"]:
                ref = self.hosts[h].connect.remote(self.directory, self.host_of,
                                                   dict(enumerate(self.hosts)))
                ready, _ = ray.wait([ref], timeout=self.round_timeout())
                if not ready:
                    self.pending[h] = ref
                    continue
                try:
                    ray.get(ref)
                except RayActorError:
                    continue
                self._event("restarted", h, f"pid {info['pid']}, resumed from its chains")
                if self.config.runtime.schedule == "async" and self.async_rounds is not None:
                    ray.get(self.hosts[h].start_async.remote(self.async_rounds))
            del self.down[h]
            self._event("back", h)

    def restarting(self) -> bool:
        """Whether a down host died (and may be coming back), rather than went silent."""
        return any(h not in self.pending for h in self.down)

    def _ping(self, h: int, deadline: float) -> dict[str, Any] | None:
        """Host `h`'s `ping` answer, asking again until `deadline` while Ray restarts it (a
        restarting actor refuses calls at once); None if it has not answered by then."""
        while True:
            probe = self.probes.pop(h, None) or self.hosts[h].ping.remote()
            ready, _ = ray.wait([probe], timeout=max(deadline - time.monotonic(), 0.0))
            if not ready:
                self.probes[h] = probe  # ask again next time
                return None
            try:
                info: dict[str, Any] = ray.get(probe)
                return info
            except ActorDiedError:
                return None  # no restarts left (or not yet restarting): asked again next time
            except RayActorError:  # being restarted
                if time.monotonic() >= deadline:
                    return None
                time.sleep(PING_RETRY_S)

    def fault_summary(self) -> dict[str, Any]:
        """What went wrong in the run: counts by kind, every event, who is down at the end."""
        return {
            "down": self.fault_counts["down"],
            "restarted": self.fault_counts["restarted"],
            "back": self.fault_counts["back"],
            "dropped_to_down_nodes": self.fault_counts["dropped_to_down"],
            "deadline_extended": self.fault_counts["deadline_extended"],
            "dropped_to_silent_hosts": sum(rep.get("dropped_to_silent", 0)
                                           for rep in self.last_progress.values()),
            "down_at_end": sorted(n for h in self.down for n in self.groups[h]),
            "round_timeout_s": self.round_timeout(),
            "events": list(self.events),
            "rounds": list(self.round_log),
        }

    # ------------------------------------------------------------ sync schedule

    def _route(self, messages: list[tuple[int, Message]], deadline: float) -> None:
        """Deliver messages host by host until no host has anything left to send; messages
        for down hosts are dropped (and counted), not queued."""
        while messages:
            by_host: dict[int, list[tuple[int, Message]]] = {}
            for dest, message in messages:
                h = self.host_of[dest]
                if h in self.down:
                    self.fault_counts["dropped_to_down"] += 1
                    continue
                by_host.setdefault(h, []).append((dest, message))
            replies = self._gather(
                {h: self.hosts[h].deliver.remote(batch) for h, batch in by_host.items()},
                self._phase_deadline(deadline))
            messages = [m for reply in replies.values() for m in reply]

    def _phase_deadline(self, deadline: float) -> float:
        """A phase that starts after the round's deadline still gets a short grace."""
        return max(deadline, time.monotonic() + PHASE_GRACE * self.round_timeout())

    def _up(self) -> list[int]:
        return [h for h in range(len(self.hosts)) if h not in self.down]

    def run_round(self, round_index: int) -> float:
        """One synchronous round: all train and publish, all deliveries, all aggregate and seal.

        Hosts that do not answer by the round's deadline are left out of it (down); down hosts
        are asked first whether they are back. Returns the round's seconds.
        """
        self.round_index = round_index
        self.recover()
        start = time.monotonic()
        timeout = self.round_timeout()
        deadline = start + timeout
        was_down = bool(self.down)
        # Training gets the deadline less what the rest of a round usually takes, so a round
        # with a silent host still ends by the deadline.
        rest = 1.5 * statistics.median(self.rest_times) if self.rest_times else 0.0
        out = self._gather({h: self.hosts[h].begin_round.remote(round_index) for h in self._up()},
                           max(deadline - rest, start + 0.5 * timeout))
        began = time.monotonic() - start
        self._route([m for batch in out.values() for m in batch], deadline)
        out = self._gather({h: self.hosts[h].end_round.remote(round_index) for h in self._up()},
                           self._phase_deadline(deadline))
        self._route([m for batch in out.values() for m in batch], deadline)
        self._gather({h: self.hosts[h].finish_round.remote() for h in self._up()},
                     self._phase_deadline(deadline))
        seconds = time.monotonic() - start
        if not was_down and not self.down:
            self.round_times.append(seconds)  # the auto deadline learns from whole rounds only
            self.rest_times.append(seconds - began)
        self.round_seconds.append(seconds)
        self.round_log.append({"round": round_index, "seconds": round(seconds, 3),
                               "deadline_s": round(timeout, 3),
                               "down": sorted(n for h in self.down for n in self.groups[h])})
        return seconds

    # ------------------------------------------------------------ async schedule

    def start_async(self, rounds: int) -> None:
        self.async_rounds = rounds
        self._gather({h: self.hosts[h].start_async.remote(rounds) for h in self._up()},
                     time.monotonic() + FIRST_ROUNDS_TIMEOUT_S)

    def async_progress(self) -> tuple[dict[int, dict[str, Any]], list[str]]:
        """(each node's progress: rounds published, finished, ...; errors raised in host loops).

        Down hosts are asked whether they are back first; the progress of a host that does
        not answer is its last known one."""
        self.recover()
        reports = self._gather({h: self.hosts[h].progress.remote() for h in self._up()},
                               time.monotonic() + PROGRESS_TIMEOUT_S)
        for h, rep in reports.items():
            self.last_progress[h] = rep
        nodes = {n: {**p, "down": h in self.down}
                 for h, rep in self.last_progress.items() for n, p in rep["nodes"].items()}
        return nodes, [rep["error"] for rep in reports.values() if rep["error"]]

    def stop_async(self, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
        """End the local rounds, let every message in flight be handled, then stop the loops.

        All is quiet when every loop waits with nothing to do and every batch sent has been
        handled, seen twice in a row with the same totals (a batch in flight shows as sent but
        not handled; one handled between the two looks changes the totals). Returns whether that
        happened within `timeout_s`; the loops stop either way and pending blocks are stored
        with the endorsements they have. Down hosts are left as they are.
        """
        self._gather({h: self.hosts[h].wind_down.remote() for h in self._up()},
                     time.monotonic() + PROGRESS_TIMEOUT_S)
        deadline = time.monotonic() + timeout_s
        previous: tuple[int, int] | None = None
        quiet = False
        while time.monotonic() < deadline:
            reports = self._gather({h: self.hosts[h].progress.remote() for h in self._up()},
                                   time.monotonic() + PROGRESS_TIMEOUT_S)
            errors = [rep["error"] for rep in reports.values() if rep["error"]]
            if errors:
                raise RuntimeError(f"a host's async loop failed: {errors[0]}")
            totals = (sum(r["sent"] for r in reports.values()),
                      sum(r["handled"] for r in reports.values()))
            if all(r["idle"] for r in reports.values()) and totals[0] == totals[1]:
                if totals == previous:
                    quiet = True
                    break
                previous = totals
            else:
                previous = None
            time.sleep(SETTLE_POLL_S)
        self._gather({h: self.hosts[h].stop_async.remote() for h in self._up()},
                     time.monotonic() + FIRST_ROUNDS_TIMEOUT_S)
        return quiet

    # ------------------------------------------------------------ observe

    def _collect(self, method: str, cache: dict[int, dict[Any, Any]]) -> dict[Any, Any]:
        """`method` of every host that is up (within the round deadline), merged; a down
        host's part is the last one it gave."""
        answers = self._gather({h: getattr(self.hosts[h], method).remote() for h in self._up()},
                               time.monotonic() + self.round_timeout())
        cache.update(answers)
        out: dict[Any, Any] = {}
        for part in cache.values():
            out.update(part)
        return out

    def evaluate(self) -> dict[int, float]:
        return self._collect("evaluate", self._last_eval)

    def stats(self) -> dict[int, dict[str, Any]]:
        return self._collect("stats", self._last_stats)

    def trace(self, cursors: Mapping[int, tuple[str, int]]) -> dict[int, TraceRead]:
        """The aggregation trace of every node on a host that answers, from its (epoch, cursor)
        on (`Node.trace_rows`); a down host's nodes are left out and read later from where they
        were."""
        answers = self._gather({h: self.hosts[h].trace.remote(dict(cursors)) for h in self._up()},
                               time.monotonic() + self.round_timeout())
        out: dict[int, TraceRead] = {}
        for part in answers.values():
            out.update(part)
        return out

    def node_locations(self) -> dict[int, str]:
        """Ray node id of each DFL node's host actor (for placement checks)."""
        answers = self._gather({h: self.hosts[h].ray_node_id.remote() for h in self._up()},
                               time.monotonic() + self.round_timeout())
        return {node: answers[h] for node, h in self.host_of.items() if h in answers}

    def host_pids(self) -> dict[int, int]:
        """Process id of each host actor that answers, by host index (for fault tests)."""
        answers = self._gather({h: self.hosts[h].ping.remote() for h in self._up()},
                               time.monotonic() + self.round_timeout())
        return {h: info["pid"] for h, info in answers.items()}

    def shutdown(self) -> None:
        """Close every host that answers (its stores), then kill them all; never raises for a
        host that died."""
        try:
            closing = {h: self.hosts[h].close.remote() for h in range(len(self.hosts))
                       if h not in self.pending}
            ray.wait(list(closing.values()), num_returns=len(closing), timeout=SHUTDOWN_WAIT_S)
        finally:
            for h in self.hosts:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(h)
            if self.placement_group is not None:
                remove_placement_group(self.placement_group)
