"""Scaling benchmark: N simulated DFL nodes on Ray, time per round, throughput and memory.

Run from the repository root:

    python benchmarks/scale.py --sizes 10 100 1000 --rounds 3 --hosts 0 --data-dir ../shared/data

For every N it builds a DFL network with `dfl_ray.actors.network.Network` (the runner's builder
without evaluation or recording): a random 8-regular graph, IID Fashion-MNIST shards (60,000
images, so 1,000 nodes still hold 60 each: 54 to train on, 6 to score with), one local SGD step
of up to 64 samples per node per round, buffer 4, `ledger.ttl` 1 (direct peers only: flooding
1,000 nodes would make every node hash 1,000 models a round), chain stores kept with
`ledger.keep_payloads` 0, `--defense` fedavg by default. It runs one untimed warm-up round, then
`--rounds` timed synchronous rounds, and reports:

- s/round: wall seconds per timed round, seen from the driver.
- node-steps/s: N x local steps x rounds / wall seconds.
- compute: training + scoring seconds per round timed inside the nodes (their stopwatches),
  for the busiest host actor, since host actors run in parallel; `round/compute` is s/round
  over that figure (1.0 would mean no time at all outside training and scoring).
- peak memory: the largest sum, over the driver and every process it started (Ray's GCS,
  raylet, workers), of RSS and of PSS, sampled every `--sample-s` seconds with psutil. RSS
  counts shared pages (the object store, the shared data set) once per process that maps
  them; PSS splits them between those processes, so PSS is the machine's real use.
- train/score/ledger/aggregate/transport ms: each category's stopwatch seconds per node and
  round (wall time inside the nodes; the object-store put of a host's last partial group of
  vectors is host work and counted in no category).
- cpu ms/step: CPU seconds (user + system) of the driver and every Ray process during the timed
  rounds, per node-step. Unlike the wall-clock figures it hardly depends on what else runs on
  the machine.

After each N it runs the plain PyTorch loop that bounds this work on one core: one process, one
thread, N LeNets, each taking the same SGD step on its shard and the same scoring forward passes
on its validation samples (one per received model plus one for its own, as the nodes do), with no
protocol, ledger or transport at all. `vs plain` is node-steps/s over that loop's steps/s;
`plain cpu ms/step` is the loop thread's CPU time per step and `cpu eff` that over the
network's cpu ms/step: the share of the network's CPU that goes to the plain loop's work.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil
import torch

from dfl_ray.config import Config, config_from_dict
from dfl_ray.data import Dataset, NodeShard, load_dataset, partition
from dfl_ray.metrics import format_table
from dfl_ray.models.flat import ModelSpec, model_to_vector
from dfl_ray.models.registry import build_model
from dfl_ray.models.training import PIXEL_SCALE, make_optimizer
from dfl_ray.node import make_genesis
from dfl_ray.node.build import sgd_settings
from dfl_ray.results import Tee, add_results_argument, record_output
from dfl_ray.topology import build_topology, neighbors

GIB = 1024**3
COMPUTE = ("train", "score")
OVERHEAD = ("ledger", "aggregate", "transport")


def process_tree() -> list[psutil.Process]:
    root = psutil.Process()
    return [root, *root.children(recursive=True)]


def cpu_seconds() -> float:
    """User + system CPU seconds used so far by this process and all its descendants."""
    total = 0.0
    for proc in process_tree():
        try:
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        total += times.user + times.system
    return total


class MemorySampler:
    """Peak RSS and PSS summed over this process and all its descendants, sampled in a thread.

    RSS (one read of /proc/<pid>/statm) is sampled every interval. PSS needs the kernel to walk
    every page of every process (smaps_rollup), which for gigabytes of models costs a noticeable
    share of a core, so it is read only when the RSS sum passes its last high by 2 %, and at
    the start and the end.
    """

    def __init__(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"sampling interval must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self.peak_rss = 0
        self.peak_pss = 0
        self._rss_at_pss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self, *, force_pss: bool = False) -> None:
        procs = process_tree()
        rss = 0
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied,
                                     psutil.ZombieProcess):  # a worker that just exited
                rss += proc.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        if rss <= 1.02 * self._rss_at_pss and not force_pss:
            return
        self._rss_at_pss = max(self._rss_at_pss, rss)
        pss = 0
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied,
                                     psutil.ZombieProcess):
                info = proc.memory_full_info()
                pss += getattr(info, "pss", info.rss)
        self.peak_pss = max(self.peak_pss, pss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample(force_pss=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample(force_pss=True)


@dataclass(frozen=True)
class Layout:
    """One network's data and graph, shared by its DFL run and its plain-loop reference."""

    config: Config
    shards: list[NodeShard]
    peers: dict[int, tuple[int, ...]]


