"""A host runs one or many DFL nodes in one process; `ray.remote(NodeHost)` makes it an actor."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import blake3
import torch

from dfl_ray.actors.transport import HostTransport, resolve
from dfl_ray.attacks import make_attack
from dfl_ray.config import Config
from dfl_ray.data import NodeShard
from dfl_ray.ledger import ChainStore, Genesis, Identity
from dfl_ray.messages import Message
from dfl_ray.models.flat import ModelSpec, as_tensor_readonly
from dfl_ray.models.registry import build_model
from dfl_ray.models.training import SGDSettings, steps_per_epoch
from dfl_ray.node import CheckMemo, DFLNode, NodeData, NodeParams


@dataclass(frozen=True)
class HostSetup:
    """What the driver hands a host: its nodes, their shards and peers, and shared references."""

    host_index: int
    node_ids: tuple[int, ...]
    config: Config
    shards: Mapping[int, NodeShard]
    neighbors: Mapping[int, tuple[int, ...]]
    genesis: bytes
    spec: ModelSpec
    arrays: Mapping[str, Any]
    """train_images, train_labels, test_images, test_labels, initial: ObjectRefs or arrays."""
    run_dir: str | None
    """Folder for the nodes' chain stores (chains/node_<id>); None keeps no store."""
    gpus: float | None = None
    """GPU share the host's actor holds (its Ray num_gpus); None: runtime.gpus_per_node."""


def node_identity(seed: int, node_id: int) -> Identity:
    """Deterministic keys for simulations: the same seed gives the same addresses.

    The keys depend on the seed and the node id only, not on the run's name (its network id):
    a node aggregates its buffer in the order of the senders' keys, so keys that changed with
    the name would change the float summation order, and with it the run's results. Runs stay
    apart all the same: every signed object names its genesis, which holds the network id.
    """
    return Identity.from_seed(blake3.blake3(f"dfl/key/{seed}/{node_id}".encode()).digest())


def resolve_device(requested: str, gpus: float) -> str:
    """The torch device of a host holding a `gpus` share of GPUs: cpu, cuda, or auto's choice.

    Ray leaves every GPU visible to an actor that reserved none, so "auto" picks cuda only when
    the actor both holds a share and torch sees a device.
    """
    if requested not in ("cpu", "cuda", "auto"):
        raise ValueError(f"runtime.device must be cpu, cuda or auto, got {requested!r}")
    if not gpus >= 0:  # also rejects NaN
        raise ValueError(f"GPU share must be >= 0, got {gpus}")
    if requested == "cpu":
        return "cpu"
    has_gpu = torch.cuda.is_available() and gpus > 0
    if requested == "cuda" and not has_gpu:
        raise RuntimeError(
            "runtime.device=cuda but this actor holds no GPU (set --gpus-per-node > 0 on a machine "
            "with GPUs, or use --device auto to fall back to the CPU)"
        )
    return "cuda" if has_gpu else "cpu"


