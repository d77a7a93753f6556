"""Injected network faults (`faults.*`): lost, duplicated and cut-off messages, the same for a seed.

Each message a node sends is decided on its own, from a hash of the seed, the sender's round,
the two nodes and the message's place in what the sender sent that peer that round, so a sync
run loses the same messages every time. Delays and killed processes are the host's business
(`dfl_ray.actors.host`).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import blake3

from dfl_ray.config import FaultsConfig
from dfl_ray.messages import Message, Transport

if TYPE_CHECKING:
    from dfl_ray.node.node import DFLNode

_SCALE = float(1 << 64)


class FaultPlan:
    """Which deliveries a run's faults drop, duplicate or cut, and which processes they kill."""

    def __init__(self, faults: FaultsConfig, seed: int) -> None:
        self.drop = faults.drop
        self.duplicate = faults.duplicate
        self.delay_s = faults.delay_ms / 1000.0
        self.partitions = faults.partitions()
        self.kills = frozenset(faults.kills())
        self.seed = seed

    @property
    def touches_messages(self) -> bool:
        return bool(self.drop or self.duplicate or self.partitions)

    def cut(self, a: int, b: int, round_index: int) -> bool:
        """Whether a partition separates nodes `a` and `b` in `round_index`."""
        return any(start <= round_index < end and ((a in nodes) != (b in nodes))
                   for nodes, start, end in self.partitions)

    def _uniform(self, what: str, *key: int) -> float:
        data = f"dfl/fault/{what}/{self.seed}/" + "/".join(str(k) for k in key)
        return int.from_bytes(blake3.blake3(data.encode()).digest()[:8], "little") / _SCALE

    def copies(self, sender: int, dest: int, round_index: int, number: int) -> int:
        """How many times the `number`-th message from `sender` to `dest` in the round arrives."""
        if self.cut(sender, dest, round_index):
            return 0
        key = (round_index, sender, dest, number)
        if self.drop and self._uniform("drop", *key) < self.drop:
            return 0
        if self.duplicate and self._uniform("duplicate", *key) < self.duplicate:
            return 2
        return 1

    def kills_at(self, node: int, round_index: int) -> bool:
        return (node, round_index) in self.kills


class FaultyTransport:
    """One node's sending side with the plan applied; everything else is the shared transport.

    A message belongs to the round the node last published. What the plan did is counted in
    the node's counters (so it reaches the run's summary): `fault_dropped`, `fault_cut` and
    `fault_duplicated`.
    """

    def __init__(self, inner: Transport, plan: FaultPlan, node: DFLNode) -> None:
        self.inner = inner
        self.plan = plan
        self.node = node
        self._sent: Counter[tuple[int, int]] = Counter()

    def send(self, dest: int, message: Message) -> None:
        sender, round_index = self.node.id, max(self.node.turn - 1, 0)  # its latest round
        number = self._sent[(round_index, dest)]
        self._sent[(round_index, dest)] = number + 1
        if number == 0:  # a new round: forget the old rounds' counts
            for key in [k for k in self._sent if k[0] < round_index]:
                del self._sent[key]
        copies = self.plan.copies(sender, dest, round_index, number)
        counters = self.node.counters
        if copies == 0:
            cut = self.plan.cut(sender, dest, round_index)
            counters["fault_cut" if cut else "fault_dropped"] += 1
            return
        if copies > 1:
            counters["fault_duplicated"] += 1
        for _ in range(copies):
            self.inner.send(dest, message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