def make_config(n: int, args: argparse.Namespace, rule: str) -> Config:
    return config_from_dict({
        "experiment": {"name": f"scale_{n}", "seed": args.seed, "progress": False},
        "data": {"dataset": args.dataset, "partition": "iid", "val_fraction": 0.1},
        "topology": {"kind": "regular", "nodes": n, "degree": min(args.degree, n - 1)},
        "defense": {"rule": rule, "buffer_size": args.buffer_size},
        "attack": {"kind": "none", "malicious": 0},
        "training": {"local_steps": args.local_steps, "batch_size": args.batch_size},
        # A slow round on a busy machine must not expire the transactions it carries.
        "ledger": {"ttl": args.ttl, "keep_payloads": args.keep_payloads, "expiry_s": 3600.0},
        "runtime": {"hosts": min(args.hosts, n), "torch_threads": 1},
    })


def make_layout(n: int, args: argparse.Namespace, data: Dataset, rule: str) -> Layout:
    cfg = make_config(n, args, rule)
    shards = partition(
        data.train_labels.numpy(), n, kind="iid", seed=args.seed, val_fraction=cfg.data.val_fraction
    )
    graph = build_topology("regular", n, degree=cfg.topology.degree, seed=args.seed)
    return Layout(cfg, shards, neighbors(graph))


def new_lenet(data: Dataset) -> torch.nn.Module:
    shape = data.image_shape
    return build_model("lenet", in_channels=1 if len(shape) == 2 else shape[0],
                       num_classes=data.num_classes, image_size=shape[-1])


