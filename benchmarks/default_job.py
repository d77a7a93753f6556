"""The main job's figures: honest accuracy, wall time, ledger time share and run-folder size.

    python benchmarks/default_job.py --data-dir ../shared/data --write-results

Runs `experiments/lenet_noniid.py` with the same flags (every config field is one; the defaults
are the main job's) and prints the figures its summary.json records, so that docs/results.md
quotes a run it can repeat. It then verifies every node's chain (`dfl-ray ledger verify`) and
prints the blocks each sealed; with `--schedule async` also each node's local rounds, the
staleness of the models aggregated, and the seconds the nodes waited for their peers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dfl_ray.config import ConfigError, add_config_arguments, config_from_args
from dfl_ray.ledger import verify_chain
from dfl_ray.results import Tee, add_results_argument, record_output
from dfl_ray.runner import run_experiment

TITLES = {"default_job": "The main job", "full_size_share": "Ledger share on full-size shards",
          "async_job": "The main job, async schedule"}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def verify_chains(run_dir: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Blocks of each node's chain under `run_dir`, and the error of each that fails to verify."""
    blocks: dict[str, int] = {}
    failed: dict[str, str] = {}
    for chain in sorted((run_dir / "chains").glob("node_*"), key=lambda p: int(p.name[5:])):
        node = chain.name[5:]
        try:
            blocks[node] = verify_chain(chain).n_blocks
        except Exception as exc:  # a chain that fails is reported by name, the rest still checked
            failed[node] = f"{type(exc).__name__}: {exc}"
    return blocks, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    add_results_argument(parser)
    parser.add_argument("--section", default="default_job",
                        help="section of docs/results.md that --write-results writes "
                             "(default: default_job; full_size_share for the Fashion-MNIST run, "
                             "async_job for --schedule async)")
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
        if summary["schedule"] == "async":
            per_node = summary["per_node"]
            rounds = [per_node[k]["rounds"] for k in sorted(per_node, key=int)]
            waited = [per_node[k].get("waited_s", 0.0) for k in per_node]
            st = summary["staleness"]
            print(f"async: rounds {summary['run_seconds']:.1f} s; local rounds per node {rounds}; "
                  f"staleness of aggregated models mean {st['staleness_mean']:.2f}, max "
                  f"{st['staleness_max']}; dropped as stale "
                  f"{summary['counters'].get('stale_dropped', 0)}; waited for peers "
                  f"{sum(waited) / max(1, len(waited)):.1f} s per node on average")
        blocks, failed = verify_chains(run_dir)
        print(f"chains: {len(blocks)} of {len(blocks) + len(failed)} verify; blocks sealed per "
              f"node {[blocks.get(k, 0) for k in sorted({*blocks, *failed}, key=int)]}")
        for node, error in failed.items():
            print(f"  node {node}'s chain fails verification: {error}")
    if args.write_results:
        print(f"wrote {record_output(args.section, TITLES.get(args.section, args.section), tee.text)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
