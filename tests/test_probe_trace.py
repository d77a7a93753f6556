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
