"""Stragglers, sync vs async: wall time to the same local rounds, and the honest accuracy reached.

    python experiments/stragglers.py --data-dir ../shared/data --out runs/stragglers --write-results

Runs the main job (10 nodes on `dfl10`, Dirichlet(0.1) shards, 3 random-model attackers,
`dfl_guard`) once per schedule and number of stragglers: 0, 1 and 3 honest nodes made
`--slowdown` times slower (`runtime.slow_nodes`, `runtime.slowdown`), the same nodes under both
schedules, picked by a seeded draw among the honest nodes. Sync rounds wait for the stragglers;
the async run ends once the other nodes have run their rounds. Prints a table (wall seconds of the
rounds, honest mean accuracy, the other honest nodes' and the stragglers' own accuracy, the
stragglers' rounds, staleness of the models aggregated). With stragglers, two async variants
run as well (--variants): without reusing silent peers' latest models, and with the stragglers
silent, to measure what their stale models do to the others. With --write-results it puts it in
docs/results.md (section "stragglers", `dfl_ray.results`). Other config fields go through
--set section.field=value. With --reuse, finished runs of the very same configs already in
--out are read instead of run again, and those of the schedules not run (--schedules) are
added: a table put together from runs made with the code as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dfl_ray.config import Config, ConfigError, config_from_dict, load_yaml
from dfl_ray.metrics import format_table
from dfl_ray.results import record_output
from dfl_ray.runner import run_experiment

SILENT = 1e6
"""The slowdown that keeps a straggler from publishing before its peers finish."""


def pick_slow_nodes(config: Config, count: int) -> tuple[int, ...]:
    """`count` honest nodes, the first of a seeded shuffle: the 1-straggler set is in the 3-set."""
    honest = [n for n in range(config.topology.nodes) if n not in set(config.attackers)]
    if count > len(honest):
        raise ValueError(f"{count} stragglers asked for, but only {len(honest)} honest nodes")
    order = np.random.default_rng([config.experiment.seed, 5]).permutation(honest)
    return tuple(sorted(int(n) for n in order[:count]))


def base_tree(args: argparse.Namespace, seed: int) -> dict[str, dict[str, Any]]:
    tree: dict[str, dict[str, Any]] = {
        "experiment": {"rounds": args.rounds, "eval_every": args.rounds, "out": args.out,
                       "seed": seed, "overwrite": True, "progress": False},
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


VARIANTS: dict[str, dict[str, Any]] = {
    "": {},
    "noreuse": {"reuse": False},
    "silent": {"slowdown": SILENT},
}
"""Async variants beside the default: without reusing silent peers' latest models, and with
the stragglers silent (they publish nothing before the others finish: their data absent)."""


def run_config(tree: dict[str, dict[str, Any]], schedule: str, slow: tuple[int, ...],
               variant: str = "") -> Config:
    seed = tree["experiment"]["seed"]
    name = (f"{schedule}_slow{len(slow)}" + (f"_{variant}" if variant else "")
            + (f"_seed{seed}" if seed else ""))
    return config_from_dict({**tree, "experiment": {**tree["experiment"], "name": name},
                             "runtime": {**tree["runtime"], "schedule": schedule,
                                         "slow_nodes": list(slow), **VARIANTS[variant]}})


def run_one(tree: dict[str, dict[str, Any]], schedule: str, slow: tuple[int, ...],
            variant: str = "") -> dict[str, Any]:
    cfg = run_config(tree, schedule, slow, variant)
    print(f"{cfg.experiment.name}: slow nodes {list(slow)} ...", flush=True)
    summary = run_experiment(cfg, quiet=True)
    row = table_row(cfg, summary, slow, variant)
    print(f"  {row['seconds']:.1f} s, honest {row['honest']:.4f} (others {row['others']:.4f}), "
          f"staleness {row['staleness']:.2f}", flush=True)
    return row


def reused_row(tree: dict[str, dict[str, Any]], schedule: str, slow: tuple[int, ...],
               variant: str = "") -> dict[str, Any] | None:
    """The row of a finished run of the very same config already in the output folder, or None."""
    cfg = run_config(tree, schedule, slow, variant)
    run_dir = Path(cfg.experiment.out) / cfg.experiment.name
    try:
        stored = config_from_dict(load_yaml(run_dir / "config.yaml"))
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if summary.get("status") != "ok" or stored.to_yaml() != cfg.to_yaml():
        return None
    print(f"{cfg.experiment.name}: reused from {run_dir}", flush=True)
    return {**table_row(cfg, summary, slow, variant), "from_disk": True}


def table_row(cfg: Config, summary: dict[str, Any], slow: tuple[int, ...],
              variant: str = "") -> dict[str, Any]:
    accs = summary["node_accuracy_final"]
    others = [n for n in range(cfg.topology.nodes)
              if n not in set(cfg.attackers) and n not in set(slow) and str(n) in accs]
    return {
        "schedule": cfg.runtime.schedule,
        "variant": variant,
        "seed": cfg.experiment.seed,
        "stragglers": len(slow),
        "seconds": summary["run_seconds"],
        "honest": summary["honest_accuracy_final"],
        "others": float(np.mean([accs[str(n)] for n in others])),
        "stragglers_acc": float(np.mean([accs[str(n)] for n in slow])) if slow else None,
        "their_rounds": min(summary["per_node"][str(n)]["rounds"] for n in slow) if slow else None,
        "staleness": summary["staleness"]["staleness_mean"],
        "dropped": summary["counters"].get("stale_dropped", 0),
        "reused_models": summary["counters"].get("reused", 0),
    }


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace,
             slow: dict[int, dict[int, tuple[int, ...]]]) -> str:
    """The table; with several seeds each cell is the mean over them (worst, best)."""
    from_disk = [f"{r['schedule']}{'_' + r['variant'] if r['variant'] else ''} with "
                 f"{r['stragglers']}, seed {r['seed']}" for r in rows if r.get("from_disk")]
    seeds = sorted(slow)
    picked = "; ".join(
        f"seed {seed}: " + ", ".join(f"{k}: nodes {list(v)}" for k, v in sorted(slow[seed].items())
                                     if k) for seed in seeds)
    lines = [
        "The main job (10 nodes on `dfl10`, Dirichlet(0.1), 3 random-model attackers, "
        f"`dfl_guard`, {args.rounds} local rounds), seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(str(s) for s in seeds)}, with "
        f"{', '.join(str(k) for k in sorted(args.stragglers))} honest nodes "
        f"{args.slowdown:g} x slower ({picked}), the same stragglers under both schedules, "
        + ("one run after the other in one invocation. " if not from_disk else
           "one run at a time (rows read from finished runs, named below, were run in "
           "earlier invocations: their wall times may come from another load). ")
        + "Seconds: wall time of the rounds (async: until every node that is not a straggler "
        "has run them). honest: mean final accuracy of the honest nodes, stragglers "
        "included; others: of the honest nodes that are not stragglers; slow acc and slow "
        "rounds: the stragglers' own accuracy and fewest local rounds (async); staleness: "
        "mean staleness of the models aggregated, in the receiver's rounds (the age of a "
        "model's base: a straggler's model counts as old as its slow round, not as far "
        "behind as its round number); reused: latest models of peers with nothing new "
        "aggregated again (`runtime.reuse`); dropped: models left out as staler than "
        "`runtime.max_staleness`. The last two columns measure what the stragglers' stale "
        "models do to the others: the others' accuracy when the stragglers' models are "
        "aggregated once each, not reused (`runtime.reuse false`), and when the stragglers "
        "publish nothing before the others finish (their data absent)."
        + ("" if len(seeds) == 1 else " With several seeds, each cell is the mean over them "
           "and, for accuracies, (worst-best): async runs vary from run to run by several "
           "hundredths on a loaded machine, so one seed cannot rank the columns.")
        + ("" if not from_disk else " Rows read from finished runs of the same configs "
           "already in the output folder (`--reuse`): " + ", ".join(from_disk) + "."),
        "",
        "| stragglers | sync s | sync honest | sync others | async s | async honest "
        "| async others | slow acc | slow rounds | staleness | reused | dropped "
        "| others, no reuse | others, stragglers silent |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["schedule"], r["variant"], r["stragglers"]), []).append(r)

    def cell(group: list[dict[str, Any]] | None, key: str, fmt: str) -> str:
        kept = [r for r in group or [] if r[key] is not None]
        values = [r[key] for r in kept]
        if not values:
            return "-"
        text = format(float(np.mean(values)), ".0f" if fmt == "d" else fmt)
        if len(values) > 1 and fmt == ".3f":
            text += f" ({min(values):.3f}-{max(values):.3f})"
        had = sorted({r["seed"] for r in kept})
        if had != seeds:  # a mean over fewer seeds than the table's says so
            text += f" [seed{'s' if len(had) > 1 else ''} {', '.join(map(str, had))}]"
        return text

    for count in sorted({r["stragglers"] for r in rows}):
        s, a = by.get(("sync", "", count)), by.get(("async", "", count))
        plain, silent = by.get(("async", "noreuse", count)), by.get(("async", "silent", count))
        lines.append(
            f"| {count} | {cell(s, 'seconds', '.0f')} | {cell(s, 'honest', '.3f')} | "
            f"{cell(s, 'others', '.3f')} | {cell(a, 'seconds', '.0f')} | "
            f"{cell(a, 'honest', '.3f')} | {cell(a, 'others', '.3f')} | "
            f"{cell(a, 'stragglers_acc', '.3f')} | {cell(a, 'their_rounds', 'd')} | "
            f"{cell(a, 'staleness', '.2f')} | {cell(a, 'reused_models', 'd')} | "
            f"{cell(a, 'dropped', 'd')} | {cell(plain, 'others', '.3f')} | "
            f"{cell(silent, 'others', '.3f')} |"
        )
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--variants", nargs="*", choices=[v for v in VARIANTS if v],
                        default=[v for v in VARIANTS if v],
                        help="async variants also run with stragglers: noreuse (runtime.reuse "
                             "false), silent (the stragglers publish nothing before the others "
                             "finish); default both, none: --variants with no value")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="experiment seeds (0); each picks its own stragglers, and each "
                             "cell of the table is the mean over them (worst-best)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="any other config field, e.g. --set runtime.max_staleness=4")
    parser.add_argument("--reuse", action="store_true",
                        help="read the finished runs of the same configs already in --out "
                             "instead of running them again, and add those of the schedules "
                             "not run (only after runs made with the code as it is)")
    parser.add_argument("--write-results", action="store_true",
                        help="put the table in docs/results.md (section 'stragglers')")
    args = parser.parse_args(argv)
    try:
        trees = {seed: base_tree(args, seed) for seed in args.seeds}
        slow = {seed: {k: pick_slow_nodes(config_from_dict(tree), k) for k in args.stragglers}
                for seed, tree in trees.items()}
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = [(k, schedule, "") for k in args.stragglers for schedule in ("sync", "async")]
    runs += [(k, "async", v) for v in args.variants for k in args.stragglers if k]
    rows = []
    for seed, tree in trees.items():
        for k, schedule, variant in runs:
            row = reused_row(tree, schedule, slow[seed][k], variant) if args.reuse else None
            if row is None and schedule in args.schedules:
                row = run_one(tree, schedule, slow[seed][k], variant)
            if row is not None:
                rows.append(row)
    print()
    print(format_table(rows, ["schedule", "variant", "seed", "stragglers", "seconds", "honest",
                              "others", "stragglers_acc", "their_rounds", "staleness",
                              "reused_models", "dropped"]))
    text = markdown(rows, args, slow)
    print()
    print(text)
    if args.write_results:
        path = record_output("stragglers", "Stragglers: sync vs async", text, markdown=True,
                             argv=[sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
        print(f"wrote section 'stragglers' of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
