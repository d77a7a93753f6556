"""Faults against the default setting: a killed node, lost messages, a stalled node, a cut-off node.

    python experiments/faults.py --data-dir ../shared/data [--write-results]

Runs the default job (10 nodes, dfl10, 3 attackers, dfl_guard, 40 sync rounds) fault-free and
under each fault, in one invocation, and prints each final honest mean next to the fault-free
one with the issue's bound:

- kill: the process holding node 3 is SIGKILLed as its round 5 starts (`faults.kill 3@5`);
  Ray restarts it and it resumes from its chain; within 0.01 of fault-free;
- drop: every message is lost with probability 0.2 (`faults.drop 0.2`); within 0.02;
- stall: node 3's process is SIGSTOPped after round 5 for `--stall-s` seconds (60), then
  SIGCONTed; the rounds it is silent in must take no longer than their deadline + 10 %;
- partition: node 3 is cut off from every other node for rounds 10 to 19
  (`faults.partition 3@10-20`), then back; within 0.01.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from dfl_ray.config import ConfigError, add_config_arguments, config_from_args
from dfl_ray.data import DataNotFoundError
from dfl_ray.ledger import verify_chain
from dfl_ray.metrics import format_table
from dfl_ray.results import Tee, add_results_argument, record_output
from dfl_ray.runner import run_experiment

NODE = 3  # an honest node of the default job (attackers are 7, 8, 9)
SCENARIOS: dict[str, tuple[dict[str, Any], float | None]] = {
    # name: (faults section, largest allowed drop in the final honest mean)
    "fault_free": ({}, None),
    "kill": ({"kill": f"{NODE}@5"}, 0.01),
    "drop": ({"drop": 0.2}, 0.02),
    "stall": ({}, None),  # judged by its round times
    "partition": ({"partition": f"{NODE}@10-20"}, 0.01),
}
STALL_AFTER = 5


class Staller:
    """SIGSTOPs node `NODE`'s host after round `STALL_AFTER`, SIGCONTs it `seconds` later."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.pid: int | None = None
        self.timer: threading.Timer | None = None

    def __call__(self, net: Any, round_index: int) -> None:
        if round_index != STALL_AFTER:
            return
        self.pid = net.host_pids()[net.host_of[NODE]]
        os.kill(self.pid, signal.SIGSTOP)
        self.timer = threading.Timer(self.seconds, self.resume)
        self.timer.start()

    def resume(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)


def stalled_rounds(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The sync rounds that ended with the stalled node down."""
    return [r for r in summary["faults"]["rounds"] if NODE in r["down"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {', '.join(SCENARIOS)} (fault_free is "
                             "always run: the others are compared with it)")
    parser.add_argument("--stall-s", type=float, default=60.0,
                        help="seconds the stalled node stays stopped (default 60)")
    parser.add_argument("--out-dir", default="runs/faults", help="parent of the run folders")
    add_results_argument(parser)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    chosen = ["fault_free"] + [s for s in args.scenarios.split(",") if s and s != "fault_free"]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")

    rows, results = [], {}
    with Tee() as tee:
        for name in chosen:
            faults, _ = SCENARIOS[name]
            base = {"experiment": {"name": name, "out": args.out_dir, "overwrite": True,
                                   "progress": False},
                    "faults": dict(faults)}
            try:
                config = config_from_args(args, base)
            except ConfigError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            staller = Staller(args.stall_s) if name == "stall" else None
            print(f"{name}: running {config.experiment.rounds} rounds ...", flush=True)
            try:
                summary = run_experiment(config, quiet=True, on_round=staller)
            except DataNotFoundError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            finally:
                if staller is not None and staller.timer is not None:
                    staller.timer.join()
            run_dir = Path(config.experiment.out) / config.experiment.name
            chains = sorted((run_dir / "chains").iterdir())
            for chain in chains:
                verify_chain(chain)  # raises on the first problem
            results[name] = summary
            f = summary["faults"]
            rows.append({
                "scenario": name,
                "honest mean": summary["honest_accuracy_final"],
                "down/restarted/back": f"{f['down']}/{f['restarted']}/{f['back']}",
                "messages lost": f["fault_dropped"] + f["fault_cut"] + f["dropped_to_down_nodes"],
                "chains verified": len(chains),
                "ledger %": round(100 * summary["ledger_time_share"], 2),
                "checkpoint %": round(100 * summary["checkpoint_time_share"], 2),
                "wall s": round(summary["wall_seconds"], 1),
            })
        print()
        print(format_table(rows, list(rows[0])))
        print()
        base_acc = results["fault_free"]["honest_accuracy_final"]
        ok = True
        for name in chosen[1:]:
            summary = results[name]
            _, bound = SCENARIOS[name]
            if bound is not None:
                gap = base_acc - summary["honest_accuracy_final"]
                met = gap <= bound
                print(f"{name}: {summary['honest_accuracy_final']:.4f} vs fault-free "
                      f"{base_acc:.4f}: {gap:+.4f} below (bound {bound}) -> "
                      f"{'met' if met else 'NOT met'}")
            else:
                stalled = stalled_rounds(summary)
                worst = max(stalled, key=lambda r: r["seconds"] / r["deadline_s"], default=None)
                met = worst is not None and worst["seconds"] <= 1.1 * worst["deadline_s"]
                if worst is None:
                    print(f"{name}: the stalled node was never marked down -> NOT met")
                else:
                    normal = [r["seconds"] for r in summary["faults"]["rounds"] if not r["down"]]
                    print(f"{name}: node {NODE} down in {len(stalled)} rounds; slowest of them "
                          f"{worst['seconds']:.1f} s against its deadline "
                          f"{worst['deadline_s']:.1f} s (bound: deadline + 10 %) -> "
                          f"{'met' if met else 'NOT met'}; rounds without faults: median "
                          f"{sorted(normal)[len(normal) // 2]:.1f} s; final honest mean "
                          f"{summary['honest_accuracy_final']:.4f}")
            ok = ok and met
    if args.write_results:
        print(f"wrote {record_output('faults', 'Faults', tee.text)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
