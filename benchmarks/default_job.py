"""The main job's figures: honest accuracy, wall time, ledger time share and run-folder size.

    python benchmarks/default_job.py --data-dir ../shared/data --write-results

Runs `experiments/lenet_noniid.py` with the same flags (every config field is one; the defaults
are the main job's) and prints the figures its summary.json records, so that docs/results.md
quotes a run it can repeat.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dfl_ray.config import ConfigError, add_config_arguments, config_from_args
from dfl_ray.results import Tee, add_results_argument, record_output
from dfl_ray.runner import run_experiment

TITLES = {"default_job": "The main job", "full_size_share": "Ledger share on full-size shards"}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    add_results_argument(parser)
    parser.add_argument("--section", default="default_job",
                        help="section of docs/results.md that --write-results writes "
                             "(default: default_job; full_size_share for the Fashion-MNIST run)")
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = run_experiment(config, quiet=True)
    run_dir = Path(config.experiment.out) / config.experiment.name
    with Tee() as tee:
        print(f"{summary['nodes']} nodes, {summary['rounds']} {summary['schedule']} rounds, "
              f"{config.data.dataset} {config.data.partition}, {summary['n_train']} training "
              f"images, attack {config.attack.kind} x {config.attack.malicious}, defense "
              f"{config.defense.rule}, seed {config.experiment.seed}")
        print(f"honest accuracy: mean {summary['honest_accuracy_final']:.4f}, "
              f"min {summary['honest_accuracy_min_final']:.4f}")
        print(f"wall time {summary['wall_seconds']:.1f} s; ledger time share "
              f"{100 * summary['ledger_time_share']:.2f} %; run folder "
              f"{folder_bytes(run_dir) / 1e6:.0f} MB")
    if args.write_results:
        print(f"wrote {record_output(args.section, TITLES.get(args.section, args.section), tee.text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
