"""Aggregation rules as a node calls them, previous torch kernels against numpy: `python benchmarks/aggregation_bench.py --repeat 5`.

dfl_ray.defense used to sum rows with torch (`weighted_sum`: `add_` with `alpha`, one fused
multiply-add pass per row and block), to stack candidates into a per-thread scratch array that
lived from one call to the next (`stack_rows`, `stack_candidates`), and to sort and compare
candidates through [n, d] temporaries (`coordinate_trimmed_mean` sorted the whole stack at
once, `pairwise_sq_distances` made [n - 1 - i, d] differences). The kernels now use numpy
alone and keep nothing between calls; `coordinate_trimmed_mean` sorts the rows where they lie,
a block of coordinates at a time, and `pairwise_sq_distances` takes each pair through one [d]
buffer, so that fresh stacks do not meet fresh [n, d] temporaries in the allocator. This script
times both versions side by side:

- "old": the previous implementation, its code copied below unchanged (docstrings shortened)
  and kept here for comparison only (torch on one thread). A rule runs with it by rebinding the
  kernel names in every defense module that holds them (`dfl_ray.defense.aggregate`, where
  `weighted_mean` calls `weighted_sum`, and each rule module that imported them) for the
  duration of its calls; the names are restored afterwards. `median` and `trimmed_mean` now
  hand own + received rows to `coordinate_trimmed_mean` unstacked; the old side stacks them
  into the scratch first, as those rules did.
- "new": dfl_ray.defense as it stands.

Everything runs on one thread: torch with `torch.set_num_threads(1)`, and numpy's OpenBLAS
(the rules' matrix products and `distances_to`'s dot products, the same code on both sides)
with OPENBLAS_NUM_THREADS=1 (`--blas-threads`), for which the script runs itself once more;
with BLAS threads competing against other load on a small machine, one dot product can stall
for tens of milliseconds and drown what is measured.

Inputs are LeNet-sized: d = 431,080 float32 values per model. Each aggregation is one node's:
its own model (a fresh writable copy, as `model_to_vector` gives) and k received models as a
tuple of read-only rows (as a node hands its buffer, `checked_rows=True`), with the output layer
(500 x 10 weights and 10 biases) as `head`, so dfl_guard runs its default reversal test. Models
are a common centre plus small noise, so they lie close together as honest models do. Each rule
runs with its default parameters through `get_rule`; building the `AggregationInput` is not
timed. The kernels alone are timed too: `weighted_sum` over own + k rows (equal weights),
`stack_candidates`, and `pairwise_sq_distances` of own + k rows (with their `np.stack`).

Two scenarios, each with k = 4 (the default buffer size) and k = 8:

- "10 nodes": 10 nodes, each with its own distinct arrays (155 MB at k = 8), aggregate in turn;
  most of it stays in the last-level cache from one pass over the nodes to the next.
- "1,000 nodes": 1,000 nodes aggregate in turn in this one thread. Distinct arrays for every
  node would take 15 GB at k = 8, so the nodes draw their models from a pool of distinct
  random arrays (`--pool-mib`, 1 GiB by default, larger than the last-level cache): node i
  reads pool rows i (k + 1) .. i (k + 1) + k, wrapping around, so between two reads of a pool
  row every other row of the pool has been read, and each aggregation starts with cold caches.

After one untimed call of each (first-touch page faults), every repetition times each
(scenario, k, rule) for `--calls` aggregations per side, old and new taking turns call by call
(which goes first alternates) so that other load on the machine hits both alike; every call
aggregates the next node in turn (in the 1,000-node scenario never one that was read within
the last pass over the pool). Each call is timed in CPU time of the one thread that runs
everything (`--clock cpu`, the default): on a small machine shared with other work, wall time
mostly measures how long the thread waited for a core (`--clock wall` gives it). The table gives
the median milliseconds per aggregation over all repetitions and the ratio new / old, and whether
the two give bitwise the same model on one input (numpy multiplies and adds with two roundings
where torch fuses them, so the last bit may differ).
`--write-results` also puts the table into docs/results.md (section "aggregation_bench", through
`dfl_ray.results.record_output`, with the command, date and machine).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch

import dfl_ray.defense as defense
from dfl_ray.defense import AggregationInput, get_rule
from dfl_ray.defense import aggregate as numpy_kernels
from dfl_ray.defense.aggregate import Rows, _check_rows
from dfl_ray.models.flat import as_tensor_readonly
from dfl_ray.results import add_results_argument, record_output

D = 431_080  # LeNet on MNIST, the model of the DFL spec
HEAD = 5_010  # its output layer: 500 x 10 weights, then 10 biases
CLASSES = 10
DEFAULT_RULES = ("dfl_guard", "fedavg", "half_fedavg", "median", "trimmed_mean", "multi_krum",
                 "centered_clipping", "dfl_reputation")
KERNELS = ("weighted_sum", "stack_candidates", "pairwise_sq_distances")


# ---------------------------------------------------------------------------------------------
# Previous implementation, kept for comparison only: dfl_ray/defense/aggregate.py's torch
# `weighted_sum` and per-thread stacking scratch, as they were before defense moved to numpy.

_BLOCK = 1 << 17

_scratch = threading.local()


def stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """float32 [n, d]: the rows stacked into this thread's reusable scratch array.

    The result is valid until the thread's next call. Rows that may lie in the scratch
    themselves (a caller stacking an earlier result) are stacked into a fresh array,
    since stacking them in place would overwrite them while they are read.
    """
    if len(rows) == 0:
        raise ValueError("stack_rows needs at least one row")
    n, d = len(rows), rows[0].shape[0]
    buf: np.ndarray | None = getattr(_scratch, "buf", None)
    if buf is None or buf.shape[1] != d or buf.shape[0] < n:
        buf = _scratch.buf = np.empty((n, d), dtype=np.float32)
    elif any(np.may_share_memory(row, buf) for row in rows):
        return np.stack(rows).astype(np.float32, copy=False)
    return np.stack(rows, out=buf[:n])


def stack_candidates(own: np.ndarray, rows: Rows) -> np.ndarray:
    """float32 [k + 1, d]: the own model (row 0) and the received rows, in one copy.

    The array is this thread's scratch (see `stack_rows`): valid until the thread stacks again.
    """
    return stack_rows((own, *rows))


def weighted_sum(rows: Rows, weights: np.ndarray) -> np.ndarray:
    """float32 [d]: sum(w_i x_i) as a fresh array, reading each row where it lies.

    The sum is taken block by block: a 512 KiB block of the float32 result stays in cache
    while every row adds its part with one fused multiply-add pass (torch's `add_` with
    `alpha`; numpy would need a multiply and an add).
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(rows)
    if n == 0:
        raise ValueError("weighted_sum needs at least one row")
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite, got {w.tolist()}")
    d = _check_rows(rows)
    # torch cannot view arrays with negative strides; rows from a strided view are copied.
    tensors = [as_tensor_readonly(row if row.flags.c_contiguous else np.ascontiguousarray(row))
               for row in rows]
    alphas = w.tolist()
    out = np.empty(d, dtype=np.float32)
    acc = torch.from_numpy(out)
    for start in range(0, d, _BLOCK):
        stop = start + _BLOCK
        block = acc[start:stop]
        torch.mul(tensors[0][start:stop], alphas[0], out=block)
        for tensor, alpha in zip(tensors[1:], alphas[1:], strict=True):
            block.add_(tensor[start:stop], alpha=alpha)
    return out


