"""Tests for dfl_ray.metrics: CSV rows, TensorBoard files, summary, plot, history, tables."""

from __future__ import annotations

import csv
import json
import math
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from dfl_ray.metrics import (
    CSV_HEADER,
    TRACE_HEADER,
    TRACE_NAME,
    RunRecorder,
    TraceWriter,
    format_table,
)
from dfl_ray.node.node import DFLNode

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def log_accuracy_run(rec: RunRecorder, steps: int = 4) -> None:
    for s in range(steps):
        rec.log(
            s,
            {
                "accuracy/honest_mean": 0.5 + 0.1 * s,
                "accuracy/honest_min": 0.4 + 0.1 * s,
                "accuracy/honest_max": 0.6 + 0.1 * s,
                "accuracy/attacker_mean": 0.1,
            },
            wall_seconds=2.0 * s,
        )


def test_csv_has_header_and_one_row_per_metric(tmp_path: Path) -> None:
    with RunRecorder(tmp_path / "run", tensorboard=False) as rec:
        rec.log(0, {"accuracy/honest_mean": 0.25, "loss": 1.5}, wall_seconds=0.5)
        rec.log(1, {"accuracy/honest_mean": 0.75})
    rows = read_rows(tmp_path / "run" / "metrics.csv")
    assert rows[0] == ["step", "wall_seconds", "metric", "value"]
    assert rows[1:] == [
        ["0", "0.5", "accuracy/honest_mean", "0.25"],
        ["0", "0.5", "loss", "1.5"],
        ["1", "", "accuracy/honest_mean", "0.75"],
    ]


def test_csv_rows_are_on_disk_before_close(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path, tensorboard=False)
    rec.log(3, {"a": 1.0})
    # Read while the recorder is still open: what a killed run would leave behind.
    assert read_rows(tmp_path / "metrics.csv")[1:] == [["3", "", "a", "1.0"]]
    rec.close()


def test_csv_values_round_trip_exactly(tmp_path: Path) -> None:
    value = 1 / 3
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        rec.log(0, {"x": value, "y": np.float32(0.1)})
    rows = read_rows(tmp_path / "metrics.csv")
    assert float(rows[1][3]) == value
    assert float(rows[2][3]) == float(np.float32(0.1))


