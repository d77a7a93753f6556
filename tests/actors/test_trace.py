"""The aggregation trace of a real run (experiment.trace), and experiments/probe_trace.py on it."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from dfl_ray.metrics import TRACE_NAME
from dfl_ray.runner import run_experiment
from experiments import probe_trace
from tests.conftest import tiny_config

pytestmark = pytest.mark.ray


def test_the_trace_records_every_aggregated_model_and_the_replay_reproduces_the_run(
    local_ray: None, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_config(tmp_path, data_dir, experiment={"rounds": 3, "trace": True})
    summary = run_experiment(cfg, quiet=True)
    assert summary["status"] == "ok"
    run = tmp_path / "tiny"
    attackers = set(json.loads((run / "partition.json").read_text())["attackers"])
    assert attackers == {3}
    measures: dict[tuple[int, int, int], dict[str, str]] = defaultdict(dict)
    written: Counter[tuple[int, int, int, str]] = Counter()
    with (run / TRACE_NAME).open(newline="") as f:
        for row in csv.DictReader(f):
            key = (int(row["round"]), int(row["receiver"]), int(row["sender"]))
            measures[key][row["measure"]] = row["value"]
            written[(*key, row["measure"])] += 1
    assert set(written.values()) == {1}  # read at every evaluation, each row written once
    # Every node's every aggregation, one entry per model it aggregated.
    per_node = summary["per_node"]
    for node in range(4):
        seen = {r for (r, receiver, _) in measures if receiver == node}
        assert len(seen) == per_node[str(node)]["aggregations"] == 3
    for (_, receiver, sender), m in measures.items():
        assert sender != receiver and {"weight", "reputation", "distance",
                                       "tests_passed"} <= set(m)
        if receiver in attackers:
            continue
        if sender in attackers:  # the random model: gated, never probed, no weight
            assert m["tests_passed"] == "0.0" and m["probe_rise"] == "" and \
                float(m["weight"]) == 0.0
        elif float(m["weight"]) > 0.0:
            assert float(m["probe_rise"]) <= float(m["probe_limit"])
    assert any(s in attackers for (_, r, s) in measures if r not in attackers)
    assert any(float(m["weight"]) > 0 for (_, r, s), m in measures.items() if s not in attackers)

    assert probe_trace.main([str(run), "--span", "1"]) == 0
    out = capsys.readouterr().out
    own = next(line for line in out.splitlines() if line.startswith("replay:"))
    replayed, ran = own.split("replayed ")[1].split(",")[0], own.split("as run ")[1].rstrip(")")
    assert replayed == ran  # the replay of the run's own limits reproduces the run
    assert probe_trace.main([str(tmp_path / "nowhere")]) == 2