def node_seconds(stats: Mapping[int, Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    return {n: dict(st["seconds"]) for n, st in stats.items()}


def run_network(layout: Layout, data: Dataset, rounds: int, sample_s: float) -> dict[str, Any]:
    """Build the network, run a warm-up round and `rounds` timed rounds; return the figures."""
    from dfl_ray.actors.network import Network

    cfg, n = layout.config, len(layout.shards)
    torch.manual_seed(cfg.experiment.seed)
    model = new_lenet(data)
    spec = ModelSpec.of(model, cfg.model.name)
    initial = model_to_vector(model)
    genesis = make_genesis(cfg, spec, initial, n)
    arrays = {
        "train_images": data.train_images.numpy(), "train_labels": data.train_labels.numpy(),
        "test_images": data.test_images.numpy(), "test_labels": data.test_labels.numpy(),
        "initial": initial,
    }
    with tempfile.TemporaryDirectory(prefix="dfl_scale_") as run_dir, \
            MemorySampler(sample_s) as memory:
        started = time.perf_counter()
        net = Network(cfg, shards=layout.shards, neighbors=layout.peers, genesis=genesis,
                      spec=spec, arrays=arrays, run_dir=run_dir)
        try:
            setup_s = time.perf_counter() - started
            net.run_round(0)  # warm-up: first-touch allocations, lazy imports, caches
            before = node_seconds(net.stats())
            cpu_before = cpu_seconds()
            started = time.perf_counter()
            for r in range(1, rounds + 1):
                net.run_round(r)
            wall = time.perf_counter() - started
            cpu = cpu_seconds() - cpu_before
            stats = net.stats()
            hosts = len(net.hosts)
            host_of = dict(net.host_of)
        finally:
            net.shutdown()
    after = node_seconds(stats)
    delta = {
        node: {c: after[node].get(c, 0.0) - before[node].get(c, 0.0) for c in COMPUTE + OVERHEAD}
        for node in after
    }
    per_host = [0.0] * hosts
    for node, secs in delta.items():
        per_host[host_of[node]] += sum(secs[c] for c in COMPUTE)
    accepted = sum(st["counters"].get("accepted", 0) for st in stats.values())
    rejected = sum(sum(st["rejected"].values()) for st in stats.values())
    node_rounds = n * rounds
    row: dict[str, Any] = {
        "nodes": n,
        "hosts": hosts,
        "s/round": wall / rounds,
        "node-steps/s": n * cfg.training.local_steps * rounds / wall,
        "compute s": max(per_host) / rounds,
        "round/compute": (wall / rounds) / (max(per_host) / rounds),
        "cpu ms/step": 1e3 * cpu / (n * cfg.training.local_steps * rounds),
        "peak RSS GiB": memory.peak_rss / GIB,
        "peak PSS GiB": memory.peak_pss / GIB,
        "setup s": setup_s,
    }
    for c in COMPUTE + OVERHEAD:
        row[f"{c} ms"] = 1e3 * sum(secs[c] for secs in delta.values()) / node_rounds
    row["accepted"] = accepted
    row["rejected"] = rejected
    return row


def plain_loop(layout: Layout, data: Dataset, rounds: int) -> tuple[float, float]:
    """(node-steps per second, CPU ms per node-step) of the same training steps and scoring
    passes in one plain thread."""
    cfg = layout.config
    sgd = sgd_settings(cfg)
    images, labels = data.train_images, data.train_labels
    rng = np.random.default_rng(cfg.experiment.seed)
    torch.manual_seed(cfg.experiment.seed)
    template = new_lenet(data)
    models, optimizers, batches, vals = [], [], [], []
    for i, shard in enumerate(layout.shards):
        model = new_lenet(data)
        model.load_state_dict(template.state_dict())
        models.append(model)
        optimizers.append(make_optimizer(model, sgd))
        size = min(cfg.training.batch_size, len(shard.train))
        batches.append(torch.from_numpy(rng.choice(shard.train, size=size, replace=False)))
        val = torch.from_numpy(shard.val)
        vals.append((images[val].unsqueeze(1).float() * PIXEL_SCALE, labels[val],
                     len(layout.peers[i]) + 1))
    loss_fn = torch.nn.CrossEntropyLoss()

    def one_pass() -> None:
        for model, opt, idx, (vx, vy, passes) in zip(models, optimizers, batches, vals,
                                                    strict=True):
            model.train()
            x = images[idx].unsqueeze(1).float() * PIXEL_SCALE
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), labels[idx]).backward()
            opt.step()
            model.eval()
            with torch.no_grad():
                for _ in range(passes):
                    int((model(vx).argmax(dim=1) == vy).sum())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_pass()  # warm-up, as for the network
        started, cpu_started = time.perf_counter(), time.thread_time()
        for _ in range(rounds):
            one_pass()
        wall, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
    finally:
        torch.set_num_threads(threads)
    steps = len(models) * cfg.training.local_steps * rounds
    return steps / wall, 1e3 * cpu / steps


