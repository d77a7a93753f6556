"""The experiment driver: builds a DFL network on Ray from a Config, runs it, records everything.

This is the only module that calls `ray.init`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch

from dfl_ray.config import Config, ConfigError, add_config_arguments, config_from_args, load_yaml
from dfl_ray.data import DataNotFoundError, label_histogram, load_dataset, partition
from dfl_ray.ledger import checkpoint_turn
from dfl_ray.ledger.store import DB_NAME
from dfl_ray.metrics import RunRecorder, TraceWriter, format_table
from dfl_ray.models.flat import ModelSpec, model_to_vector
from dfl_ray.models.registry import build_model
from dfl_ray.node.build import make_genesis
from dfl_ray.node.learner import EXPLODED
from dfl_ray.results import environment
from dfl_ray.timing import CATEGORIES
from dfl_ray.topology import build_topology, neighbors


class RunError(RuntimeError):
    """The run cannot start; the message says why and what to change."""


def prepare_run_dir(config: Config) -> Path:
    """The run folder <out>/<name>, refusing to mix a new run into an old one's chains."""
    run_dir = Path(config.experiment.out) / config.experiment.name
    if run_dir.exists() and any(run_dir.iterdir()):
        if not config.experiment.overwrite:
            raise RunError(
                f"run folder {run_dir} already exists; pass --overwrite true to replace it "
                "or choose another --name"
            )
        for child in ("chains", "faults", "metrics.csv", "summary.json", "accuracy.png"):
            path = run_dir / child
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        for events in run_dir.glob("events.out.tfevents*"):
            events.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def init_ray(config: Config) -> bool:
    """Start or join Ray unless it is already up; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    # Without an address, a Ray of its own: a bare ray.init() would join whatever local Ray
    # another process started last, and die with it.
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                              "address": config.runtime.address or "local"}
    if not config.runtime.address and config.runtime.num_cpus:
        kwargs["num_cpus"] = config.runtime.num_cpus
    ray.init(**kwargs)
    return True


def summarize_stats(
    stats: Mapping[int, Mapping[str, Any]], attackers: set[int], addresses: Mapping[int, str]
) -> dict[str, Any]:
    """Totals over nodes: rejections by reason, busy seconds by category, reputations by role."""
    rejected: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    counters: Counter[str] = Counter()
    rep_attacker: list[float] = []
    rep_honest: list[float] = []
    attacker_addrs = {addresses[a] for a in attackers}
    for node, st in stats.items():
        rejected.update(st["rejected"])
        seconds.update(st["seconds"])
        counters.update(st["counters"])
        if node in attackers:
            continue
        for addr, rep in st["reputations"].items():
            (rep_attacker if addr in attacker_addrs else rep_honest).append(rep)
    busy = sum(seconds.get(c, 0.0) for c in CATEGORIES)
    staleness: Counter[int] = Counter()
    per_node: dict[int, dict[str, Any]] = {}
    for node, st in sorted(stats.items()):
        hist = {int(k): v for k, v in st.get("staleness", {}).items()}
        staleness.update(hist)
        per_node[node] = {
            "rounds": st.get("rounds", 0),
            "waited_s": st.get("waited_s", 0.0),
            "stragglers": st.get("stragglers", 0),
            "gave_up": st.get("gave_up", 0),
            "short": st.get("short", 0),
            "received": st["counters"].get("accepted", 0),
            "aggregations": st["counters"].get("aggregations", 0),
            "stale_dropped": st["counters"].get("stale_dropped", 0),
            "reused": st["counters"].get("reused", 0),
            "retrained": st["counters"].get("retrained", 0),
            "diverged": st["counters"].get("diverged", 0),
            **staleness_stats(hist),
        }
    return {
        "per_node": per_node,
        "staleness": {**staleness_stats(staleness),
                      "histogram": {str(k): v for k, v in sorted(staleness.items())}},
        "rejected": dict(sorted(rejected.items())),
        "seconds": {c: seconds.get(c, 0.0) for c in CATEGORIES},
        "busy_seconds": busy,
        "ledger_time_share": seconds.get("ledger", 0.0) / busy if busy > 0 else 0.0,
        "checkpoint_time_share": seconds.get("checkpoint", 0.0) / busy if busy > 0 else 0.0,
        "counters": dict(sorted(counters.items())),
        "reputation_attacker_mean": float(np.mean(rep_attacker)) if rep_attacker else None,
        "reputation_honest_mean": float(np.mean(rep_honest)) if rep_honest else None,
        "heights": {n: st["height"] for n, st in sorted(stats.items())},
    }


def staleness_stats(histogram: Mapping[int, int]) -> dict[str, float]:
    """Mean and largest staleness (rounds between a model's publication and its aggregation)."""
    used = sum(histogram.values())
    if not used:
        return {"staleness_mean": 0.0, "staleness_max": 0}
    mean = sum(k * v for k, v in histogram.items()) / used
    return {"staleness_mean": float(mean), "staleness_max": max(k for k, v in histogram.items() if v)}


PER_NODE_SCALARS_MAX = 32
"""Networks up to this size also get TensorBoard curves per node (rounds, models, staleness)."""


def node_scalars(per_node: Mapping[int, Mapping[str, Any]]) -> dict[str, float]:
    """Scalars of each node's progress: local round, models received and aggregations, staleness.

    The spread over nodes always; one curve per node for networks up to `PER_NODE_SCALARS_MAX`.
    """
    out: dict[str, float] = {}
    if not per_node:
        return out
    for key in ("rounds", "received", "aggregations", "staleness_mean"):
        values = [float(p[key]) for p in per_node.values()]
        out[f"nodes/{key}_min"] = min(values)
        out[f"nodes/{key}_max"] = max(values)
    out["nodes/staleness_max"] = float(max(p["staleness_max"] for p in per_node.values()))
    out["nodes/waited_s_max"] = float(max(p["waited_s"] for p in per_node.values()))
    out["nodes/stale_dropped"] = float(sum(p["stale_dropped"] for p in per_node.values()))
    out["nodes/reused"] = float(sum(p["reused"] for p in per_node.values()))
    if len(per_node) <= PER_NODE_SCALARS_MAX:
        for node, p in per_node.items():
            for key in ("rounds", "received", "aggregations", "staleness_mean"):
                out[f"node_{node}/{key}"] = float(p[key])
    return out


def accuracy_scalars(accs: Mapping[int, float], attackers: set[int]) -> dict[str, float]:
    honest = [a for n, a in accs.items() if n not in attackers]
    bad = [a for n, a in accs.items() if n in attackers]
    out = {
        "accuracy/honest_mean": float(np.mean(honest)),
        "accuracy/honest_min": float(np.min(honest)),
        "accuracy/honest_max": float(np.max(honest)),
    }
    if bad:
        out["accuracy/attacker_mean"] = float(np.mean(bad))
    # With a backdoor attacker, evaluations carry its success rate (dfl_ray.node.group).
    rates = [rate for n, a in accs.items()
             if n not in attackers and (rate := getattr(a, "backdoor", None)) is not None]
    if rates:
        out["backdoor/honest_mean"] = float(np.mean(rates))
        out["backdoor/honest_max"] = float(np.max(rates))
    return out


def resume_round(run_dir: Path, nodes: int) -> int:
    """The round a resumed run starts from: the earliest local round any node's checkpoint
    reached (0 for a node that never wrote one)."""
    turns = []
    for n in range(nodes):
        folder = run_dir / "chains" / f"node_{n}"
        turns.append((checkpoint_turn(folder) or 0) if (folder / DB_NAME).exists() else 0)
    return min(turns)


def _environment_or_error() -> dict[str, str]:
    """`environment()` for a failed run's summary; reading it must never hide the run's error."""
    try:
        return environment()
    except Exception as exc:  # noqa: BLE001 - the summary names it instead
        return {"error": f"{type(exc).__name__}: {exc}"}


def run_experiment(config: Config, *, quiet: bool = False, resume: bool = False,
                   on_round: Callable[[Any, int], None] | None = None) -> dict[str, Any]:
    """Run one DFL experiment end to end; returns the summary also written to summary.json.

    `resume`: continue the run in the config's run folder from its chains (each node from its
    checkpoint) instead of starting a new one. Ctrl-C ends the run with `status: interrupted`
    and any error with `status: failed` and the error, in summary.json either way.
    `on_round(network, round_index)` is called after each sync round (to watch or disturb a run).
    """
    import ray

    from dfl_ray.actors.network import FINAL_RECOVER_WAIT_S, Network

    started = time.perf_counter()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    cfg = config
    attackers = set(cfg.attackers)
    n = cfg.topology.nodes

    data = load_dataset(cfg.data.dataset, cfg.data.data_dir, download=cfg.data.download)
    labels = data.train_labels.numpy()
    shards = partition(
        labels, n, kind=cfg.data.partition,
        seed=cfg.experiment.seed if cfg.data.partition_seed is None else cfg.data.partition_seed,
        val_fraction=cfg.data.val_fraction, alpha=cfg.data.alpha,
        labels_per_node=cfg.data.labels_per_node,
    )
    graph = build_topology(
        cfg.topology.kind, n, degree=cfg.topology.degree, p=cfg.topology.p,
        edges=cfg.topology.edges or None, seed=cfg.experiment.seed,
    )
    if cfg.topology.absent:
        # Drop the absent nodes and their shards; renumber the rest 0..k-1 in order.
        present = [i for i in range(n) if i not in set(cfg.topology.absent)]
        graph = nx.convert_node_labels_to_integers(graph.subgraph(present).copy(), ordering="sorted")
        if not nx.is_connected(graph):
            raise RunError(f"removing nodes {sorted(cfg.topology.absent)} disconnects the graph")
        shards = [shards[i] for i in present]
        n = len(present)
    peers = neighbors(graph)
    start_round = 0
    if resume:
        run_dir = Path(cfg.experiment.out) / cfg.experiment.name
        if not (run_dir / "chains").is_dir():
            raise RunError(f"cannot resume {run_dir}: it holds no chains/ folder")
        start_round = resume_round(run_dir, n)
    else:
        run_dir = prepare_run_dir(cfg)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    (run_dir / "partition.json").write_text(json.dumps({
        "attackers": sorted(attackers),
        "label_histograms": {
            str(i): label_histogram(labels, s.all, data.num_classes).tolist() for i, s in enumerate(shards)
        },
        "train_sizes": [len(s.train) for s in shards],
        "val_sizes": [len(s.val) for s in shards],
        "edges": sorted(graph.edges()),
    }, indent=1))

    torch.manual_seed(cfg.experiment.seed)
    shape = data.image_shape
    model = build_model(
        cfg.model.name, in_channels=1 if len(shape) == 2 else shape[0],
        num_classes=data.num_classes, image_size=shape[-1],
    )
    spec = ModelSpec.of(model, cfg.model.name)
    initial = model_to_vector(model)
    genesis = make_genesis(cfg, spec, initial, n)
    say(f"dfl_ray: {data.describe()}; {n} nodes on {cfg.topology.kind} "
        f"({graph.number_of_edges()} edges), {len(attackers)} x {cfg.attack.kind} attackers "
        f"{sorted(attackers)}, defense {cfg.defense.rule}, {cfg.runtime.schedule} schedule, "
        f"{cfg.experiment.rounds} rounds -> {run_dir}")

    if resume:
        say(f"dfl_ray: resuming {run_dir} at round {start_round} of {cfg.experiment.rounds}")

    started_ray = init_ray(cfg)
    recorder = RunRecorder(run_dir)
    tracer = TraceWriter(run_dir) if cfg.experiment.trace else None
    net = None
    progress = {"rounds": start_round}
    try:
        net = Network(
            cfg, shards=shards, neighbors=peers, genesis=genesis, spec=spec,
            arrays={
                "train_images": data.train_images.numpy(), "train_labels": labels,
                "test_images": data.test_images.numpy(), "test_labels": data.test_labels.numpy(),
                "initial": initial,
            },
            run_dir=str(run_dir),
            log=_log_line,
        )
        accs, run_seconds = _drive(net, cfg, recorder, attackers, started, quiet,
                                   start_round, progress, on_round, tracer)
        if net.restarting():  # a host still restarting: let it rejoin, so its nodes count
            net.recover(wait_s=FINAL_RECOVER_WAIT_S)
            accs = net.evaluate()
        stats = net.stats()
        totals = summarize_stats(stats, attackers, net.addresses)
        locations = net.node_locations()
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        recorder.write_summary({
            "name": cfg.experiment.name,
            "status": "interrupted" if interrupted else "failed",
            "error": None if interrupted else f"{type(exc).__name__}: {exc}",
            "rounds": cfg.experiment.rounds,
            "rounds_completed": progress["rounds"],
            "resumed_from_round": start_round if resume else None,
            "faults": _faults_or_none(net),
            "environment": _environment_or_error(),
            "wall_seconds": time.perf_counter() - started,
        })
        if not quiet:
            print(f"\nrun {'interrupted' if interrupted else 'failed'} after "
                  f"{progress['rounds']} complete rounds; summary in {run_dir / 'summary.json'}; "
                  f"continue it with: dfl-ray run --resume {run_dir}", file=sys.stderr)
        raise
    finally:
        if net is not None:
            with contextlib.suppress(Exception):  # a dying cluster must not hide the cause
                net.shutdown()
        recorder.close()
        if tracer is not None:
            tracer.close()
        if started_ray:
            ray.shutdown()

    final = accuracy_scalars(accs, attackers)
    summary = {
        "name": cfg.experiment.name,
        "status": "ok",
        "error": None,
        "rounds_completed": progress["rounds"],
        "resumed_from_round": start_round if resume else None,
        "faults": {**net.fault_summary(), **{
            k: totals["counters"].get(k, 0)
            for k in ("fault_dropped", "fault_cut", "fault_duplicated", "restored")}},
        "honest_accuracy_final": final["accuracy/honest_mean"],
        "honest_accuracy_min_final": final["accuracy/honest_min"],
        "honest_accuracy_max_final": final["accuracy/honest_max"],
        "attacker_accuracy_final": final.get("accuracy/attacker_mean"),
        "backdoor_success": final.get("backdoor/honest_mean"),
        "backdoor_success_max": final.get("backdoor/honest_max"),
        "node_accuracy_final": {str(k): v for k, v in sorted(accs.items())},
        "rounds": cfg.experiment.rounds,
        "schedule": cfg.runtime.schedule,
        "environment": environment(),
        "wall_seconds": time.perf_counter() - started,
        "run_seconds": run_seconds,
        "slow_nodes": sorted(cfg.runtime.slow_nodes),
        "slowdown": cfg.runtime.slowdown,
        "per_node": {str(k): v for k, v in totals["per_node"].items()},
        "staleness": totals["staleness"],
        "ledger_time_share": totals["ledger_time_share"],
        "checkpoint_time_share": totals["checkpoint_time_share"],
        "busy_seconds": totals["busy_seconds"],
        "seconds_by_category": totals["seconds"],
        "rejected": totals["rejected"],
        "counters": totals["counters"],
        "reputation_attacker_mean": totals["reputation_attacker_mean"],
        "reputation_honest_mean": totals["reputation_honest_mean"],
        "chain_heights": {str(k): v for k, v in totals["heights"].items()},
        "placement": {str(k): v for k, v in sorted(locations.items())},
        "dataset": data.name,
        "n_train": data.n_train,
        "n_test": data.n_test,
        "nodes": n,
        "attackers": sorted(attackers),
        "attack": cfg.attack.kind,
        "defense": cfg.defense.rule,
        "partition": cfg.data.partition,
    }
    recorder.write_summary(summary)
    recorder.plot(run_dir / "accuracy.png", title=f"{cfg.experiment.name}: test accuracy")
    if not quiet:
        slow = set(cfg.runtime.slow_nodes)
        rows = [
            {"node": k, "role": ("attacker" if k in attackers else "honest")
             + (" (slow)" if k in slow else ""),
             "train": len(shards[k].train), "rounds": totals["per_node"][k]["rounds"],
             "received": totals["per_node"][k]["received"],
             "aggregations": totals["per_node"][k]["aggregations"],
             "accuracy": v, "blocks": totals["heights"][k] + 1}
            for k, v in sorted(accs.items())
        ]
        say(format_table(rows, ["node", "role", "train", "rounds", "received", "aggregations",
                                "accuracy", "blocks"]))
        say(f"honest accuracy: mean {summary['honest_accuracy_final']:.4f}, "
            f"min {summary['honest_accuracy_min_final']:.4f}; "
            f"ledger time share {100 * summary['ledger_time_share']:.2f} % (checkpoints "
            f"{100 * summary['checkpoint_time_share']:.2f} %); "
            f"wall {summary['wall_seconds']:.1f} s (rounds {summary['run_seconds']:.1f} s); "
            f"rejected {summary['rejected']}")
        if cfg.runtime.schedule == "async":
            st = summary["staleness"]
            say(f"staleness of aggregated models: mean {st['staleness_mean']:.2f}, max "
                f"{st['staleness_max']} rounds; dropped as stale "
                f"{summary['counters'].get('stale_dropped', 0)}; latest models reused "
                f"{summary['counters'].get('reused', 0)}")
        retrained = summary["counters"].get("retrained", 0)
        if retrained:
            t = cfg.training
            say(f"local training diverged {retrained} times (NaN or infinite weights, an update "
                f"over {EXPLODED:g} x the model's norm or over training.max_move = "
                f"{t.max_move:g} x the node's recent ones, or a validation loss over "
                f"training.max_loss_rise = {t.max_loss_rise:g} nats above the round start's) "
                f"and was tried again; {summary['counters'].get('diverged', 0)} times it "
                f"diverged again and the node kept its round-start model")
        say(f"outputs in {run_dir}; view the curves with: tensorboard --logdir {run_dir}")
    return summary


def _log_line(line: str) -> None:
    """A log line that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _faults_or_none(net: Any) -> dict[str, Any] | None:
    if net is None:
        return None
    try:
        summary: dict[str, Any] = net.fault_summary()
    except Exception:  # the failure may have left the network half built
        return None
    return summary


def fault_scalars(net: Any, counters: Mapping[str, int]) -> dict[str, float]:
    """The faults so far as TensorBoard scalars: hosts down now, events, messages lost."""
    return {
        "faults/nodes_down": float(sum(len(net.groups[h]) for h in net.down)),
        "faults/down_events": float(net.fault_counts["down"]),
        "faults/restarts": float(net.fault_counts["restarted"]),
        "faults/back_events": float(net.fault_counts["back"]),
        "faults/messages_lost": float(counters.get("fault_dropped", 0)
                                      + counters.get("fault_cut", 0)
                                      + net.fault_counts["dropped_to_down"]),
        "faults/messages_duplicated": float(counters.get("fault_duplicated", 0)),
    }


def _drive(
    net: Any, cfg: Config, recorder: RunRecorder, attackers: set[int], started: float,
    quiet: bool, start_round: int = 0, progress: dict[str, int] | None = None,
    on_round: Callable[[Any, int], None] | None = None, tracer: TraceWriter | None = None,
) -> tuple[dict[int, float], float]:
    """Run the schedule, evaluating every eval_every rounds (and collecting the aggregation
    trace then, with `tracer`).

    Returns the final accuracies and the seconds the rounds took. In the async schedule the
    driver only starts the hosts' loops, watches their progress (the bar and the periodic
    evaluations) and stops them once every node that is not a straggler has run its rounds.
    """
    from tqdm import tqdm

    rounds = cfg.experiment.rounds
    progress = progress if progress is not None else {}
    bar = tqdm(total=rounds, initial=start_round, unit="round",
               disable=quiet or not cfg.experiment.progress, dynamic_ncols=True, file=sys.stderr)
    accs: dict[int, float] = {}

    def observe(step: int) -> None:
        nonlocal accs
        found = net.evaluate()
        if not any(n not in attackers for n in found):
            print(f"round {step}: no honest node answered the evaluation; nothing logged",
                  file=sys.stderr)
            return
        accs = found
        scalars = accuracy_scalars(accs, attackers)
        totals = summarize_stats(net.stats(), attackers, net.addresses)
        for reason, count in totals["rejected"].items():
            scalars[f"rejected/{reason}"] = float(count)
        for cat, sec in totals["seconds"].items():
            scalars[f"seconds/{cat}"] = sec
        scalars["ledger/time_share"] = totals["ledger_time_share"]
        scalars["checkpoint/time_share"] = totals["checkpoint_time_share"]
        for role in ("attacker", "honest"):
            value = totals[f"reputation_{role}_mean"]
            if value is not None:
                scalars[f"reputation/{role}_mean"] = value
        scalars.update(node_scalars(totals["per_node"]))
        scalars.update(fault_scalars(net, totals["counters"]))
        if net.round_seconds:
            scalars["time/round_s"] = net.round_seconds[-1]
        recorder.log(step, scalars, wall_seconds=time.perf_counter() - started)
        if tracer is not None:
            tracer.collect(net)
        bar.set_postfix(honest=f"{scalars['accuracy/honest_mean']:.3f}")

    began = time.perf_counter()
    run_seconds = 0.0
    stop = _InterruptFlag()
    try:
        if cfg.runtime.schedule == "sync":
            for r in range(start_round, rounds):
                stop.check()
                net.run_round(r)
                progress["rounds"] = r + 1
                if on_round is not None:
                    on_round(net, r)
                bar.update(1)
                if (r + 1) % cfg.experiment.eval_every == 0 or r + 1 == rounds:
                    run_seconds = time.perf_counter() - began
                    observe(r + 1)
        else:
            slow = set(cfg.runtime.slow_nodes)
            net.start_async(rounds)
            every = cfg.experiment.eval_every
            next_eval, done = (start_round // every + 1) * every, start_round
            while True:
                per_node, errors = net.async_progress()
                if errors:
                    raise RuntimeError(f"a host's async loop failed: {errors[0]}")
                # Stragglers and down nodes are not waited for (unless every node is one).
                paced = ([p for n, p in per_node.items() if n not in slow and not p["down"]]
                         or list(per_node.values()))
                now_done = min(p["rounds"] for p in paced)
                bar.update(max(now_done - done, 0))
                done = max(now_done, done)
                progress["rounds"] = done
                if all(p["finished"] for p in paced):
                    break
                if next_eval <= done < rounds:
                    observe(done)
                    next_eval = (done // cfg.experiment.eval_every + 1) * cfg.experiment.eval_every
                stop.check()
                time.sleep(ASYNC_POLL_S)  # the driver only watches; the nodes run on their own
            run_seconds = time.perf_counter() - began
            if not net.stop_async() and not quiet:
                print("warning: messages were still in flight when the async run stopped",
                      file=sys.stderr)
            observe(rounds)
    finally:
        stop.restore()
        bar.close()
    return accs, run_seconds


class _InterruptFlag:
    """Ctrl-C during a run, noted by a SIGINT handler and raised as KeyboardInterrupt between
    rounds: Ray's blocking calls may swallow a KeyboardInterrupt raised inside them. A second
    Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.set = False
        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def check(self) -> None:
        if self.set:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


