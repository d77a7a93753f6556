"""Centralised LeNet baseline: the accuracy ceiling every DFL run is compared with.

    python experiments/centralized_baseline.py --data-dir ../shared/data --epochs 5
"""

from __future__ import annotations

import argparse
import sys

import torch

from dfl_ray.baseline import train_centralized
from dfl_ray.data import DATASETS, DataNotFoundError, load_dataset
from dfl_ray.results import Tee, add_results_argument, record_output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS),
                        help="data set (default: mnist)")
    parser.add_argument("--data-dir", default=None, help="data folder (default $DFL_DATA_DIR or cache)")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and the batches")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    add_results_argument(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        data = load_dataset(args.dataset, args.data_dir)
    except DataNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with Tee() as tee:
        print(f"centralised {args.dataset}: {data.describe()}")
        result = train_centralized(
            data, epochs=args.epochs, seed=args.seed, device=args.device,
            on_epoch=lambda e, a: print(f"epoch {e}: test accuracy {a:.4f}", flush=True),
        )
        print(f"final test accuracy {result.accuracies[-1]:.4f} after {args.epochs} epochs "
              f"in {result.seconds:.1f} s")
    if args.write_results:
        print(f"wrote {record_output('centralized_baseline', 'Centralised baseline', tee.text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
