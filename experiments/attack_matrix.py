"""The attack matrix: honest accuracy and backdoor success for attacks x defenses x partitions x seeds.

    python experiments/attack_matrix.py --data-dir ../shared/data --out runs/matrix \
        --attacks none gate_edge backdoor min_max --defenses dfl_guard dfl_shield \
        --partitions dirichlet0.1 labels2 --seeds 0 1 2 --parallel 2 --write-results

Each trial is one full run of the main job (10 nodes on dfl10, 3 attackers, 40 sync rounds;
--malicious 1 2 3 runs each attack with 1, 2 and 3 of them, the last nodes) in its own run
folder under --out; trials run as Ray tasks, --parallel at a time (1: one after the other),
each with its host actors sized to its share of the CPUs. For every (partition, defense, seed,
count of attackers) the same run with the attackers and their shards taken out of the network
("removed") is run too: a cell is judged against the removed run of the same seed, not against
a fixed figure, because some seeds give the attackers most of a digit's images (Dirichlet(0.1)
seed 2; docs/results.md, "Attack matrix"). The targets, per cell: honest mean >= 0.93 and at
most 0.01 below the removed run of the same seed, backdoor success <= 5 %.

Writes matrix.json (every trial's summary, accumulated across invocations), matrix.md (mean and
worst over seeds of the honest mean, its gap to the removed run, and the backdoor success) and
matrix.png (a heatmap of the worst gap), and with --write-results the table into
docs/results.md (section attack_matrix; with other --malicious counts, a section of its own).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import ray

from dfl_ray.code import CodeMismatchError, describe
from dfl_ray.config import config_from_dict
from dfl_ray.data import NAMED_PARTITIONS
from dfl_ray.results import add_results_argument, check_section_name, record_output
from dfl_ray.runner import run_experiment

PARTITIONS = NAMED_PARTITIONS
# The suite: attack name -> (kind, params). Three attackers in every cell but "none".
ATTACKS: dict[str, tuple[str, dict[str, float]]] = {
    "none": ("none", {}),
    "random_model": ("random_model", {}),
    "sign_flip": ("sign_flip", {}),
    "sign_flip_layer_kept": ("sign_flip", {"keep_last": 5010}),
    "alie": ("alie", {}),
    "ipm": ("ipm", {}),
    "min_max": ("min_max", {}),
    "min_sum": ("min_sum", {}),
    "mimic": ("mimic", {}),
    "gate_edge": ("gate_edge", {}),
    "gate_edge_half": ("gate_edge", {"fraction": 0.5}),
    "gate_edge_quarter": ("gate_edge", {"fraction": 0.25}),
    "gate_edge_whole": ("gate_edge", {"whole": 1}),
    "gate_edge_oppose": ("gate_edge", {"oppose": 0.1}),
    "kin_edge": ("kin_edge", {}),
    "kin_edge_half": ("kin_edge", {"share": 0.5}),  # cosine about the kin test's threshold
    # gate_edge shortened until it passes dfl_guard's validation probe (probe=2) on its own data
    "probe_edge": ("probe_edge", {}),
    "probe_edge_3": ("probe_edge", {"probe": 3.0}),  # against dfl_guard:probe=3
    "probe_edge_step1": ("probe_edge", {"probe_step": 1.0}),  # against dfl_guard:probe_step=1
    "probe_edge_burst4": ("probe_edge", {"burst": 4}),  # against dfl_guard:...,forgive=0.8
    "probe_edge_burst5": ("probe_edge", {"burst": 5}),  # against dfl_guard:...,forgive=0.9
    # against a high reputation floor: a push that passes the probe more often, shorter
    "probe_edge_safe": ("probe_edge", {"safety": 0.5}),
    # against dfl_guard:beta=0.1,floor=0.8: fails the probe rarely enough to stay over the floor
    "probe_edge_safer": ("probe_edge", {"safety": 0.25}),
    # against dfl_guard:probe=2,forgive=0.8,probe_slack=0.15
    "probe_edge_burst4_slack15": ("probe_edge", {"burst": 4, "probe_slack": 0.15}),
    # against dfl_guard:probe_scale=0.03: rises at most half the scale above the median
    "probe_edge_scale3": ("probe_edge", {"probe": 1.0, "probe_slack": 0.015}),
    # the whole update reversed, the output layer mended to pass the reversal test as read
    "reversal_edge": ("reversal_edge", {}),
    # the same lifted just past the test's threshold: the least boost, against head_clip
    "reversal_edge_low": ("reversal_edge", {"skew": 0.05}),
    # reversal_edge sized to the receivers' head_clip bound (against dfl_guard:head_clip=3)
    "reversal_fit": ("reversal_fit", {}),
    "shield_edge": ("shield_edge", {}),
    "sentinel_edge": ("sentinel_edge", {}),
    "label_swap": ("label_swap", {}),
    "backdoor": ("backdoor", {}),
    "backdoor_scaled": ("backdoor", {"scale": 3.0}),
    "backdoor_blend": ("backdoor", {"blend": 0.2}),  # a whole-image noise trigger
    "backdoor_big": ("backdoor", {"size": 5}),  # 25 pixels: over the trigger scan's budget
    "backdoor_evade": ("backdoor", {"evade": 0.5}),  # under the trigger scan's refusal share
    # ByzFL's attacks (dfl_ray.attacks.byzfl_attacks); the optimised ones search their factor
    # against ByzFL's NNM + trimmed mean, a surrogate of the robust rules here.
    "byzfl_alie": ("byzfl_alie", {}),
    "byzfl_alie_balanced": ("byzfl_alie", {"keep_sum": 10}),  # passes dfl_guard's balance test
    "byzfl_alie_balanced_half": ("byzfl_alie", {"keep_sum": 10, "tau": 0.75}),
    # passes dfl_guard's balance and sign tests: the shift mirrored on 1 - up of the coordinates
    "byzfl_alie_signs": ("byzfl_alie", {"keep_sum": 10, "up": 0.68}),
    "byzfl_ipm": ("byzfl_ipm", {}),
    "byzfl_opt_alie": ("byzfl_opt_alie", {}),
    "byzfl_opt_ipm": ("byzfl_opt_ipm", {}),
    "byzfl_mimic": ("byzfl_mimic", {}),
}
DEFENSES = ("dfl_guard", "dfl_shield", "dfl_sentinel", "half_fedavg", "median", "trimmed_mean",
            "centered_clipping", "multi_krum", "dfl_trust")
MALICIOUS = 3
NODES = 10


def store_trial(store: Path, name: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Add one trial to matrix.json and return every trial it now holds. The file is read
    again under a lock first, so that invocations sharing an --out folder add to each other's
    trials instead of writing over them; it is replaced whole, never left half written."""
    with open(store.with_name(store.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(store.read_text()) if store.is_file() else {}
        results[name] = summary
        partial = store.with_name(store.name + ".partial")
        partial.write_text(json.dumps(results, indent=1, sort_keys=True))
        partial.replace(store)
    return results


def discard_chains(out: Path, name: str) -> int:
    """Remove trial `name`'s chain stores (`OUT/NAME/chains`) once its summary is in
    matrix.json, and return the bytes freed: each trial's chains and checkpoints take about
    150 MB, and a full matrix of them tens of GB, while the table reads only the summary."""
    chains = out / name / "chains"
    if not chains.is_dir():
        return 0
    size = sum(f.stat().st_size for f in chains.rglob("*") if f.is_file())
    shutil.rmtree(chains)
    return size


def trial_name(part: str, attack: str, defense: str, seed: int, malicious: int = MALICIOUS,
               shards: int | None = None) -> str:
    """The trial's run folder and matrix.json key; a count of attackers other than the default
    is part of it (`__f2`), and `none` (no attacker) has one trial whatever the count. With
    `shards` (--partition-seed) set, `__p<shards>` names the fixed shards."""
    count = "" if malicious == MALICIOUS or attack == "none" else f"__f{malicious}"
    fixed = "" if shards is None else f"__p{shards}"
    return f"{part}__{attack}__{defense}{count}{fixed}__s{seed}"


def trial_config(args: argparse.Namespace, part: str, attack: str, defense: str, seed: int,
                 cpus_per_host: float, malicious: int = MALICIOUS) -> dict[str, Any]:
    """The config of one trial: `malicious` attackers, the last nodes; attack "removed" is the
    run with those nodes and their shards taken out (the honest nodes alone)."""
    shards = args.partition_seed
    name = trial_name(part, attack, defense, seed, malicious, shards)
    removed = attack == "removed"
    kind, params = ("none", {}) if removed else ATTACKS[attack]
    last = list(range(NODES - malicious, NODES))
    defense_part, training_part = spec_sections(defense)
    return {
        "experiment": {"name": name, "out": str(args.out), "rounds": args.rounds,
                       "eval_every": args.eval_every, "seed": seed, "overwrite": True,
                       "progress": False, "trace": bool(getattr(args, "trace", False))},
        "data": {"data_dir": args.data_dir, **PARTITIONS[part],
                 **({} if shards is None else {"partition_seed": shards})},
        "attack": {"kind": kind, "malicious": 0 if kind == "none" else malicious,
                   "params": dict(params)},
        "topology": {"absent": last if removed else []},
        "defense": defense_part,
        "training": training_part,
        "runtime": {"hosts": args.hosts, "cpus_per_host": cpus_per_host},
    }


NODE_KEYS = ("momentum", "accept", "probe_classes", "trigger_scan", "trigger_refuse", "trigger_gap",
             "trigger_budget", "trigger_steps", "trigger_share")
"""Keys of a defense spec that are `defense.*` settings of every node, not rule parameters."""

TRAINING_KEYS = ("grad_clip", "max_loss_rise", "max_move")
"""Keys of a defense spec that are `training.*` settings of every node (local SGD)."""


def spec_sections(defense: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`rule` or `rule:name=value,...` (a rule with parameters) as config (defense, training)
    sections; `momentum`, `accept`, `probe_classes` and `trigger_*` set those `defense.*` keys,
    `grad_clip`, `max_loss_rise` and `max_move` set those `training.*` keys, every other name
    is a rule parameter."""
    rule, _, params = defense.partition(":")
    section: dict[str, Any] = {"rule": rule, "params": {}}
    training: dict[str, Any] = {}
    for item in filter(None, params.split(",")):
        key, _, value = item.partition("=")
        if key in NODE_KEYS:
            if key == "probe_classes":
                section[key] = value
            else:
                section[key] = int(value) if key == "trigger_steps" else float(value)
        elif key in TRAINING_KEYS:
            training[key] = float(value)
        else:
            section["params"][key] = float(value)
    return section, training


def run_trial(config: Mapping[str, Any]) -> dict[str, Any]:
    """One trial, in whatever process runs it (a Ray task or the driver)."""
    return run_experiment(config_from_dict(dict(config)), quiet=True)


def check_trial_code(name: str, summary: Mapping[str, Any]) -> None:
    """Raise CodeMismatchError when trial `name` ran dfl_ray code other than this script's:
    its Ray workers import from this process's working directory, which may hold another
    checkout than the one this script imported."""
    mine = describe()
    ran = summary.get("environment", {}).get("dfl_ray")
    if ran != mine["fingerprint"]:
        raise CodeMismatchError(
            f"trial {name} ran dfl_ray {ran}, but this script imports {mine['fingerprint']} from "
            f"{mine['path']}: Ray workers import from the working directory ({os.getcwd()}), "
            "so run the script from the checkout it is in, or from outside any checkout; the "
            "trial was not stored")


def trials(args: argparse.Namespace) -> list[tuple[str, str, str, int, int]]:
    """(partition, attack, defense, seed, attackers) of every trial selected, `none` once."""
    out = []
    for part in args.partitions:
        for seed in args.seeds:
            for defense in args.defenses:
                for attack in [*args.attacks, *([] if args.no_removed else ["removed"])]:
                    for malicious in args.malicious[:1] if attack == "none" else args.malicious:
                        out.append((part, attack, defense, seed, malicious))
    return out


def summarize(results: Mapping[str, Any], args: argparse.Namespace) -> tuple[str, list[Any]]:
    """The markdown table and the heatmap's rows (row label, defense, worst gap)."""
    lines = ["| partition | attack | attackers | defense | honest mean (mean / worst over seeds) | "
             "gap to removed, same seed (mean / worst) | backdoor success (mean / worst) | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    heat: list[Any] = []
    counts = args.malicious
    for part in args.partitions:
        for attack in [*args.attacks, "removed"]:
            for malicious in counts[:1] if attack == "none" else counts:
                for defense in args.defenses:
                    accs, gaps, bds, seeds = [], [], [], []
                    for seed in args.seeds:
                        s = results.get(trial_name(part, attack, defense, seed, malicious,
                                                   args.partition_seed))
                        if s is None:
                            continue
                        seeds.append(seed)
                        accs.append(s["honest_accuracy_final"])
                        removed = results.get(trial_name(part, "removed", defense, seed,
                                                         malicious, args.partition_seed))
                        if removed is not None and attack != "removed":
                            gaps.append(s["honest_accuracy_final"]
                                        - removed["honest_accuracy_final"])
                        if s.get("backdoor_success") is not None:
                            bds.append(s["backdoor_success"])
                    if not accs:
                        continue
                    gap = f"{np.mean(gaps):+.3f} / {min(gaps):+.3f}" if gaps else "-"
                    bd = f"{np.mean(bds):.3f} / {max(bds):.3f}" if bds else "-"
                    who = "0" if attack == "none" else (
                        f"{malicious} removed" if attack == "removed" else str(malicious))
                    lines.append(f"| {part} | {attack} | {who} | {defense} | {np.mean(accs):.3f} / "
                                 f"{min(accs):.3f} | {gap} | {bd} | {','.join(map(str, seeds))} |")
                    if gaps:
                        label = f"{part} {attack}" + (
                            "" if malicious == MALICIOUS or attack == "none" else f" f={malicious}")
                        heat.append((label, defense, min(gaps)))
    return "\n".join(lines), heat


def results_section(counts: list[int]) -> tuple[str, str]:
    """The docs/results.md section (name, title) a matrix writes: its own for other counts of
    attackers, so that it leaves the main (3-attacker) table in place."""
    if counts == [MALICIOUS]:
        return "attack_matrix", "Attack matrix"
    return (f"attack_matrix_f{'_'.join(map(str, counts))}",
            f"Attack matrix with {' or '.join(map(str, counts))} attackers")


def plot(heat: list[Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(dict.fromkeys(h[0] for h in heat))
    cols = list(dict.fromkeys(h[1] for h in heat))
    grid = np.full((len(rows), len(cols)), np.nan)
    for row, col, value in heat:
        grid[rows.index(row), cols.index(col)] = value
    fig, ax = plt.subplots(figsize=(max(6.0, 3.0 + 1.3 * len(cols)), 1.5 + 0.4 * len(rows)))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=-0.2, vmax=0.01, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:+.3f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="gap")
    ax.set_title("honest mean - attackers removed (same seed),\nworst over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="data folder (default: $DFL_DATA_DIR, else the user cache folder)")
    parser.add_argument("--out", type=Path, default=Path("runs/matrix"),
                        help="folder for the run folders, matrix.json/.md/.png (default: runs/matrix)")
    parser.add_argument("--rounds", type=int, default=40, help="sync rounds per trial (default: 40)")
    parser.add_argument("--eval-every", type=int, default=10,
                        help="evaluate every this many rounds (default: 10)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of every cell (default: 0 1 2)")
    parser.add_argument("--partition-seed", type=int, default=None, metavar="N",
                        help="hold the shards of every trial at seed N (data.partition_seed), "
                             "so that --seeds vary only the initial model, training order, keys "
                             "and attacks: how far a cell moves on the same shards; trials are "
                             "named ...__pN__s<seed> (default: the shards follow --seeds)")
    parser.add_argument("--hosts", type=int, default=2, help="host actors per trial (default: 2)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="trials at a time, as Ray tasks (default: 1, one after the other)")
    parser.add_argument("--partitions", nargs="+", default=["dirichlet0.1", "labels2"],
                        choices=list(PARTITIONS), help="partitions (default: dirichlet0.1 labels2)")
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS),
                        help="attacks (default: the whole suite)")
    parser.add_argument("--defenses", nargs="+", default=["dfl_guard", "dfl_shield"],
                        help=f"defenses, each a rule ({', '.join(DEFENSES)}) or a rule with "
                             "parameters, rule:name=value,... (momentum=B, accept=T, probe_classes=own, "
                             "grad_clip=G, max_loss_rise=R and max_move=M there set "
                             "defense.momentum, defense.accept, defense.probe_classes and those "
                             "training.* keys; "
                             "default: dfl_guard dfl_shield)")
    parser.add_argument("--malicious", type=int, nargs="+", default=[MALICIOUS],
                        help=f"attackers per trial, the last nodes; several counts run each "
                             f"attack with each (default: {MALICIOUS}, nodes 7-9)")
    parser.add_argument("--no-removed", action="store_true", help="skip the attackers-removed runs")
    parser.add_argument("--trace", action="store_true",
                        help="each trial writes its aggregation trace (experiment.trace) to "
                             "<trial>/aggregations.csv, for experiments/probe_trace.py")
    parser.add_argument("--keep-chains", action="store_true",
                        help="keep each trial's chain stores (OUT/NAME/chains, about 150 MB a "
                             "trial); by default they are removed once the trial's summary is "
                             "stored, since the table reads only the summary")
    parser.add_argument("--rerun", action="store_true", help="rerun trials already in matrix.json")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: tabulate the selected cells already in matrix.json")
    add_results_argument(parser)
    parser.add_argument("--section", nargs=2, metavar=("NAME", "TITLE"), default=None,
                        help="with --write-results, the docs/results.md section to write "
                             "(default: attack_matrix, or attack_matrix_f... for other "
                             "--malicious counts), so that a partial matrix leaves the main "
                             "table in place")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be >= 1")
    if args.section and not args.write_results:
        parser.error("--section names the docs/results.md section --write-results writes; "
                     "give --write-results too")
    if args.section:
        try:
            check_section_name(args.section[0])
        except ValueError as exc:
            parser.error(f"--section: {exc}")
    args.malicious = sorted(set(args.malicious))
    bad = [m for m in args.malicious if not 1 <= m < NODES // 2]
    if bad:
        parser.error(f"--malicious {bad[0]}: attackers must number 1 to {NODES // 2 - 1} "
                     f"(a minority of the {NODES} nodes)")
    for defense in args.defenses:
        try:
            section, training = spec_sections(defense)
            config_from_dict({"defense": section, "training": training})
        except ValueError as exc:
            parser.error(f"--defenses {defense}: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "matrix.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.is_file() else {}
    todo = [] if args.table_only else [
        t for t in trials(args)
        if args.rerun or trial_name(*t, shards=args.partition_seed) not in results]
    cpus = float(os.cpu_count() or 1)
    cpus_per_host = max(cpus / (args.parallel * args.hosts), 0.01)

    def keep(name: str, summary: dict[str, Any], seconds: float, finished: int) -> None:
        check_trial_code(name, summary)
        results.update(store_trial(store, name, summary))
        if not args.keep_chains:
            discard_chains(args.out, name)
        bd = summary.get("backdoor_success")
        print(f"[{finished}/{len(todo)}] {name:50s} honest {summary['honest_accuracy_final']:.4f}"
              + (f" backdoor {bd:.3f}" if bd is not None else "") + f" {seconds:.0f} s", flush=True)

    if todo:
        print(f"{len(todo)} trials to run, {min(args.parallel, len(todo))} at a time; each line "
              f"below is one that finished", flush=True)
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 num_cpus=int(cpus))  # a Ray of its own, not whatever local Ray is running
    try:
        remote = ray.remote(num_cpus=0)(run_trial)
        pending: dict[Any, tuple[str, float]] = {}
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < args.parallel:
                part, attack, defense, seed, malicious = queue.pop(0)
                cfg = trial_config(args, part, attack, defense, seed, cpus_per_host, malicious)
                pending[remote.remote(cfg)] = (cfg["experiment"]["name"], time.perf_counter())
            done, _ = ray.wait(list(pending), num_returns=1)
            name, began = pending.pop(done[0])
            keep(name, ray.get(done[0]), time.perf_counter() - began,
                 len(todo) - len(queue) - len(pending))
    except CodeMismatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if ray.is_initialized():
            ray.shutdown()
    table, heat = summarize(results, args)
    (args.out / "matrix.md").write_text(table + "\n")
    if heat:
        plot(heat, args.out / "matrix.png")
    print(table)
    if args.write_results:
        counts = " or ".join(map(str, args.malicious))
        who = ", ".join(f"{NODES - 1}" if m == 1 else f"{NODES - m}-{NODES - 1}"
                        for m in args.malicious)
        intro = (f"Honest-node mean final accuracy, {NODES} nodes on `dfl10`, {counts} colluding "
                 f"attackers (nodes {who}), {args.rounds} sync rounds, seeds "
                 f"{', '.join(map(str, args.seeds))}; every trial of {store}. Each cell is judged "
                 "against the run with the attackers and their shards removed, same partition, "
                 "defense and seed (\"gap\"): on some seeds the attackers' shards hold most of a "
                 "digit, and no defense can learn it back (Dirichlet(0.1), seed 2: the honest "
                 "nodes alone reached 0.863 with dfl_guard, measured on main before this "
                 "matrix). The >= 0.93 target is judged together with that run. Targets: "
                 "honest mean >= 0.93 and gap >= -0.01; backdoor success <= 0.05.")
        section, title = args.section or results_section(args.malicious)
        print(f"wrote {record_output(section, title, intro + chr(10) * 2 + table, markdown=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
