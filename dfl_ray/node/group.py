"""Many nodes in one process: shared data, direct local deliveries, the sync schedule's waves."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from dfl_ray.attacks import Backdoor, make_attack
from dfl_ray.ledger import Genesis
from dfl_ray.messages import LocalTransport, Message
from dfl_ray.models.flat import as_tensor_readonly
from dfl_ray.node.build import HostSetup, SharedData, build_nodes, node_identity, resolve_device
from dfl_ray.node.memo import CheckMemo
from dfl_ray.node.node import DFLNode, TraceRead


class NodeEvaluation(float):
    """A node's test accuracy (the float itself) with the backdoor's success rate on it.

    `backdoor` is the share of triggered test images of the non-target classes the node's model
    classifies as the backdoor's target, None when the run has no backdoor attacker. Being a
    float, it passes unchanged through every caller that only wants the accuracy (the host
    actors, `Network.evaluate`).
    """

    backdoor: float | None

    def __new__(cls, accuracy: float, backdoor: float | None = None) -> NodeEvaluation:
        out = super().__new__(cls, accuracy)
        out.backdoor = backdoor
        return out

    def __reduce__(self) -> tuple[type, tuple[float, float | None]]:
        return (NodeEvaluation, (float(self), self.backdoor))


class NodeGroup:
    """The `DFLNode`s of one process, sharing one copy of the data set and one scorer model.

    Deliveries between its own nodes are direct calls; messages for nodes elsewhere collect in
    the transport's outbox and are returned to the caller. The Ray host actor
    (`dfl_ray.actors.host.NodeHost`) is this class with an object-store transport.
    """

    def __init__(self, setup: HostSetup, arrays: Mapping[str, Any] | None = None,
                 transport: LocalTransport | None = None) -> None:
        cfg = setup.config
        torch.set_num_threads(cfg.runtime.torch_threads)
        self.setup = setup
        self.config = cfg
        gpus = cfg.runtime.gpus_per_node if setup.gpus is None else setup.gpus
        self.device = resolve_device(cfg.runtime.device, gpus)
        arrays = setup.arrays if arrays is None else arrays
        self.data = SharedData(
            train_images=as_tensor_readonly(arrays["train_images"]),
            train_labels=as_tensor_readonly(arrays["train_labels"]),
            test_images=as_tensor_readonly(arrays["test_images"]),
            test_labels=as_tensor_readonly(arrays["test_labels"]),
            initial=np.asarray(arrays["initial"]),
        )
        self.genesis = Genesis.decode(setup.genesis)
        self.identities = {n: node_identity(cfg.experiment.seed, n) for n in setup.node_ids}
        self.transport = transport if transport is not None else LocalTransport(set(setup.node_ids))
        # The nodes of this process verify each signature and payload once between them.
        self.memo = CheckMemo()
        self.nodes: dict[int, DFLNode] = {}
        self.lock = threading.Lock()
        self.incoming: deque[tuple[int, Message]] = deque()
        self.rounds_done: dict[int, int] = {}
        self._triggered: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------ setup

    def public_keys(self) -> dict[int, bytes]:
        return {n: ident.public_key for n, ident in self.identities.items()}

    def connect(self, directory: Mapping[bytes, int]) -> int:
        """Create the nodes once every node's public key is known; returns how many were made."""
        self.nodes = build_nodes(
            self.setup, self.data, genesis=self.genesis, identities=self.identities,
            directory=directory, transport=self.transport, memo=self.memo, device=self.device,
        )
        self.rounds_done = {n: node.turn for n, node in self.nodes.items()}
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
        """Store pending blocks with the endorsements they have; checkpoint every node in the
        same commit, so a restart resumes from the end of this round."""
        for node in self.nodes.values():
            with node.ledger_batch():
                node.finish_sealing()
                node.checkpoint()

    # ------------------------------------------------------------ observe

    def evaluate(self) -> dict[int, float]:
        """Each node's accuracy on the global test set, as a `NodeEvaluation` that also carries
        the backdoor's success rate on that node when the run's attack is a backdoor."""
        triggered = self._triggered_test_set()
        with self.lock:
            out: dict[int, float] = {}
            for n, node in self.nodes.items():
                accuracy = node.evaluate(self.data.test_images, self.data.test_labels)
                backdoor = None if triggered is None else node.evaluate(*triggered)
                out[n] = NodeEvaluation(accuracy, backdoor)
            return out

    def _triggered_test_set(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The backdoor's triggered test images (target classes left out) and target labels,
        made once; None when the run's attack is not a backdoor."""
        if self._triggered is None and self.config.attackers:
            attack = make_attack(self.config.attack.kind, **dict(self.config.attack.params))
            if isinstance(attack, Backdoor):
                images, labels = attack.triggered_test_set(self.data.test_images.numpy(),
                                                           self.data.test_labels.numpy())
                self._triggered = (torch.from_numpy(images), torch.from_numpy(labels))
        return self._triggered

    def stats(self) -> dict[int, dict[str, Any]]:
        with self.lock:
            return {n: node.get_stats() for n, node in self.nodes.items()}

    def trace(self, cursors: Mapping[int, tuple[str, int]]) -> dict[int, TraceRead]:
        """Each node's aggregation trace from its (epoch, cursor) on (`Node.trace_rows`)."""
        with self.lock:
            return {n: node.trace_rows(*cursors.get(n, ("", 0))) for n, node in self.nodes.items()}

    def addresses(self) -> dict[int, str]:
        return {n: ident.address for n, ident in self.identities.items()}

    def close(self) -> None:
        for node in self.nodes.values():
            if node.store is not None:
                node.store.close()
