"""Read runs' aggregation traces: who dfl_guard's tests let in, and what other probe limits would.

    python experiments/attack_matrix.py --data-dir ../shared/data --out runs/trace --trace \
        --seeds 2 --partitions labels2 --attacks gate_edge --defenses dfl_guard --no-removed
    python experiments/probe_trace.py runs/trace/labels2__gate_edge__dfl_guard__s2

Each run folder needs the `aggregations.csv` that `experiment.trace` writes and the
`partition.json` naming the attackers. Only what honest nodes aggregated is read. For each run
it prints, for honest and attacking senders: how many of their models got weight, passed the
tests before the probe, and passed the probe, and their probe rise above the round's typical
rise (the median, floored at 0) at a few percentiles; then the same per span of rounds; then a
replay of the probe's verdict under other limits (`--ratios`, `--slacks`, `--forgives`) on the
logged rises. The replay keeps the logged rises and the other tests' verdicts and reruns only
the probe and the reputations (beta, floor and initial as the run had them): it does not rerun
the training the other verdicts would have led to, so it reads how well a limit separates the
senders of one run, not what accuracy it would reach. The replay of the run's own limits is
printed first, beside what the run did, as a check of the replay.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dfl_ray.defense import rule_params  # noqa: E402
from dfl_ray.defense.guard import probe_limit, reputation_step  # noqa: E402
from dfl_ray.metrics import TRACE_HEADER, TRACE_NAME  # noqa: E402
from dfl_ray.results import Tee, add_results_argument, record_output  # noqa: E402

PERCENTILES = (50, 90, 97)
MEASURE_PERCENTILES = (1, 3, 10, 50, 90)
TESTS = ("gate", "opposition", "reversal", "balance", "sign")
"""dfl_guard's tests before the probe, in the order it runs them (each in the trace when on)."""


@dataclass(frozen=True)
class Offer:
    """One model an honest node aggregated, as its trace recorded it."""

    round: int
    receiver: int
    sender: int
    attacker: bool
    weight: float
    tests_passed: bool
    tests: dict[str, bool]
    """Each test's own verdict, for the tests that ran."""
    rise: float
    """Probe rise (NaN where the probe did not run: the model failed a test before it)."""
    typical: float
    limit: float
    skew: float
    """The output-layer skew the reversal test read (NaN where the test was off)."""
    measures: dict[str, float]
    """Every measure the trace logged of this offer, by name."""


def read_run(run: Path) -> tuple[list[Offer], dict[str, Any]]:
    """The offers an honest node aggregated in `run`, and the rule's parameters (defaults filled)."""
    trace, partition = run / TRACE_NAME, run / "partition.json"
    for path in (trace, partition):
        if not path.is_file():
            hint = " (run it with experiment.trace, or attack_matrix.py --trace)" \
                if path == trace else ""
            raise FileNotFoundError(f"{path} not found{hint}")
    attackers = set(json.loads(partition.read_text())["attackers"])
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() \
        else {}
    defense = (config or {}).get("defense", {})
    if defense.get("rule", "dfl_guard") != "dfl_guard":
        raise ValueError(f"{run}: the rule is {defense['rule']!r}; this reads dfl_guard's trace")
    params = {**rule_params("dfl_guard"), **(defense.get("params") or {})}
    rows: dict[tuple[int, int, int], dict[str, float]] = defaultdict(dict)
    with trace.open(newline="") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header != TRACE_HEADER:
            raise ValueError(f"{trace}: header {','.join(header)!r}, expected "
                             f"{','.join(TRACE_HEADER)!r}")
        for line in reader:
            try:
                r, receiver, sender, measure, value = line
                rows[(int(r), int(receiver), int(sender))][measure] = \
                    float(value) if value else math.nan
            except ValueError as exc:
                raise ValueError(f"{trace}, line {reader.line_num}: expected round, receiver, "
                                 f"sender, measure, value; got {line!r}") from exc
    offers = []
    for (r, receiver, sender), m in sorted(rows.items()):
        if receiver in attackers or "tests_passed" not in m:
            continue
        offers.append(Offer(r, receiver, sender, sender in attackers, m["weight"],
                            m["tests_passed"] > 0.0,
                            {t: m[t] > 0.0 for t in TESTS if t in m},
                            m.get("probe_rise", math.nan),
                            m.get("probe_typical", math.nan), m.get("probe_limit", math.nan),
                            m.get("reversal_skew", math.nan), m))
    return offers, params


