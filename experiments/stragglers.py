"""Stragglers, sync vs async: wall time to the same local rounds, and the honest accuracy reached.

    python experiments/stragglers.py --data-dir ../shared/data --out runs/stragglers --write-results

Runs the main job (10 nodes on `dfl10`, Dirichlet(0.1) shards, 3 random-model attackers,
`dfl_guard`) once per schedule and number of stragglers: 0, 1 and 3 honest nodes made
`--slowdown` times slower (`runtime.slow_nodes`, `runtime.slowdown`), the same nodes under both
schedules, picked by a seeded draw among the honest nodes. Sync rounds wait for the stragglers;
the async run ends once the other nodes have run their rounds. Prints a table (wall seconds of the
rounds, honest mean accuracy, the stragglers' own accuracy, staleness of the models aggregated)
and, with --write-results, puts it in docs/results.md (section "stragglers") through
benchmarks/results_doc.py. Other config fields go through --set section.field=value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dfl_ray.config import Config, ConfigError, config_from_dict
from dfl_ray.metrics import format_table
from dfl_ray.runner import run_experiment

REPO = Path(__file__).resolve().parents[1]


def pick_slow_nodes(config: Config, count: int) -> tuple[int, ...]:
    """`count` honest nodes, the first of a seeded shuffle: the 1-straggler set is in the 3-set."""
    honest = [n for n in range(config.topology.nodes) if n not in set(config.attackers)]
    if count > len(honest):
        raise ValueError(f"{count} stragglers asked for, but only {len(honest)} honest nodes")
    order = np.random.default_rng([config.experiment.seed, 5]).permutation(honest)
    return tuple(sorted(int(n) for n in order[:count]))


def base_tree(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    tree: dict[str, dict[str, Any]] = {
        "experiment": {"rounds": args.rounds, "eval_every": args.rounds, "out": args.out,
                       "seed": args.seed, "overwrite": True, "progress": False},
        "data": {"data_dir": args.data_dir},
        "runtime": {"slowdown": args.slowdown},
    }
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set takes section.field=value, got {item!r}")
        section, field = key.split(".", 1)
        tree.setdefault(section, {})[field] = value
    return tree


def run_one(tree: dict[str, dict[str, Any]], schedule: str, slow: tuple[int, ...]) -> dict[str, Any]:
    name = f"{schedule}_slow{len(slow)}"
    cfg = config_from_dict({**tree, "experiment": {**tree["experiment"], "name": name},
                            "runtime": {**tree["runtime"], "schedule": schedule,
                                        "slow_nodes": list(slow)}})
    print(f"{name}: slow nodes {list(slow)} ...", flush=True)
    summary = run_experiment(cfg, quiet=True)
    accs = summary["node_accuracy_final"]
    row = {
        "schedule": schedule,
        "stragglers": len(slow),
        "seconds": summary["run_seconds"],
        "honest": summary["honest_accuracy_final"],
        "stragglers_acc": float(np.mean([accs[str(n)] for n in slow])) if slow else None,
        "their_rounds": min(summary["per_node"][str(n)]["rounds"] for n in slow) if slow else None,
        "staleness": summary["staleness"]["staleness_mean"],
        "dropped": summary["counters"].get("stale_dropped", 0),
    }
    print(f"  {row['seconds']:.1f} s, honest {row['honest']:.4f}", flush=True)
    return row


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, slow: dict[int, tuple[int, ...]],
             extra: list[str]) -> str:
    lines = [
        "## Stragglers: sync vs async",
        "",
        f"`python experiments/stragglers.py --rounds {args.rounds} --slowdown {args.slowdown:g}"
        + "".join(f" --set {s}" for s in extra) + "`: the main job (10 nodes on `dfl10`, "
        "Dirichlet(0.1), 3 random-model attackers, `dfl_guard`), seed "
        f"{args.seed}, with 0, 1 and 3 honest nodes {args.slowdown:g} x slower "
        f"({', '.join(f'{k}: {list(v)}' for k, v in slow.items() if k)}). Seconds: wall time of "
        f"the {args.rounds} local rounds (async: until every other node has run them); honest: "
        "mean final accuracy of the honest nodes, stragglers included; staleness: mean rounds "
        "between a model's publication and its aggregation.",
        "",
        "| stragglers | sync s | sync honest | async s | async honest | async stragglers' rounds "
        "| async staleness | async dropped as stale |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["schedule"], r["stragglers"]): r for r in rows}
    for count in sorted({r["stragglers"] for r in rows}):
        s, a = by.get(("sync", count)), by.get(("async", count))

        def cell(row: dict[str, Any] | None, key: str, fmt: str) -> str:
            return "-" if row is None or row[key] is None else format(row[key], fmt)

        lines.append(
            f"| {count} | {cell(s, 'seconds', '.0f')} | {cell(s, 'honest', '.3f')} | "
            f"{cell(a, 'seconds', '.0f')} | {cell(a, 'honest', '.3f')} | "
            f"{cell(a, 'their_rounds', 'd')} | {cell(a, 'staleness', '.2f')} | "
            f"{cell(a, 'dropped', 'd')} |"
        )
    return "\n".join(lines) + "\n"


def write_results(text: str) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from results_doc import write_section  # type: ignore[import-not-found]
    except ImportError:
        print("benchmarks/results_doc.py is not there (yet): docs/results.md not written",
              file=sys.stderr)
        return
    path = write_section("stragglers", text)
    print(f"wrote section 'stragglers' of {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument("--data-dir", default=None, help="data folder (default: $DFL_DATA_DIR)")
    parser.add_argument("--out", default="runs/stragglers", help="parent folder of the runs")
    parser.add_argument("--rounds", type=int, default=40, help="local rounds per node (40)")
    parser.add_argument("--slowdown", type=float, default=5.0, help="stragglers' slowdown (5)")
    parser.add_argument("--stragglers", type=int, nargs="+", default=[0, 1, 3],
                        help="numbers of straggling honest nodes to run (0 1 3)")
    parser.add_argument("--schedules", nargs="+", choices=["sync", "async"],
                        default=["sync", "async"], help="schedules to run (both)")
    parser.add_argument("--seed", type=int, default=0, help="experiment seed (0)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="any other config field, e.g. --set runtime.max_staleness=4")
    parser.add_argument("--write-results", action="store_true",
                        help="put the table in docs/results.md (section 'stragglers')")
    args = parser.parse_args(argv)
    try:
        tree = base_tree(args)
        base = config_from_dict(tree)
        slow = {k: pick_slow_nodes(base, k) for k in args.stragglers}
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [run_one(tree, schedule, slow[k]) for k in args.stragglers for schedule in args.schedules]
    print()
    print(format_table(rows, ["schedule", "stragglers", "seconds", "honest", "stragglers_acc",
                              "their_rounds", "staleness", "dropped"]))
    text = markdown(rows, args, slow, args.set)
    print()
    print(text)
    if args.write_results:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