def pairwise_sq_distances(rows: np.ndarray) -> np.ndarray:
    """float64 [n, n]: squared Euclidean distances between all pairs of rows.

    Differences are taken directly rather than through |a|^2 + |b|^2 - 2ab, which cancels
    catastrophically for models that are close together, exactly the ones that matter.
    """
    n = rows.shape[0]
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n - 1):
        diff = rows[i + 1 :] - rows[i]
        np.square(diff, out=diff)
        out[i, i + 1 :] = diff.sum(axis=1, dtype=np.float64)
    return out + out.T


def coordinate_trimmed_mean(rows: np.ndarray, trim: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinate-wise mean of the values left after dropping the `trim` lowest and highest.

    Returns the float32 [d] mean and each row's share of it, float64 [n]: the fraction of the
    result it contributes, averaged over coordinates (the shares sum to 1). Equal values are
    credited to one of their rows arbitrarily; that changes the shares, never the mean.
    `trim = (n - 1) // 2` gives the median.
    """
    n = rows.shape[0]
    if trim < 0 or 2 * trim >= n:
        raise ValueError(f"trim must be in [0, {(n - 1) // 2}] for {n} rows, got {trim}")
    # Unstable argsort: half the time of a stable one for the short columns here.
    order = np.argsort(rows, axis=0)[trim : n - trim]
    kept = np.take_along_axis(rows, order, axis=0)
    mean = kept.mean(axis=0, dtype=np.float64).astype(np.float32)
    counts = np.bincount(order.ravel(), minlength=n).astype(np.float64)
    return mean, counts / counts.sum()


def stacked_coordinate_trimmed_mean(rows: Rows, trim: int) -> tuple[np.ndarray, np.ndarray]:
    """What `median` and `trimmed_mean` did with own + received: `stack_candidates` into the
    scratch, then `coordinate_trimmed_mean` of the whole [n, d] array."""
    return coordinate_trimmed_mean(stack_rows(rows), trim)


OLD_KERNELS: dict[str, Callable[..., object]] = {
    "weighted_sum": weighted_sum,
    "stack_candidates": stack_candidates,
    "pairwise_sq_distances": pairwise_sq_distances,
    "coordinate_trimmed_mean": stacked_coordinate_trimmed_mean,
}

# End of the previous implementation.
# ---------------------------------------------------------------------------------------------


def defense_modules() -> list[ModuleType]:
    """dfl_ray.defense and every module in it."""
    names = [f"{defense.__name__}.{m.name}" for m in pkgutil.iter_modules(defense.__path__)]
    return [defense, *(importlib.import_module(name) for name in names)]


@contextmanager
def kernels(side: str) -> Iterator[None]:
    """Run the defense with the "old" (torch) kernels or the "new" (numpy) ones."""
    saved: list[tuple[ModuleType, str, object]] = []
    if side == "old":
        for module in defense_modules():
            for name, kernel in OLD_KERNELS.items():
                if hasattr(module, name):
                    saved.append((module, name, getattr(module, name)))
                    setattr(module, name, kernel)
    try:
        yield
    finally:
        for module, name, kernel in saved:
            setattr(module, name, kernel)


@dataclass
class Scenario:
    """`nodes` nodes whose models are rows of one read-only pool, read in turn."""

    label: str
    nodes: int
    pool: np.ndarray
    scores: np.ndarray
    head_base: np.ndarray
    next_node: int = 0

    def rows_of(self, node: int, k: int) -> list[np.ndarray]:
        """The own model's source and the k received rows of `node`."""
        p = self.pool.shape[0]
        return [self.pool[(node * (k + 1) + j) % p] for j in range(k + 1)]

    def take(self, count: int) -> list[int]:
        """The next `count` nodes in turn."""
        nodes = [(self.next_node + i) % self.nodes for i in range(count)]
        self.next_node = (self.next_node + count) % self.nodes
        return nodes

    def input(self, node: int, k: int) -> AggregationInput:
        """`node`'s aggregation input, built as a node builds it."""
        source, *received = self.rows_of(node, k)
        return AggregationInput(
            own=np.array(source),  # a fresh writable vector, as model_to_vector gives
            own_score=0.8,
            models=tuple(received),
            senders=tuple(f"{node:08x}{j:032x}" for j in range(k)),
            scores=self.scores[node, :k].copy(),
            reputations={},
            head=slice(D - HEAD, D),
            head_classes=CLASSES,
            head_base=self.head_base,
            checked_rows=True,
        )


def make_pool(rows: int, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 [rows, D], read-only: the centre plus independent noise of scale 0.01."""
    pool = rng.standard_normal((rows, D), dtype=np.float32)
    pool *= np.float32(0.01)
    pool += centre
    pool.flags.writeable = False
    return pool


def make_scenarios(args: argparse.Namespace) -> list[Scenario]:
    """One scenario per `--nodes` count, with models around one common centre."""
    rng = np.random.default_rng(args.seed)
    centre = rng.standard_normal(D, dtype=np.float32)
    head_base = (centre[D - HEAD:] - np.float32(0.01)).astype(np.float32)
    k_max = max(args.k)
    scenarios = []
    for nodes in args.nodes:
        # Each node its own arrays where that fits in the pool size; else a pool reused in turn.
        pool_rows = nodes * (k_max + 1)
        cap = max(k_max + 1, int(args.pool_mib * 2**20 // (4 * D)))
        scores = rng.uniform(0.5, 1.0, (nodes, k_max))
        scenarios.append(Scenario(f"{nodes:,} nodes", nodes,
                                  make_pool(min(pool_rows, cap), centre, rng), scores, head_base))
    return scenarios


def run_one(name: str, inp: AggregationInput) -> np.ndarray:
    """One aggregation (or kernel call) on `inp`; returns the resulting array."""
    if name == "weighted_sum":
        n = inp.k + 1
        return numpy_kernels.weighted_sum((inp.own, *inp.rows), np.full(n, 1.0 / n))
    if name == "stack_candidates":
        return numpy_kernels.stack_candidates(inp.own, inp.rows)
    if name == "pairwise_sq_distances":
        return numpy_kernels.pairwise_sq_distances(np.stack((inp.own, *inp.rows)))
    return get_rule(name)(inp, {}).model


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.thread_time, "wall": time.perf_counter}


def time_pairs(scenario: Scenario, name: str, k: int, calls: int,
               times: dict[str, list[float]], clock: Callable[[], float]) -> None:
    """Append to `times[side]` the seconds of `calls` aggregations per side, old and new taking
    turns call by call (the first side alternating), each on the next node in turn."""
    nodes = scenario.take(2 * calls)
    for i in range(calls):
        sides = ("old", "new") if i % 2 == 0 else ("new", "old")
        for side, node in zip(sides, nodes[2 * i : 2 * i + 2], strict=True):
            inp = scenario.input(node, k)
            with kernels(side):
                start = clock()
                run_one(name, inp)
                times[side].append(clock() - start)


def compare(scenario: Scenario, name: str, k: int) -> str:
    """Whether old and new give bitwise the same result on one input, else how far apart."""
    inp = scenario.input(0, k)
    with kernels("old"):
        old = np.array(run_one(name, inp))
    with kernels("new"):
        new = run_one(name, inp)
    if np.array_equal(old, new):
        return "bitwise"
    diff = np.abs(old.astype(np.float64) - new)
    return (f"{int(np.count_nonzero(diff)):,} of {diff.size:,} differ, "
            f"max abs {float(diff.max()):.1e}")


def fmt_ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e3:.3f}"


def build_table(args: argparse.Namespace, scenarios: list[Scenario],
                times: dict[tuple[str, str, int], dict[str, list[float]]],
                same: dict[tuple[str, int], str]) -> tuple[str, float]:
    """The markdown table and the largest new / old ratio in it."""
    head = "| rule | k |"
    rule_line = "|---|---:|"
    for s in scenarios:
        head += f" {s.label}: old ms | new ms | new/old |"
        rule_line += "---:|---:|---:|"
    head += " old vs new result |"
    rule_line += "---|"
    lines = [head, rule_line]
    worst = 0.0
    for name in args.rules:
        for k in args.k:
            line = f"| {name} | {k} |"
            for s in scenarios:
                old, new = times[(s.label, name, k)]["old"], times[(s.label, name, k)]["new"]
                ratio = statistics.median(new) / statistics.median(old)
                worst = max(worst, ratio)
                line += f" {fmt_ms(old)} | {fmt_ms(new)} | {ratio:.2f} |"
            lines.append(line + f" {same[(name, k)]} |")
    return "\n".join(lines), worst


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time aggregation rules with the previous torch kernels and the numpy ones, "
                    "side by side (see the module docstring).")
    parser.add_argument("--repeat", type=int, default=5,
                        help="repetitions of the whole set of timings (default 5)")
    parser.add_argument("--calls", type=int, default=10,
                        help="aggregations per side, rule, k, scenario and repetition; old and "
                             "new take turns call by call (default 10)")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8],
                        help="received models per aggregation (buffer sizes; default 4 8)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 1000],
                        help="node counts, one scenario each (default 10 1000)")
    parser.add_argument("--rules", nargs="+", default=[*DEFAULT_RULES, *KERNELS],
                        help="rules from dfl_ray.defense.RULES, and the kernels weighted_sum and "
                             "stack_candidates alone (default: "
                             f"{' '.join((*DEFAULT_RULES, *KERNELS))})")
    parser.add_argument("--pool-mib", type=float, default=1024.0,
                        help="most memory (MiB) the models of one scenario take; a scenario "
                             "whose nodes need more reuses a pool of this size in turn "
                             "(default 1024, above the last-level cache)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="threads of numpy's OpenBLAS (the script runs itself again with "
                             "OPENBLAS_NUM_THREADS set to it; default 1: the rules' matrix "
                             "products and distances then run on one thread like the rest, "
                             "and other load on the machine cannot stall BLAS threads)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="what a call's time is: cpu, the CPU time of this thread "
                             "(time.thread_time; everything runs on it, and time the thread "
                             "waits for a core while other work runs is left out), or wall, "
                             "time.perf_counter (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the models (default 0)")
    add_results_argument(parser)
    args = parser.parse_args(argv)
    unknown = [r for r in args.rules if r not in defense.RULES and r not in KERNELS]
    if unknown:
        parser.error(f"unknown rule {unknown[0]!r}; choose from {sorted(defense.RULES)} "
                     f"or {list(KERNELS)}")
    if args.repeat < 1 or args.calls < 1 or min(args.k) < 1 or min(args.nodes) < 1:
        parser.error("--repeat, --calls, --k and --nodes must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    blas = str(args.blas_threads)
    if argv is None and os.environ.get("OPENBLAS_NUM_THREADS") != blas:
        # numpy's OpenBLAS reads its thread count when it loads: run again with it set.
        env = {**os.environ, "OPENBLAS_NUM_THREADS": blas}
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)
    torch.set_num_threads(1)
    clock = CLOCKS[args.clock]
    scenarios = make_scenarios(args)
    same = {(name, k): compare(scenarios[0], name, k) for name in args.rules for k in args.k}
    times = {(s.label, name, k): {"old": [], "new": []}
             for s in scenarios for name in args.rules for k in args.k}
    for scenario in scenarios:  # one untimed call each: first-touch page faults, lazy imports
        for k in args.k:
            for name in args.rules:
                time_pairs(scenario, name, k, 1, {"old": [], "new": []}, clock)
    started = time.perf_counter()
    for rep in range(args.repeat):
        for scenario in scenarios:
            for k in args.k:
                for name in args.rules:
                    time_pairs(scenario, name, k, args.calls, times[(scenario.label, name, k)],
                               clock)
        print(f"repetition {rep + 1}/{args.repeat} done, {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    table, worst = build_table(args, scenarios, times, same)
    pools = ", ".join(f"{s.label}: {s.pool.shape[0]} distinct models "
                      f"({s.pool.nbytes / 2**20:,.0f} MiB)" for s in scenarios)
    report = "\n".join([
        f"Median ms ({args.clock} time) per aggregation over {args.repeat} x {args.calls} calls "
        f"per side (old and new taking turns call by call); d = {D:,} float32 (LeNet), default "
        "rule parameters, "
        f"one thread (torch {torch.__version__} with 1 thread, numpy {np.__version__} with "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}). "
        "old = the previous kernels (torch `weighted_sum`, per-thread stacking scratch, "
        "whole-stack sort in `coordinate_trimmed_mean`, [n, d] differences in "
        "`pairwise_sq_distances`); new = dfl_ray.defense now (numpy, no state between calls). "
        f"Pools: {pools}. The last column compares the two results on one input.",
        "",
        table,
        "",
        f"Largest new/old ratio: {worst:.2f}.",
    ])
    print(report)
    if args.write_results:
        title = "Aggregation: previous torch kernels against numpy"
        argv_used = sys.argv if argv is None else [sys.argv[0], *argv]
        path = record_output("aggregation_bench", title, report, markdown=True, argv=argv_used)
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
