"""Validation of AggregationInput: bad input raises an error naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from dfl_ray.defense import AggregationInput


def make_input(**changes: object) -> AggregationInput:
    fields: dict[str, object] = {
        "own": np.zeros(4, dtype=np.float32),
        "own_score": 0.5,
        "models": np.ones((2, 4), dtype=np.float32),
        "senders": ("a", "b"),
        "scores": np.array([0.4, 0.6]),
        "reputations": {"a": 1.0},
    }
    fields.update(changes)
    return AggregationInput(**fields)  # type: ignore[arg-type]


def test_valid_input_accepts_read_only_models() -> None:
    models = np.ones((2, 4), dtype=np.float32)
    models.flags.writeable = False
    inp = make_input(models=models)
    assert inp.k == 2
    assert inp.get_reputations(0.3).tolist() == [1.0, 0.3]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"own": np.zeros(4, dtype=np.float64)}, "own"),
        ({"own": np.zeros((1, 4), dtype=np.float32)}, "own"),
        ({"models": np.ones((2, 4), dtype=np.float64)}, "models"),
        ({"models": np.ones(4, dtype=np.float32)}, "models"),
        ({"models": np.ones((2, 5), dtype=np.float32)}, "models"),
        ({"models": np.ones((0, 4), dtype=np.float32), "senders": (), "scores": np.zeros(0)},
         "models"),
        ({"senders": ("a",)}, "senders"),
        ({"senders": ["a", "b"]}, "senders"),
        ({"senders": ("a", "a")}, "senders"),
        ({"senders": ("a", "")}, "senders"),
        ({"scores": np.array([0.4, 0.6], dtype=np.float32)}, "scores"),
        ({"scores": np.array([0.4])}, "scores"),
        ({"scores": np.array([0.4, np.nan])}, "scores"),
        ({"scores": np.array([0.4, 1.5])}, "scores"),
        ({"own_score": float("nan")}, "own_score"),
        ({"own_score": -0.1}, "own_score"),
        ({"reputations": {"a": 1.5}}, "reputations"),
        ({"reputations": {"a": float("nan")}}, "reputations"),
        ({"reputations": [("a", 1.0)]}, "reputations"),
        ({"own": np.array([0, 0, np.inf, 0], dtype=np.float32)}, "own"),
        ({"models": np.array([[0, 0, 0, 0], [0, np.nan, 0, 0]], dtype=np.float32)}, "rows [1]"),
        ({"base": np.zeros(5, dtype=np.float32)}, "base"),
        ({"base": np.zeros(4, dtype=np.float64)}, "base"),
        ({"base": np.array([0, np.nan, 0, 0], dtype=np.float32)}, "base"),
        ({"checked_rows": 1}, "checked_rows"),
        ({"checked_rows": True, "own": np.array([0, np.nan, 0, 0], dtype=np.float32)}, "own"),
        ({"checked_rows": True, "scores": np.array([0.4, np.nan])}, "scores"),
    ],
)
def test_invalid_input_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        make_input(**changes)


def test_checked_rows_skips_only_the_row_finiteness_scan() -> None:
    bad_rows = np.array([[0, 0, 0, 0], [0, np.inf, 0, 0]], dtype=np.float32)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        make_input(models=bad_rows)  # the default still scans every row
    inp = make_input(models=bad_rows, checked_rows=True)
    assert inp.checked_rows is True
    assert inp.k == 2
