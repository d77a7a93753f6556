"""Cost of the trigger scan against a node's own work: `python benchmarks/trigger_scan_bench.py`.

One node's LeNet on a shard of `--shard` random 28 x 28 images (the cost does not depend on their
content), one torch thread. Timed side by side, in turn, `--repeat` times each (median):

- train: one local round as the main job runs it (one epoch of the shard at batch 64);
- scan: one round of the trigger scan with the default settings (`trigger_steps` Adam steps on
  every class's patch at once, then the flip rates on the validation split);
- refuse check: reading one received model under every class's patch (10 found), which the
  node does for each model it received once a patch is found.

Prints a table; with --write-results it is also written to docs/results.md (section
trigger_scan_cost).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from dfl_ray.models.flat import model_to_vector
from dfl_ray.models.lenet import LeNet
from dfl_ray.models.training import steps_per_epoch
from dfl_ray.node.learner import Learner
from dfl_ray.node.params import NodeData, NodeParams
from dfl_ray.node.triggers import TriggerSettings
from dfl_ray.results import Tee, add_results_argument, record_output


def build(shard: int, val: int, seed: int) -> Learner:
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (shard + val, 28, 28), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 10, shard + val).astype(np.int64))
    data = NodeData(images=images[:shard], labels=labels[:shard], train_idx=np.arange(shard),
                    val_images=images[shard:], val_labels=labels[shard:])
    params = NodeParams(node_id=0, peers=(1,), local_steps=steps_per_epoch(shard, 64),
                        trigger=TriggerSettings(threshold=0.9), seed=seed)
    torch.manual_seed(seed)
    model = LeNet()
    return Learner(params, model=model, data=data, initial=model_to_vector(model))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shard", type=int, default=700,
                        help="training images of the node (default: 700, a dfl10 shard of the "
                             "offline MNIST)")
    parser.add_argument("--val", type=int, default=80,
                        help="validation images of the node (default: 80)")
    parser.add_argument("--repeat", type=int, default=7, help="timed repeats of each (default: 7)")
    parser.add_argument("--seed", type=int, default=0)
    add_results_argument(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    learner = build(args.shard, args.val, args.seed)
    scan = learner.triggers
    assert scan is not None
    start = learner.vector()
    received = start + np.float32(0.01)
    mask, pattern = scan._patches()
    for t in range(scan.classes):  # every class found: the most a refusal check reads
        scan.found[t] = (mask[t].detach().clone(), pattern[t].detach().clone())

    def train() -> None:
        learner.train(start)
        learner.load(start)

    work: dict[str, Callable[[], object]] = {
        "train (one local round)": train,
        "scan (one round)": learner.scan,
        "refuse check (one received model)": lambda: learner.carried(received),
    }
    seconds: dict[str, list[float]] = {name: [] for name in work}
    for fn in work.values():
        fn()  # warm-up
    for _ in range(args.repeat):
        for name, fn in work.items():
            begun = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - begun)
    with Tee() as tee:
        print(f"one torch thread, shard {args.shard} images, validation {args.val}, median of "
              f"{args.repeat}:")
        print()
        print("| work | ms | x train |")
        print("|---|---|---|")
        base = statistics.median(seconds["train (one local round)"])
        for name, values in seconds.items():
            median = statistics.median(values)
            print(f"| {name} | {1000 * median:.1f} | {median / base:.2f} |")
    if args.write_results:
        print(f"wrote {record_output('trigger_scan_cost', 'Trigger scan cost', tee.text, markdown=True)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