def pct(values: Sequence[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return " ".join(f"{'-':>7}" for _ in PERCENTILES)
    return " ".join(f"{np.percentile(finite, q):>7.4f}" for q in PERCENTILES)


def describe(offers: Sequence[Offer], label: str, tests: Sequence[str]) -> str:
    """One line: offers, shares weighted / passing each test / past all of them / past the
    probe (of those past the tests), and the excess rise."""
    n = len(offers)
    if not n:
        return f"{label:<11}{0:>7}"
    weighted = sum(o.weight > 0.0 for o in offers) / n
    each = "".join(f"{sum(o.tests.get(t, True) for o in offers) / n:>{len(t) + 2}.3f}"
                   for t in tests)
    tested = [o for o in offers if o.tests_passed]
    probed = [o for o in tested if math.isfinite(o.rise) and o.rise <= o.limit]
    excess = [o.rise - o.typical for o in tested]
    return (f"{label:<11}{n:>7}{weighted:>10.3f}{each}{len(tested) / n:>7.3f}"
            f"{len(probed) / max(len(tested), 1):>7.3f}   {pct(excess)}")


def replay(offers: Iterable[Offer], params: dict[str, Any], *, ratio: float, slack: float,
           forgive: float) -> dict[bool, float]:
    """Share of the offers of honest (False) and attacking (True) senders that would get weight
    with the probe limit ratio x typical + slack and `forgive`, reputations rerun by dfl_guard's
    own `reputation_step` (its score test, `probe_scale` and kin counts left out: by default
    they zero no weight)."""
    reversal = float(params["reversal"])
    drop = reversal if params.get("reversal_drop") is None else float(params["reversal_drop"])
    cost = float(params.get("reversal_cost", 1.0))
    step = {k: params[k] for k in ("beta", "floor", "penalty", "entry")}
    reputation: dict[tuple[int, int], float] = {}
    got: dict[bool, list[bool]] = {False: [], True: []}
    aggregations: dict[tuple[int, int], list[Offer]] = defaultdict(list)
    for o in offers:
        aggregations[(o.round, o.receiver)].append(o)
    for (_, receiver), group in sorted(aggregations.items()):
        prior = np.array([reputation.get((receiver, o.sender), float(params["initial"]))
                          for o in group])
        tested = np.array([o.tests_passed for o in group])
        passed = tested & np.array([not math.isfinite(o.rise)
                                    or o.rise <= probe_limit(o.typical, ratio, slack)
                                    for o in group])
        # Read as reversed, yet above the drop level: weighed, and observes q = 0.
        marked = np.array([-drop <= o.skew < -reversal for o in group])
        # Failed the reversal test and no other test before the probe: observes (1 - cost) R.
        alone = np.array([not o.tests.get("reversal", True)
                          and all(v for t, v in o.tests.items() if t != "reversal")
                          for o in group])
        observed = np.where(alone, (1.0 - cost) * prior, (passed & ~marked).astype(np.float64))
        new, weights = reputation_step(prior, observed,
                                       passed | (tested & (prior >= forgive)), **step)
        for o, r, w in zip(group, new, weights, strict=True):
            reputation[(receiver, o.sender)] = float(r)
            got[o.attacker].append(bool(w > 0.0))
    return {k: float(np.mean(v)) if v else math.nan for k, v in got.items()}


def pooled_readings(offers: Iterable[Offer], attackers: int,
                    liars: bool) -> dict[bool, tuple[list[float], list[float]]]:
    """For honest (False) and attacking (True) senders: (each honest receiver's excess probe
    rise of their models, the median of those readings per round and sender).

    The median pools what every honest receiver read of one sender in one round, as a protocol
    in which receivers publish their readings would. With `liars`, the `attackers` colluders
    report too, each the extreme that helps them (-1 nat for a fellow attacker, +1 for an honest
    sender), the most a median can be moved by that many reports.
    """
    readings: dict[tuple[int, int], list[float]] = defaultdict(list)
    side: dict[int, bool] = {}
    for o in offers:
        if o.tests_passed and math.isfinite(o.rise):
            readings[(o.round, o.sender)].append(o.rise - o.typical)
            side[o.sender] = o.attacker
    out: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
    for (_, sender), values in readings.items():
        attacker = side[sender]
        reports = values + ([-1.0 if attacker else 1.0] * attackers if liars else [])
        out[attacker][0].extend(values)
        out[attacker][1].append(float(np.median(reports)))
    return out


def report(run: Path, args: argparse.Namespace) -> None:
    offers, params = read_run(run)
    late = [o for o in offers if o.round >= args.from_round]
    print(f"### {run.name}\n")
    print(f"rule parameters: probe {params['probe']}, probe_slack {params['probe_slack']}, "
          f"forgive {params['forgive']}, beta {params['beta']}, floor {params['floor']}; "
          f"offers to honest nodes from round {args.from_round} on\n")
    tests = [t for t in TESTS if any(t in o.tests for o in late)]
    print("shares of the offers: weighted, passing each test, passing all of them (all), "
          "and of those, passing the probe; probe rise above the typical one at percentiles")
    print(f"{'senders':<11}{'offers':>7}{'weighted':>10}{''.join(f'{t:>{len(t) + 2}}' for t in tests)}"
          f"{'all':>7}{'probe':>7}   excess p{'/p'.join(map(str, PERCENTILES))}")
    for attacker in (False, True):
        print(describe([o for o in late if o.attacker == attacker],
                       "attackers" if attacker else "honest", tests))
    if args.per_sender:
        print("\nper sender (a: attacker)")
        for sender in sorted({o.sender for o in late}):
            mine = [o for o in late if o.sender == sender]
            print(describe(mine, f"{sender}{' a' if mine[0].attacker else ''}", tests))
    print(f"\nper {args.span} rounds: typical rise (median), limit (median), share of the "
          "attackers' and the honest models past the tests that pass the probe")
    spans: dict[int, list[Offer]] = defaultdict(list)
    for o in offers:
        spans[o.round // args.span].append(o)
    for s, group in sorted(spans.items()):
        tested = [o for o in group if o.tests_passed and math.isfinite(o.rise)]
        shares = []
        for attacker in (False, True):
            mine = [o for o in tested if o.attacker == attacker]
            shares.append(np.mean([o.rise <= o.limit for o in mine]) if mine else math.nan)
        typical = np.median([o.typical for o in tested]) if tested else math.nan
        limit = np.median([o.limit for o in tested]) if tested else math.nan
        print(f"  rounds {s * args.span:>3}-{s * args.span + args.span - 1:<3} typical "
              f"{typical:.4f} limit {limit:.4f}  attackers {shares[1]:.2f}  honest {shares[0]:.2f}")
    if args.measures:
        print(f"\nlogged measures at percentiles p{'/p'.join(map(str, MEASURE_PERCENTILES))}")
        for name in args.measures:
            for attacker in (False, True):
                values = [o.measures.get(name, math.nan) for o in late if o.attacker == attacker]
                finite = [v for v in values if math.isfinite(v)]
                spread = " ".join(f"{np.percentile(finite, q):>8.4f}" for q in MEASURE_PERCENTILES) \
                    if finite else "not logged"
                print(f"  {name:<16}{'attackers' if attacker else 'honest':<11}{len(finite):>6}  "
                      f"{spread}")
    if args.pooled:
        colluders = len(json.loads((run / "partition.json").read_text())["attackers"])
        print("\npooled readings: excess probe rise as one receiver reads it, and the median of "
              "all honest receivers' readings of a sender in a round (with the colluders "
              "reporting extremes in their favour: 'pooled, lying'), p50/p90/p97, and the share "
              "of the attackers' readings above the honest ones' 90th / 97th percentile")
        for label, liars, index in (("one receiver", False, 0), ("pooled", False, 1),
                                    ("pooled, lying", True, 1)):
            pools = pooled_readings(late, colluders, liars)
            honest, attacking = pools[False][index], pools[True][index]
            if not honest or not attacking:
                print(f"  {label:<15} no readings of both kinds of sender")
                continue
            above = [float(np.mean(np.array(attacking) > np.percentile(honest, q)))
                     for q in (90, 97)]
            print(f"  {label:<15} honest {pct(honest)}  attackers {pct(attacking)}  "
                  f"above {above[0]:.2f} / {above[1]:.2f}")
    own = replay(late, params, ratio=float(params["probe"]), slack=float(params["probe_slack"]),
                 forgive=float(params["forgive"]))
    ran = {}
    for attacker in (False, True):
        mine = [o.weight > 0.0 for o in late if o.attacker == attacker]
        ran[attacker] = float(np.mean(mine)) if mine else math.nan
    print(f"\nreplay: share of offers weighted, honest / attackers (the run's own limits, "
          f"replayed {own[False]:.3f} / {own[True]:.3f}, as run {ran[False]:.3f} / "
          f"{ran[True]:.3f})")
    print(f"{'ratio':>7}{'slack':>8}{'forgive':>9}{'honest':>9}{'attackers':>11}")
    for ratio, slack, forgive in itertools.product(args.ratios, args.slacks, args.forgives):
        got = replay(late, params, ratio=ratio, slack=slack, forgive=forgive)
        print(f"{ratio:>7g}{slack:>8g}{forgive:>9g}{got[False]:>9.3f}{got[True]:>11.3f}")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with aggregations.csv")
    parser.add_argument("--from-round", type=int, default=0,
                        help="read offers from this round on (default: 0)")
    parser.add_argument("--per-sender", action="store_true",
                        help="also print the shares for each sender")
    parser.add_argument("--span", type=int, default=5,
                        help="rounds per line of the per-round table (default: 5)")
    parser.add_argument("--ratios", type=float, nargs="+", default=[2.0],
                        help="probe ratios to replay (default: 2)")
    parser.add_argument("--slacks", type=float, nargs="+", default=[0.05, 0.02, 0.01],
                        help="probe slacks to replay (default: 0.05 0.02 0.01)")
    parser.add_argument("--forgives", type=float, nargs="+", default=[math.inf, 0.8],
                        help="forgive thresholds to replay (default: inf 0.8)")
    parser.add_argument("--measures", nargs="+", default=[], metavar="NAME",
                        help="also print these logged measures (aggregations.csv's measure "
                             "column, e.g. align_cosine reversal_skew) at percentiles, for "
                             "honest and attacking senders")
    parser.add_argument("--pooled", action="store_true",
                        help="also read what pooling every honest receiver's probe reading of a "
                             "sender would separate, with and without lying colluders")
    parser.add_argument("--section", nargs=2, metavar=("NAME", "TITLE"),
                        default=("probe_trace", "Validation probe trace"),
                        help="with --write-results, the docs/results.md section to write")
    add_results_argument(parser)
    args = parser.parse_args(argv)
    if args.span < 1:
        parser.error("--span must be >= 1")
    with Tee() as tee:
        for run in args.runs:
            try:
                report(run, args)
            except (FileNotFoundError, ValueError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
    if args.write_results:
        print(f"wrote {record_output(args.section[0], args.section[1], tee.text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