def plain_loop_job(n: int, args: argparse.Namespace, rule: str) -> tuple[float, float]:
    """`plain_loop` for network size n, run in a child process (see `main`).

    The child takes the niceness Ray gives its workers (15 unless RAY_worker_niceness says
    otherwise), so on a machine shared with other work the loop and the host actors compete
    for the CPU on equal terms; on an idle machine niceness changes nothing.
    """
    target = int(os.environ.get("RAY_worker_niceness", "15"))  # noqa: SIM112 - Ray's name
    if target > os.nice(0):
        os.nice(target - os.nice(0))
    data = load_dataset(args.dataset, args.data_dir, download=False)
    return plain_loop(make_layout(n, args, data, rule), data, args.rounds)


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    columns = ["nodes", "hosts", "defense", "s/round", "node-steps/s", "plain steps/s",
               "vs plain", "compute s", "round/compute", "cpu ms/step", "plain cpu ms/step",
               "cpu eff",
               "peak RSS GiB", "peak PSS GiB",
               "train ms", "score ms", "ledger ms", "aggregate ms", "transport ms", "setup s"]
    print(format_table(rows, columns), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000],
                        help="network sizes N")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per size")
    parser.add_argument("--hosts", type=int, default=0,
                        help="host actors (0: one per node up to 32 nodes, else one per CPU)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1,
                        help="CPUs of the local Ray instance")
    parser.add_argument("--data-dir", default=None, help="data folder (torchvision layout)")
    parser.add_argument("--dataset", default="fashion_mnist", choices=["mnist", "fashion_mnist"],
                        help="data set")
    parser.add_argument("--defense", default="fedavg", help="aggregation rule")
    parser.add_argument("--extra-defense", default=None,
                        help="a second rule, run at --extra-sizes (e.g. dfl_trust)")
    parser.add_argument("--extra-sizes", type=int, nargs="*", default=[100],
                        help="sizes N at which --extra-defense runs")
    parser.add_argument("--degree", type=int, default=8, help="degree of the random regular graph")
    parser.add_argument("--buffer-size", type=int, default=4,
                        help="received models a node aggregates")
    parser.add_argument("--ttl", type=int, default=1, help="gossip hops")
    parser.add_argument("--local-steps", type=int, default=1,
                        help="SGD steps per node per round")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per SGD step")
    parser.add_argument("--keep-payloads", type=int, default=0,
                        help="own payloads kept on disk per node (-1: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run")
    parser.add_argument("--sample-s", type=float, default=0.5, help="memory sampling interval")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain PyTorch loop")
    add_results_argument(parser)
    args = parser.parse_args(argv)
    if any(n < 2 for n in args.sizes) or args.rounds < 1 or args.num_cpus < 1 or args.hosts < 0:
        parser.error("sizes must be >= 2, --rounds and --num-cpus >= 1, --hosts >= 0")
    with Tee() as tee:
        status = measure(args)
    if args.write_results:
        print(f"wrote {record_output('scale', 'Simulated populations', tee.text)}")
    return status


def measure(args: argparse.Namespace) -> int:
    """Run every network size and print its row, then the whole table."""

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    data = load_dataset(args.dataset, args.data_dir, download=False)
    print(f"scale: {data.describe()}; Ray with {args.num_cpus} CPUs; sizes {args.sizes}, "
          f"{args.rounds} timed rounds after 1 warm-up; degree {args.degree}, ttl {args.ttl}, "
          f"buffer {args.buffer_size}, {args.local_steps} step(s) of <= {args.batch_size}, "
          f"keep_payloads {args.keep_payloads}", flush=True)
    runs = [(n, args.defense) for n in args.sizes]
    if args.extra_defense:
        runs += [(n, args.extra_defense) for n in args.extra_sizes]
    rows: list[dict[str, Any]] = []
    for n, rule in runs:
        layout = make_layout(n, args, data, rule)
        # A fresh Ray per network: object-store pages a larger network touched stay resident
        # and would be counted in the next network's memory.
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
                 log_to_driver=False)
        try:
            row = run_network(layout, data, args.rounds, args.sample_s)
        finally:
            ray.shutdown()
        row["defense"] = rule
        plain, plain_cpu = None, None
        if not args.no_plain and rule == args.defense:
            # In a child process: the N models it builds would otherwise stay in this
            # process's heap and count in the memory of every later network.
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                plain, plain_cpu = pool.apply(plain_loop_job, (n, args, rule))
        row["plain steps/s"] = plain
        row["plain cpu ms/step"] = plain_cpu
        row["vs plain"] = row["node-steps/s"] / plain if plain else None
        row["cpu eff"] = plain_cpu / row["cpu ms/step"] if plain_cpu else None
        rows.append(row)
        print_table(rows[-1:])
    print()
    print_table(rows)
    main_rows = [r for r in rows if r["defense"] == args.defense]
    for a, b in zip(main_rows, main_rows[1:], strict=False):
        growth = b["s/round"] / a["s/round"]
        print(f"s/round grows {growth:.2f}x from N={a['nodes']} to N={b['nodes']} "
              f"({b['nodes'] / a['nodes']:.0f}x the nodes)")
    if main_rows:
        problems = [r["nodes"] for r in main_rows if r["rejected"]]
        if problems:
            print(f"warning: rejected messages at N={problems}", file=sys.stderr)
    median = statistics.median(r["round/compute"] for r in rows) if rows else math.nan
    print(f"median round/compute {median:.2f}; compute = train + score seconds of the busiest "
          "host; peaks summed over the driver and all Ray processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
