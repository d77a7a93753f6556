"""The robustness table: honest accuracy for {partition} x {attack} x {defense} on 10 nodes.

    python experiments/attack_table.py --data-dir ../shared/data --out runs/table --write-results

Each cell is one full run of the main job (dfl10, 40 sync rounds) with the given partition,
attackers and defense; the table (markdown) and every cell's summary (JSON) are written to --out.
Cells whose attackers hold labels no honest node has are compared with the same run with the
attackers removed from the network ("attackers removed" rows), as the targets allow.
--schedules sync async runs every cell under both schedules (in async, 40 local rounds per
node), side by side in one table, written with --write-results as its own section.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import ray

from dfl_ray.config import config_from_dict
from dfl_ray.data import NAMED_PARTITIONS
from dfl_ray.results import add_results_argument, record_output
from dfl_ray.runner import run_experiment

PARTITIONS = NAMED_PARTITIONS
ATTACKS = {
    "none": {"kind": "none", "malicious": 0},
    "1 random": {"kind": "random_model", "malicious": 1},
    "3 random": {"kind": "random_model", "malicious": 3},
    "3 sign-flip": {"kind": "sign_flip", "malicious": 3},
    # Beyond the table, run on request (--attacks): the spec's standard attacks.
    "3 ALIE": {"kind": "alie", "malicious": 3},
    "3 IPM": {"kind": "ipm", "malicious": 3},
    "3 late sign-flip": {"kind": "sign_flip", "malicious": 3, "params": {"honest_turns": 20}},
    # Sign flippers that know dfl_guard's reversal test: LeNet's output bias (the last 10
    # values), or its whole output layer (the last 5,010), left as trained.
    "3 sign-flip bias-kept": {"kind": "sign_flip", "malicious": 3, "params": {"keep_last": 10}},
    "3 sign-flip layer-kept": {"kind": "sign_flip", "malicious": 3, "params": {"keep_last": 5010}},
}
DEFAULT_ATTACKS = ("none", "1 random", "3 random", "3 sign-flip")
DEFENSES = ("dfl_guard", "half_fedavg", "dfl_reputation")


def cell_name(part: str, attack: str, defense: str, schedule: str) -> str:
    name = f"{part}__{attack.replace(' ', '_')}__{defense}"
    return name if schedule == "sync" else f"{name}__{schedule}"


def removed_name(part: str, malicious: int, schedule: str) -> str:
    return f"{part}__removed{malicious}" + ("" if schedule == "sync" else f"__{schedule}")


def cell_config(args: argparse.Namespace, part: str, attack: str, defense: str, name: str,
                schedule: str = "sync") -> Any:
    return config_from_dict({
        "experiment": {"name": name, "out": str(args.out), "rounds": args.rounds,
                       "eval_every": args.rounds, "seed": args.seed, "overwrite": True,
                       "progress": False},
        "data": {"data_dir": args.data_dir, **PARTITIONS[part]},
        "attack": ATTACKS[attack],
        "defense": {"rule": defense},
        "runtime": {"hosts": args.hosts, "schedule": schedule},
    })


def removed_config(args: argparse.Namespace, part: str, malicious: int, name: str,
                   schedule: str = "sync") -> Any:
    """The honest nodes alone: the attackers and their shards are dropped from the network."""
    return config_from_dict({
        "experiment": {"name": name, "out": str(args.out), "rounds": args.rounds,
                       "eval_every": args.rounds, "seed": args.seed, "overwrite": True,
                       "progress": False},
        "data": {"data_dir": args.data_dir, **PARTITIONS[part]},
        "attack": {"kind": "none", "malicious": 0},
        "topology": {"absent": list(range(10 - malicious, 10))},
        "defense": {"rule": "dfl_guard"},
        "runtime": {"hosts": args.hosts, "schedule": schedule},
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="data folder (default: $DFL_DATA_DIR, else the user cache folder)")
    parser.add_argument("--out", type=Path, default=Path("runs/table"),
                        help="folder for the runs, table.json and table.md (default: runs/table)")
    parser.add_argument("--rounds", type=int, default=40, help="sync rounds per run (default: 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default: 0)")
    parser.add_argument("--hosts", type=int, default=2, help="host actors per run (default: 2)")
    parser.add_argument("--partitions", nargs="*", default=list(PARTITIONS), choices=list(PARTITIONS),
                        help="rows to run (default: all)")
    parser.add_argument("--attacks", nargs="*", default=list(DEFAULT_ATTACKS), choices=list(ATTACKS),
                        help="attacks to run (default: the first four; 'late sign-flip' flips from "
                             "round 20 on; 'bias-kept' and 'layer-kept' leave LeNet's output bias, "
                             "or its whole output layer, as trained)")
    parser.add_argument("--defenses", nargs="*", default=list(DEFENSES), choices=list(DEFENSES),
                        help="columns to run (default: all)")
    parser.add_argument("--schedules", nargs="+", default=["sync"], choices=["sync", "async"],
                        help="schedules to run every cell under, side by side (default: sync)")
    parser.add_argument("--no-removed", action="store_true", help="skip the attackers-removed runs")
    parser.add_argument("--rerun", action="store_true", help="rerun cells already in table.json")
    add_results_argument(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)  # a Ray of its own
    store = args.out / "table.json"
    # Cells accumulate across invocations, so the table can be filled in several sittings.
    results: dict[str, Any] = json.loads(store.read_text()) if store.is_file() else {}

    def keep(name: str, summary: dict[str, Any]) -> None:
        results[name] = summary
        store.write_text(json.dumps(results, indent=1, sort_keys=True))

    try:
        for part in args.partitions:
            for schedule in args.schedules:
                for attack in args.attacks:
                    for defense in args.defenses:
                        name = cell_name(part, attack, defense, schedule)
                        start = time.perf_counter()
                        if name in results and not args.rerun:
                            continue
                        s = run_experiment(cell_config(args, part, attack, defense, name, schedule),
                                           quiet=True)
                        keep(name, s)
                        print(f"{part:13s} {attack:12s} {defense:15s} {schedule:5s} honest "
                              f"{s['honest_accuracy_final']:.4f} (min "
                              f"{s['honest_accuracy_min_final']:.4f}) "
                              f"{time.perf_counter() - start:.0f} s", flush=True)
                for malicious in sorted({ATTACKS[a]["malicious"] for a in args.attacks} - {0}):
                    if args.no_removed:
                        break
                    name = removed_name(part, malicious, schedule)
                    if name in results and not args.rerun:
                        continue
                    s = run_experiment(removed_config(args, part, malicious, name, schedule),
                                       quiet=True)
                    keep(name, s)
                    print(f"{part:13s} {malicious} attackers removed, {schedule}: honest "
                          f"{s['honest_accuracy_final']:.4f}", flush=True)
    finally:
        ray.shutdown()
    both = args.schedules != ["sync"]
    # The columns never run are left out.
    columns = [(d, sch) for d in DEFENSES for sch in args.schedules
               if any(cell_name(p, a, d, sch) in results for p in PARTITIONS for a in ATTACKS)]
    counts = {a["malicious"] for a in ATTACKS.values()} - {0}
    removed_columns = [sch for sch in args.schedules
                       if any(removed_name(p, m, sch) in results for p in PARTITIONS for m in counts)]

    def label(defense: str, schedule: str) -> str:
        return f"{defense} ({schedule})" if both else defense

    lines = ["| partition | attack | " + " | ".join(
                 [label(*c) for c in columns]
                 + [label("attackers removed", sch) for sch in removed_columns]) + " |",
             "|---|---|" + "---|" * (len(columns) + len(removed_columns))]
    for part in PARTITIONS:
        for attack in ATTACKS:
            cells = []
            for defense, schedule in columns:
                s = results.get(cell_name(part, attack, defense, schedule))
                cells.append(f"{s['honest_accuracy_final']:.3f}" if s else "-")
            if set(cells) == {"-"} and (both or attack not in DEFAULT_ATTACKS):
                continue  # a row never run
            m = ATTACKS[attack]["malicious"]
            for schedule in removed_columns:
                removed = results.get(removed_name(part, m, schedule)) if m else None
                cells.append(f"{removed['honest_accuracy_final']:.3f}" if removed else "")
            lines.append(f"| {part} | {attack} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    if args.write_results:
        rounds = f"{args.rounds} sync rounds" if not both else \
            f"{args.rounds} rounds (sync) or local rounds per node (async)"
        intro = (f"Honest-node mean final accuracy, 10 nodes on `dfl10`, {rounds}, "
                 f"seed {args.seed}; every cell of {store} (cells accumulate across invocations). "
                 "\"attackers removed\" is the same run with the attackers and their shards taken "
                 "out of the network.")
        section, title = (("attack_table_schedules", "Robustness table, sync and async") if both
                          else ("attack_table", "Robustness table"))
        written = record_output(section, title, intro + chr(10) * 2 + table, markdown=True)
        print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
