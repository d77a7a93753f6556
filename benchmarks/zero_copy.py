"""Cost of delivering one LeNet model to k peers through Ray: `python benchmarks/zero_copy.py`.

Every mode sends one actor call to each of k receiver actors and waits for all k replies; the
figure is the median over `--repeat` rounds, divided by k (per delivery). The modes run side by
side in every round, in turn, so drift on the machine hits them alike.

- noop: the call alone, no payload (the floor).
- deliver: each call carries the reference of a model already in the object store and each
  receiver `ray.get`s it, a read-only view of the store: the cost per peer of a model that was
  published once.
- deliver+blake3: the same, and each receiver hashes the view with BLAKE3 (the receive check).
- store: the whole path as dfl_ray runs it: `ray.put` once (and the reference dropped at the
  end), then the k deliveries; the put is shared by the k peers.
- store+blake3: the same with the receivers hashing.
- numpy by value: the array itself is each call's argument; Ray puts it in the object store
  again for every call. Each receiver hashes it.
- torch by value: a torch tensor as each call's argument, pickled for every call and unpickled
  into a fresh copy by each receiver, which hashes it.

The model is 431,080 random float32 values (1.72 MB, fixed seed), the LeNet of the DFL spec.
The target (issue 5) is a delivery <= 2x noop; the table shows it for a model already put
(deliver) and with the put shared by k peers (store). A line below the table gives the put
alone. The script starts its own local Ray with --num-cpus.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import blake3
import numpy as np
import ray
import torch

from dfl_ray.results import Tee, add_results_argument, record_output

N_PARAMS = 431_080
MODES = (
    "noop", "deliver", "deliver+blake3", "store", "store+blake3", "numpy by value",
    "torch by value",
)


class Receiver:
    """A peer: each method is one delivery as the receiving side sees it."""

    def noop(self, token: int) -> int:
        return token

    def view(self, box: list[ray.ObjectRef]) -> float:
        # The reference is wrapped in a list so Ray hands over the reference, not the value.
        vec = ray.get(box[0])
        return float(vec[0]) + float(vec[-1])

    def view_hash(self, box: list[ray.ObjectRef]) -> bytes:
        vec = ray.get(box[0])
        return blake3.blake3(memoryview(vec).cast("B")).digest()

    def numpy_hash(self, vec: np.ndarray) -> bytes:
        return blake3.blake3(memoryview(vec).cast("B")).digest()

    def torch_hash(self, tensor: torch.Tensor) -> bytes:
        return blake3.blake3(memoryview(tensor.numpy()).cast("B")).digest()


def deliveries(receivers: list[Any], vec: np.ndarray, tensor: torch.Tensor) -> dict[str, Callable[[], object]]:
    """One callable per mode: deliver to every receiver in `receivers` and wait for all."""

    def store(method: str) -> Callable[[], object]:
        def run() -> object:
            ref = ray.put(vec)
            return ray.get([getattr(r, method).remote([ref]) for r in receivers])

        return run

    published = ray.put(vec)

    def deliver(method: str) -> Callable[[], object]:
        return lambda: ray.get([getattr(r, method).remote([published]) for r in receivers])

    return {
        "noop": lambda: ray.get([r.noop.remote(1) for r in receivers]),
        "deliver": deliver("view"),
        "deliver+blake3": deliver("view_hash"),
        "store": store("view"),
        "store+blake3": store("view_hash"),
        "numpy by value": lambda: ray.get([r.numpy_hash.remote(vec) for r in receivers]),
        "torch by value": lambda: ray.get([r.torch_hash.remote(tensor) for r in receivers]),
    }


def measure(ks: list[int], repeat: int, warmup: int, receivers: list[Any], vec: np.ndarray,
            tensor: torch.Tensor) -> dict[int, dict[str, float]]:
    """Median seconds per delivery for each k and mode."""
    out: dict[int, dict[str, float]] = {}
    for k in ks:
        calls = deliveries(receivers[:k], vec, tensor)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for round_index in range(warmup + repeat):
            for mode in MODES:
                t0 = time.perf_counter()
                calls[mode]()
                elapsed = time.perf_counter() - t0
                if round_index >= warmup:
                    times[mode].append(elapsed / k)
        out[k] = {m: statistics.median(v) for m, v in times.items()}
    return out


def put_seconds(vec: np.ndarray, repeat: int) -> float:
    """Median seconds of one `ray.put` of the model, its reference dropped right after."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ray.put(vec)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,4,8", help="numbers of receivers, comma separated")
    parser.add_argument("--repeat", type=int, default=30, help="timed rounds per k (median)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds per k first")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    add_results_argument(parser)
    args = parser.parse_args()
    try:
        ks = [int(k) for k in args.ks.split(",")]
    except ValueError:
        parser.error(f"--ks must be integers separated by commas, got {args.ks!r}")
    if not ks or min(ks) < 1:
        parser.error("--ks must list numbers >= 1")
    if args.repeat < 1 or args.warmup < 0 or args.num_cpus < 1:
        parser.error("--repeat and --num-cpus must be >= 1, --warmup >= 0")

    vec = np.random.default_rng(0).standard_normal(N_PARAMS).astype(np.float32)
    tensor = torch.from_numpy(vec.copy())
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             log_to_driver=False)
    try:
        # Receivers take no CPU slot so that max(ks) of them exist on a small machine too.
        receivers = [ray.remote(Receiver).options(num_cpus=0).remote() for _ in range(max(ks))]
        ray.get([r.noop.remote(0) for r in receivers])
        results = measure(ks, args.repeat, args.warmup, receivers, vec, tensor)
        put = put_seconds(vec, max(args.repeat, 10))
    finally:
        ray.shutdown()

    with Tee() as tee:
        report(args, results, put, vec)
    if args.write_results:
        print(f"wrote {record_output('zero_copy', 'Object-store delivery', tee.text)}")


def report(args: argparse.Namespace, results: dict[int, dict[str, float]], put: float,
           vec: np.ndarray) -> None:
    """Print the figures of one measurement."""
    print(f"one model = {N_PARAMS:,} float32 ({vec.nbytes / 1e6:.2f} MB); ray {ray.__version__}, "
          f"{os.cpu_count()} cores ({platform.machine()}), local Ray num_cpus={args.num_cpus}; "
          f"median of {args.repeat} rounds, ms per delivery")
    ratios = {
        "deliver/noop": ("deliver", "noop"),
        "store/noop": ("store", "noop"),
        "store+b3/noop": ("store+blake3", "noop"),
        "numpy/store": ("numpy by value", "store"),
        "torch/store": ("torch by value", "store"),
    }
    print(f"{'k':>3} " + " ".join(f"{m:>14}" for m in MODES) + " | "
          + " ".join(f"{r:>13}" for r in ratios))
    for k, row in results.items():
        cells = " ".join(f"{row[m] * 1e3:14.3f}" for m in MODES)
        shares = " ".join(f"{row[a] / row[b]:13.2f}" for a, b in ratios.values())
        print(f"{k:>3} {cells} | {shares}")
    print(f"one ray.put of the model alone: {put * 1e3:.3f} ms (paid once per published model)")
    for name in ("deliver", "store"):
        worst = max(row[name] / row["noop"] for row in results.values())
        verdict = "met" if worst <= 2.0 else "not met"
        print(f"target {name} <= 2x noop: {verdict} (worst ratio {worst:.2f})")


if __name__ == "__main__":
    main()
