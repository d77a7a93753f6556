"""experiments/probe_trace.py on malformed input: a clear error naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import probe_trace


@pytest.mark.parametrize("row", ["0,1,2,weight", "0,x,2,weight,1", "0,1,2,weight,high"])
def test_a_malformed_trace_row_is_named(tmp_path: Path, row: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "partition.json").write_text(json.dumps({"attackers": [3]}))
    (tmp_path / "aggregations.csv").write_text(f"round,receiver,sender,measure,value\n{row}\n")
    assert probe_trace.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "aggregations.csv, line 2" in err and row.split(",")[-1] in err


def test_a_trace_with_another_header_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "partition.json").write_text(json.dumps({"attackers": [3]}))
    (tmp_path / "aggregations.csv").write_text("step,wall_seconds,metric,value\n")
    assert probe_trace.main([str(tmp_path)]) == 2
    assert "expected 'round,receiver,sender,measure,value'" in capsys.readouterr().err


def test_logged_measures_are_printed_for_honest_and_attacking_senders(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "partition.json").write_text(json.dumps({"attackers": [2]}))
    rows = ["round,receiver,sender,measure,value"]
    for r in range(4):
        for sender, cosine in ((1, 0.5 + 0.1 * r), (2, -0.8)):
            rows += [f"{r},0,{sender},weight,{0.5 if sender == 1 else 0.0}",
                     f"{r},0,{sender},tests_passed,{1 if sender == 1 else 0}",
                     f"{r},0,{sender},align_cosine,{cosine}"]
    (tmp_path / "aggregations.csv").write_text("\n".join(rows) + "\n")
    assert probe_trace.main([str(tmp_path), "--measures", "align_cosine", "no_such"]) == 0
    out = capsys.readouterr().out
    honest = next(line for line in out.splitlines() if "align_cosine" in line and "honest" in line)
    attackers = next(line for line in out.splitlines()
                     if "align_cosine" in line and "attackers" in line)
    assert honest.split()[2] == "4" and float(honest.split()[-1]) == pytest.approx(0.77)
    assert attackers.split()[2] == "4" and float(attackers.split()[-2]) == pytest.approx(-0.8)
    assert any("no_such" in line and "not logged" in line for line in out.splitlines())


def test_pooled_readings_take_the_median_over_receivers_and_let_colluders_lie(
        tmp_path: Path) -> None:
    (tmp_path / "partition.json").write_text(json.dumps({"attackers": [3]}))
    rows = ["round,receiver,sender,measure,value"]
    # Receivers 0 and 2 (honest) read sender 1 (honest) and sender 3 (the attacker).
    for receiver, sender, excess in ((0, 1, 0.0), (2, 1, 0.01), (0, 3, 0.2), (2, 3, 0.1)):
        rows += [f"0,{receiver},{sender},{m},{v}" for m, v in (
            ("weight", 0.5), ("tests_passed", 1), ("probe_rise", excess), ("probe_typical", 0.0),
            ("probe_limit", 0.05))]
    (tmp_path / "aggregations.csv").write_text("\n".join(rows) + "\n")
    offers, _ = probe_trace.read_run(tmp_path)
    honest = probe_trace.pooled_readings(offers, 1, liars=False)
    assert sorted(honest[False][0]) == [0.0, 0.01] and honest[False][1] == [pytest.approx(0.005)]
    assert honest[True][1] == [pytest.approx(0.15)]
    lying = probe_trace.pooled_readings(offers, 1, liars=True)
    assert lying[False][1] == [pytest.approx(0.01)]  # the colluder reports +1 for sender 1
    assert lying[True][1] == [pytest.approx(0.1)]  # and -1 for its fellow


@pytest.mark.parametrize(("cost", "last_weighed"), [(1.0, False), (0.0, True)])
def test_the_replay_charges_a_reversal_failure_alone_by_reversal_cost(
        cost: float, last_weighed: bool) -> None:
    """Three rounds failing the reversal test alone, then a pass: with the full cost the sender's
    reputation (0.9^3, then 0.76) is still under a floor of 0.8; with none it never left 1."""
    offers = [probe_trace.Offer(r, 0, 1, False, 0.0, r == 3,
                                {"gate": True, "reversal": r == 3, "sign": True},
                                0.0 if r == 3 else float("nan"), 0.0, 0.05,
                                0.5 if r == 3 else -0.5, {})
              for r in range(4)]
    params = {"reversal": 0.0, "reversal_cost": cost, "beta": 0.1, "floor": 0.8,
              "penalty": None, "entry": 0.0, "initial": 1.0}
    got = probe_trace.replay(offers, params, ratio=2.0, slack=0.05, forgive=float("inf"))
    assert got[False] == (0.25 if last_weighed else 0.0)
