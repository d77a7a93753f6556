"""Per-category busy-time accounting for a node (train, scan, score, aggregate, ledger, ...)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

CATEGORIES = ("train", "scan", "score", "aggregate", "ledger", "transport", "checkpoint")
"""`scan` is the trigger scan (dfl_ray.node.triggers), when it is on.
`checkpoint` is writing the node's restart state (dfl_ray.node.resume): fault tolerance,
kept apart from `ledger`, the blockchain's own work, so that the ledger's share is the
protocol's cost alone."""


class Stopwatch:
    """Accumulates wall seconds per category; `time(cat)` is a context manager.

    Nested timings are not subtracted from their parent, so callers time disjoint sections only.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def time(self, category: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[category] += time.perf_counter() - start

    def snapshot(self) -> dict[str, float]:
        return {c: self.seconds.get(c, 0.0) for c in CATEGORIES} | {
            c: v for c, v in self.seconds.items() if c not in CATEGORIES
        }

    def busy(self) -> float:
        """Seconds spent on protocol work (all categories above; evaluation is not protocol work)."""
        return sum(self.seconds.get(c, 0.0) for c in CATEGORIES)