ASYNC_POLL_S = 0.2
"""How often the driver reads the async run's progress."""


# ------------------------------------------------------------------ command line


def add_run_arguments(parser: argparse.ArgumentParser, base: Config | None = None) -> None:
    parser.add_argument(
        "--resume", metavar="RUN_DIR", default=None,
        help="continue an interrupted or failed run from its run folder (e.g. runs/NAME): its "
             "config.yaml, each node from its chain and checkpoint, metrics appended; flags "
             "given override the stored config (e.g. --rounds to extend it)")
    add_config_arguments(parser, base)


def _resume_base(run_dir: Path, base: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored config of the run folder `run_dir`, placed to write back into it."""
    stored = run_dir / "config.yaml"
    if not stored.is_file():
        raise ConfigError(f"cannot resume {run_dir}: {stored} does not exist (is it a run folder?)")
    tree: dict[str, Any] = {k: dict(v) for k, v in (base or {}).items()}
    for section, values in load_yaml(stored).items():
        tree.setdefault(section, {}).update(values or {})
    tree.setdefault("experiment", {}).update(out=str(run_dir.parent), name=run_dir.name)
    return tree


def run_command(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> int:
    resume = getattr(args, "resume", None)
    try:
        if resume:
            base = _resume_base(Path(resume), base)
        config = config_from_args(args, base)
        if resume and Path(config.experiment.out) / config.experiment.name != Path(resume):
            raise ConfigError("--resume takes the run folder itself; leave out --name and --out")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from dfl_ray.actors.network import PlacementError
    from dfl_ray.code import CodeMismatchError

    try:
        run_experiment(config, resume=bool(resume))
    except KeyboardInterrupt:
        return 130
    except (DataNotFoundError, RunError, ConfigError, PlacementError, CodeMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # partition/topology problems found once the data is known
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="run a DFL experiment", description="Run a DFL experiment on Ray.",
    )
    add_run_arguments(parser)
    parser.set_defaults(func=run_command)


os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