def test_non_finite_values_are_recorded(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        rec.log(0, {"loss": float("nan")})
        assert math.isnan(rec.history("loss")[0][1])
    assert read_rows(tmp_path / "metrics.csv")[1] == ["0", "", "loss", "nan"]


def test_existing_csv_is_appended_to(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        rec.log(0, {"a": 1.0})
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        rec.log(1, {"a": 2.0})
        assert rec.history("a") == [(1, 2.0)]
    rows = read_rows(tmp_path / "metrics.csv")
    assert rows == [list(CSV_HEADER), ["0", "", "a", "1.0"], ["1", "", "a", "2.0"]]


def test_out_dir_is_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with RunRecorder(out, tensorboard=False):
        pass
    assert out.is_dir()
    assert (out / "metrics.csv").is_file()


def test_history_returns_what_was_logged(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        rec.log(0, {"a": 0.1, "b": 5.0})
        rec.log(2, {"a": 0.3})
        rec.log(1, {"a": 0.2})
        assert rec.history("a") == [(0, 0.1), (2, 0.3), (1, 0.2)]
        assert rec.history("b") == [(0, 5.0)]
        assert rec.metric_names == ("a", "b")
        # A copy: changing it does not change the record.
        rec.history("a").clear()
        assert len(rec.history("a")) == 3


def test_tensorboard_event_file_is_written(tmp_path: Path) -> None:
    with RunRecorder(tmp_path) as rec:
        rec.log(0, {"accuracy/honest_mean": 0.5})
        rec.log(1, {"accuracy/honest_mean": 0.6})
    events = list(tmp_path.glob("events.out.tfevents*"))
    assert len(events) == 1
    assert events[0].stat().st_size > 0


def test_tensorboard_scalars_read_back(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunRecorder(tmp_path) as rec:
        rec.log(0, {"accuracy/honest_mean": 0.5})
        rec.log(7, {"accuracy/honest_mean": 0.75})
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    scalars = acc.Scalars("accuracy/honest_mean")
    assert [(e.step, e.value) for e in scalars] == [(0, 0.5), (7, 0.75)]


def test_tensorboard_off_writes_only_csv(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        rec.log(0, {"a": 1.0})
    assert list(tmp_path.glob("events.out.tfevents*")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_summary_round_trips(tmp_path: Path) -> None:
    summary: dict[str, Any] = {
        "final": {"honest_mean": 0.9375, "rounds": 40},
        "topology": "dfl10",
        "attackers": [3, 7],
        "ok": True,
        "note": None,
    }
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        path = rec.write_summary(summary)
    assert path == tmp_path / "summary.json"
    assert json.loads(path.read_text()) == summary


def test_summary_is_pretty_with_sorted_keys(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        text = rec.write_summary({"b": 1, "a": {"d": 2, "c": 3}}).read_text()
    assert text == '{\n  "a": {\n    "c": 3,\n    "d": 2\n  },\n  "b": 1\n}\n'


def test_summary_converts_numpy_scalars_and_paths(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        path = rec.write_summary(
            {"acc": np.float32(0.5), "n": np.int64(3), "dir": tmp_path, "m": np.array(2.0)}
        )
    assert json.loads(path.read_text()) == {"acc": 0.5, "n": 3, "dir": str(tmp_path), "m": 2.0}


def test_summary_works_after_close(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path, tensorboard=False)
    rec.close()
    assert json.loads(rec.write_summary({"a": 1}).read_text()) == {"a": 1}


def test_plot_writes_a_png(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        log_accuracy_run(rec)
    path = rec.plot(title="dfl10, 1 attacker")
    assert path == tmp_path / "accuracy.png"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


def test_plot_to_a_given_path_without_band_or_attackers(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        rec.log(0, {"accuracy/honest_mean": 0.2})
        rec.log(1, {"accuracy/honest_mean": 0.4})
        path = rec.plot(tmp_path / "figs" / "acc.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "accuracy.png").exists()


def test_plot_band_changes_the_image(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        for s in range(4):
            rec.log(s, {"accuracy/honest_mean": 0.5})
        plain = rec.plot(tmp_path / "plain.png").read_bytes()
        for s in range(4):
            rec.log(s, {"accuracy/honest_min": 0.2, "accuracy/honest_max": 0.8})
        banded = rec.plot(tmp_path / "band.png").read_bytes()
    assert banded[:8] == PNG_MAGIC
    assert banded != plain


def test_format_table_aligns_columns() -> None:
    rows = [
        {"rule": "median", "accuracy": 0.93456, "nodes": 10},
        {"rule": "reputation_005", "accuracy": 0.2, "nodes": 3},
        {"rule": "krum", "accuracy": None, "nodes": 100},
    ]
    lines = format_table(rows, ["rule", "accuracy", "nodes"]).splitlines()
    assert lines == [
        "rule            accuracy  nodes",
        "--------------  --------  -----",
        "median             0.935     10",
        "reputation_005     0.200      3",
        "krum                   -    100",
    ]


def test_format_table_only_header_without_rows() -> None:
    assert format_table([], ["a", "bb"]) == "a  bb\n-  --"


def test_format_table_numpy_and_bool_values() -> None:
    out = format_table([{"x": np.float32(0.25), "y": np.int64(4), "z": True}], ["x", "y", "z"])
    assert out.splitlines()[2] == "0.250  4  True"


def test_invalid_log_after_close(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path, tensorboard=False)
    rec.close()
    rec.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        rec.log(0, {"a": 1.0})


@pytest.mark.parametrize("step", [-1, 1.5, True, "3"])
def test_invalid_step(tmp_path: Path, step: Any) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec, pytest.raises(ValueError, match="step"):
        rec.log(step, {"a": 1.0})


@pytest.mark.parametrize("wall", [-1.0, float("inf"), "2"])
def test_invalid_wall_seconds(tmp_path: Path, wall: Any) -> None:
    with (
        RunRecorder(tmp_path, tensorboard=False) as rec,
        pytest.raises(ValueError, match="wall_seconds"),
    ):
        rec.log(0, {"a": 1.0}, wall_seconds=wall)


def test_invalid_value_leaves_nothing_logged(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        with pytest.raises(ValueError, match="metric 'b': value must be a number"):
            rec.log(0, {"a": 1.0, "b": "high"})
        assert rec.metric_names == ()
    assert read_rows(tmp_path / "metrics.csv") == [list(CSV_HEADER)]


@pytest.mark.parametrize("name", ["", 3])
def test_invalid_metric_name(tmp_path: Path, name: Any) -> None:
    with (
        RunRecorder(tmp_path, tensorboard=False) as rec,
        pytest.raises(ValueError, match="metric name"),
    ):
        rec.log(0, {name: 1.0})


def test_invalid_history_of_unlogged_metric(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        rec.log(0, {"a": 1.0})
        with pytest.raises(KeyError, match="'b' was never logged; logged metrics: a"):
            rec.history("b")


def test_invalid_existing_csv_with_other_header(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("round,acc\n1,0.5\n")
    with pytest.raises(ValueError, match="exists with header 'round,acc'"):
        RunRecorder(tmp_path, tensorboard=False)
    assert (tmp_path / "metrics.csv").read_text() == "round,acc\n1,0.5\n"


def test_invalid_out_dir_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        RunRecorder(target, tensorboard=False)


def test_invalid_summary_not_serialisable(tmp_path: Path) -> None:
    with (
        RunRecorder(tmp_path, tensorboard=False) as rec,
        pytest.raises(TypeError, match="object is not JSON serialisable"),
    ):
        rec.write_summary({"a": object()})
    assert not (tmp_path / "summary.json").exists()


def test_invalid_plot_with_nothing_logged(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        rec.log(0, {"loss": 1.0})
        with pytest.raises(ValueError, match="nothing to plot.*logged metrics: loss"):
            rec.plot()
    assert not (tmp_path / "accuracy.png").exists()


def test_invalid_plot_ylim(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, tensorboard=False) as rec:
        rec.log(0, {"accuracy/honest_mean": 0.5})
        with pytest.raises(ValueError, match="ylim"):
            rec.plot(ylim=(1.0, 0.0))


def test_invalid_format_table_missing_column() -> None:
    with pytest.raises(ValueError, match=r"row #1 has no value for column\(s\) \['b'\]"):
        format_table([{"a": 1, "b": 2}, {"a": 3}], ["a", "b"])


@pytest.mark.parametrize("columns", [[], "ab", ["a", "a"]])
def test_invalid_format_table_columns(columns: Any) -> None:
    with pytest.raises(ValueError, match="columns"):
        format_table([{"a": 1}], columns)


class _TracingNet:
    """Stands in for a Network: nodes that hold only their trace, read by `DFLNode.trace_rows`."""

    def __init__(self) -> None:
        self.nodes = {n: self.node() for n in (0, 1)}

    @staticmethod
    def node() -> SimpleNamespace:
        return SimpleNamespace(trace=[], trace_start=0, trace_epoch=uuid.uuid4().hex)

    def trace(self, cursors: dict[int, tuple[str, int]]
              ) -> dict[int, tuple[str, int, list[dict[str, float]]]]:
        return {n: DFLNode.trace_rows(node, *cursors.get(n, ("", 0)))  # type: ignore[arg-type]
                for n, node in self.nodes.items()}


def _row(r: int, receiver: int, sender: int, weight: float) -> dict[str, float]:
    return {"round": r, "receiver": receiver, "sender": sender, "weight": weight,
            "probe_rise": math.nan}


def test_trace_writer_writes_each_row_once_and_all_of_a_restarted_node(tmp_path: Path) -> None:
    net = _TracingNet()
    writer = TraceWriter(tmp_path)
    net.nodes[0].trace += [_row(0, 0, 1, 0.5)]
    net.nodes[1].trace += [_row(0, 1, 0, 0.25), _row(1, 1, 0, 0.0)]
    assert writer.collect(net) == 3
    assert writer.collect(net) == 0  # nothing new: nothing written twice
    assert net.nodes[1].trace == [] and net.nodes[1].trace_start == 2  # read rows forgotten
    # Node 1 rebuilt after a restart: a new epoch, its old rows gone, and more rows already
    # than were read before; every one of them is new.
    net.nodes[1] = net.node()
    net.nodes[1].trace += [_row(2, 1, 0, 0.75), _row(3, 1, 0, 0.5), _row(4, 1, 0, 0.5)]
    assert writer.collect(net) == 3
    writer.close()
    with (tmp_path / TRACE_NAME).open(newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == TRACE_HEADER
    assert rows[1:] == [["0", "0", "1", "weight", "0.5"], ["0", "0", "1", "probe_rise", ""],
                        ["0", "1", "0", "weight", "0.25"], ["0", "1", "0", "probe_rise", ""],
                        ["1", "1", "0", "weight", "0.0"], ["1", "1", "0", "probe_rise", ""],
                        ["2", "1", "0", "weight", "0.75"], ["2", "1", "0", "probe_rise", ""],
                        ["3", "1", "0", "weight", "0.5"], ["3", "1", "0", "probe_rise", ""],
                        ["4", "1", "0", "weight", "0.5"], ["4", "1", "0", "probe_rise", ""]]
    again = TraceWriter(tmp_path)  # a resumed run appends under the one header
    again.close()
    assert (tmp_path / TRACE_NAME).read_text().count("round,receiver") == 1


def test_summary_counts_diverged_training_per_node() -> None:
    """Which nodes' local training was tried again or undone is read per node (attackers' and
    honest nodes' apart), beside the totals."""
    from dfl_ray.runner import summarize_stats

    def stats(counters: dict[str, int]) -> dict[str, Any]:
        return {"rejected": {}, "seconds": {}, "counters": counters, "reputations": {},
                "rounds": 3, "height": 3}

    totals = summarize_stats({0: stats({"retrained": 2, "diverged": 1}), 1: stats({})},
                             attackers={1}, addresses={0: "a0", 1: "a1"})
    per_node = totals["per_node"]
    assert (per_node[0]["retrained"], per_node[0]["diverged"]) == (2, 1)
    assert (per_node[1]["retrained"], per_node[1]["diverged"]) == (0, 0)
    assert totals["counters"]["retrained"] == 2
