"""The main DFL job: LeNet on non-IID MNIST, 10 nodes on the original's graph, 3 attackers.

    python experiments/lenet_noniid.py --data-dir ../shared/data
    tensorboard --logdir runs/lenet_noniid

Defaults: 10 nodes on `dfl10`, Dirichlet(0.1) shards, 3 random-model attackers, the `dfl_guard`
defense, 40 synchronous rounds. Every config field has a flag (see --help); --config FILE.yaml
loads a config tree first. `dfl-ray run` is the same command.
"""

from __future__ import annotations

import argparse
import sys

from dfl_ray.runner import add_run_arguments, run_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    add_run_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