class NodeHost:
    """Many `DFLNode`s in one process sharing one copy of the data set and one scorer model.

    Deliveries between its own nodes are direct calls; messages for other hosts are returned (sync
    schedule) or pushed to their actors (async schedule).
    """

    def __init__(self, setup: HostSetup) -> None:
        cfg = setup.config
        torch.set_num_threads(cfg.runtime.torch_threads)
        self.setup = setup
        self.config = cfg
        gpus = cfg.runtime.gpus_per_node if setup.gpus is None else setup.gpus
        self.device = resolve_device(cfg.runtime.device, gpus)
        arrays = {k: resolve(v) for k, v in setup.arrays.items()}
        self.train_images = as_tensor_readonly(arrays["train_images"])
        self.train_labels = as_tensor_readonly(arrays["train_labels"])
        self.test_images = as_tensor_readonly(arrays["test_images"])
        self.test_labels = as_tensor_readonly(arrays["test_labels"])
        self.initial = arrays["initial"]
        self.genesis = Genesis.decode(setup.genesis)
        self.identities = {
            n: node_identity(cfg.experiment.seed, n) for n in setup.node_ids
        }
        self.transport = HostTransport(set(setup.node_ids))
        # The nodes of this process verify each signature and payload once between them.
        self.memo = CheckMemo()
        self.nodes: dict[int, DFLNode] = {}
        self.peer_hosts: dict[int, Any] = {}
        self.host_of: dict[int, int] = {}
        self.lock = threading.Lock()
        self.incoming: deque[tuple[int, Message]] = deque()
        self.rounds_done: dict[int, int] = {}
        self.async_thread: threading.Thread | None = None
        self.stop_flag = threading.Event()
        self.async_error: str | None = None

    # ------------------------------------------------------------ setup

    def public_keys(self) -> dict[int, bytes]:
        return {n: ident.public_key for n, ident in self.identities.items()}

    def connect(
        self,
        directory: Mapping[bytes, int],
        host_of: Mapping[int, int] | None = None,
        peer_hosts: Mapping[int, Any] | None = None,
    ) -> int:
        """Create the nodes once every node's public key is known; returns how many were made."""
        cfg, setup = self.config, self.setup
        image_shape = tuple(self.train_images.shape[1:])
        channels = 1 if len(image_shape) == 2 else image_shape[0]
        num_classes = int(self.train_labels.max()) + 1

        def new_model() -> torch.nn.Module:
            return build_model(
                cfg.model.name, in_channels=channels, num_classes=num_classes,
                image_size=image_shape[-1],
            )

        scorer = new_model().to(self.device)
        shared_directory = MappingProxyType(dict(directory))
        attackers = set(cfg.attackers)
        for n in setup.node_ids:
            shard = setup.shards[n]
            steps = cfg.training.local_steps or max(
                1, round(cfg.training.local_epochs * steps_per_epoch(len(shard.train), cfg.training.batch_size))
            )
            params = NodeParams(
                node_id=n,
                peers=tuple(setup.neighbors[n]),
                local_steps=steps,
                batch_size=cfg.training.batch_size,
                sgd=SGDSettings(cfg.training.lr, cfg.training.momentum, cfg.training.weight_decay),
                rule=cfg.defense.rule,
                rule_params=dict(cfg.defense.params),
                buffer_size=cfg.defense.buffer_size,
                momentum=cfg.defense.effective_momentum,
                max_clock_skew_s=cfg.ledger.max_clock_skew_s,
                seed=cfg.experiment.seed,
                device=self.device,
                colluders=frozenset(attackers - {n}) if n in attackers else frozenset(),
            )
            val = torch.from_numpy(shard.val)
            data = NodeData(
                images=self.train_images,
                labels=self.train_labels,
                train_idx=shard.train,
                val_images=self.train_images[val],
                val_labels=self.train_labels[val],
                num_classes=num_classes,
            )
            store = None
            if setup.run_dir is not None:
                keep = None if cfg.ledger.keep_payloads < 0 else cfg.ledger.keep_payloads
                store = ChainStore.create(
                    Path(setup.run_dir) / "chains" / f"node_{n}",
                    self.genesis,
                    self.identities[n].public_key,
                    keep_payloads=keep,
                )
            attack = None
            if n in attackers:
                attack = make_attack(cfg.attack.kind, **dict(cfg.attack.params))
            self.nodes[n] = DFLNode(
                params,
                identity=self.identities[n],
                genesis=self.genesis,
                spec=setup.spec,
                initial=self.initial,
                model=new_model(),
                data=data,
                transport=self.transport,
                directory=shared_directory,
                store=store,
                attack=attack,
                scorer=scorer,
                memo=self.memo,
            )
            self.rounds_done[n] = 0
        self.host_of = dict(host_of or {})
        self.peer_hosts = dict(peer_hosts or {})
        self.transport.object_store = any(h != setup.host_index for h in self.host_of.values())
        return len(self.nodes)

    # ------------------------------------------------------------ sync schedule

    def _drain(self) -> list[tuple[int, Message]]:
        """Process local messages until none is left; return those bound for other hosts."""
        while True:
            while self.incoming:
                self.transport.inbox.append(self.incoming.popleft())
            inbox = self.transport.take_inbox()
            if not inbox:
                break
            # Each node handles its share of the wave in one go, so its ledger writes commit
            # once per wave instead of once per message; each node still sees its own messages
            # in arrival order.
            by_dest: dict[int, list[Message]] = {}
            for dest, message in inbox:
                by_dest.setdefault(dest, []).append(message)
            for dest, messages in by_dest.items():
                self.nodes[dest].on_messages(messages)
        self.transport.forget_fetched()
        self.memo.forget()
        return self.transport.take_outbox()

    def begin_round(self, round_index: int) -> list[tuple[int, Message]]:
        """Every node trains and publishes; local deliveries happen here."""
        for node in self.nodes.values():
            node.train()
            node.publish()
        self.transport.flush()
        return self._drain()

    def deliver(self, messages: list[tuple[int, Message]]) -> list[tuple[int, Message]]:
        for dest, message in messages:
            if dest not in self.nodes:
                raise ValueError(f"host {self.setup.host_index} holds no node {dest}")
            self.transport.inbox.append((dest, message))
        return self._drain()

    def end_round(self, round_index: int) -> list[tuple[int, Message]]:
        """Aggregate full buffers and propose blocks (endorsement requests go out)."""
        for n, node in self.nodes.items():
            node.aggregate()
            node.seal_block()
            self.rounds_done[n] = round_index + 1
        return self._drain()

    def finish_round(self) -> None:
        for node in self.nodes.values():
            node.finish_sealing()

    # ------------------------------------------------------------ async schedule

    def push(self, messages: list[tuple[int, Message]]) -> None:
        """Messages from another host, processed by this host's loop (deque appends are atomic)."""
        self.incoming.extend(messages)

    def _flush_remote(self) -> None:
        by_host: dict[int, list[tuple[int, Message]]] = {}
        for dest, message in self.transport.take_outbox():
            by_host.setdefault(self.host_of[dest], []).append((dest, message))
        for host, batch in by_host.items():
            self.peer_hosts[host].push.remote(batch)

    def start_async(self, rounds: int) -> None:
        """Start this host's loop: each node trains, publishes, receives and aggregates on its own."""
        if self.async_thread is not None:
            raise RuntimeError("the async loop is already running")
        self.async_thread = threading.Thread(target=self._async_loop, args=(rounds,), daemon=True)
        self.async_thread.start()

    def _async_loop(self, rounds: int) -> None:
        try:
            while not self.stop_flag.is_set():
                active = [n for n in self.nodes if self.rounds_done[n] < rounds]
                if not active:
                    break
                for n in active:
                    with self.lock:
                        node = self.nodes[n]
                        node.train()
                        node.publish()
                        self.transport.flush()
                        self._drain()
                        node.aggregate()
                        node.seal_block()
                        self._drain()
                        self.rounds_done[n] += 1
                    self._flush_remote()
            # Keep answering peers (receipts, endorsements) until told to stop.
            while not self.stop_flag.wait(0.05):
                with self.lock:
                    self._drain()
                self._flush_remote()
        except Exception as exc:  # surfaced to the driver through progress()
            self.async_error = f"{type(exc).__name__}: {exc}"

    def progress(self) -> dict[str, Any]:
        return {"rounds_done": dict(self.rounds_done), "error": self.async_error}

    def stop_async(self) -> None:
        self.stop_flag.set()
        if self.async_thread is not None:
            self.async_thread.join()
        with self.lock:
            for node in self.nodes.values():
                node.finish_sealing()

    # ------------------------------------------------------------ observe

    def evaluate(self) -> dict[int, float]:
        """Each node's accuracy on the global test set."""
        with self.lock:
            return {
                n: node.evaluate(self.test_images, self.test_labels) for n, node in self.nodes.items()
            }

    def stats(self) -> dict[int, dict[str, Any]]:
        with self.lock:
            return {n: node.get_stats() for n, node in self.nodes.items()}

    def addresses(self) -> dict[int, str]:
        return {n: ident.address for n, ident in self.identities.items()}

    def close(self) -> None:
        for node in self.nodes.values():
            if node.store is not None:
                node.store.close()

    def ray_node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

