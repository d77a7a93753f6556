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
        ({"head": slice(3, 5)}, "head"),
        ({"head": slice(3, 4)}, "head"),
        ({"head": slice(0, 4, 2)}, "head"),
        ({"head": (2, 4)}, "head"),
        ({"head_base": np.zeros(2, dtype=np.float32)}, "head_base needs head"),
        ({"head": slice(2, 4), "head_base": np.zeros(3, dtype=np.float32)}, "head_base"),
        ({"head": slice(2, 4), "head_base": np.zeros(2, dtype=np.float64)}, "head_base"),
        ({"head": slice(2, 4), "head_base": np.array([0, np.inf], dtype=np.float32)}, "head_base"),
        ({"tensors": (2, 1)}, "tensors"),
        ({"tensors": [2, 2]}, "tensors"),
        ({"tensors": (4, 0)}, "tensors"),
        ({"tensors": (2.0, 2.0)}, "tensors"),
        ({"checked_rows": 1}, "checked_rows"),
        ({"checked_rows": True, "own": np.array([0, np.nan, 0, 0], dtype=np.float32)}, "own"),
        ({"checked_rows": True, "scores": np.array([0.4, np.nan])}, "scores"),
    ],
)
def test_invalid_input_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        make_input(**changes)


def test_start_head_reads_head_base_else_base() -> None:
    base = np.arange(4, dtype=np.float32)
    assert make_input(base=base).start_head is None  # no head
    assert make_input(head=slice(2, 4)).start_head is None  # no base
    assert make_input(head=slice(2, 4), base=base).start_head.tolist() == [2.0, 3.0]
    head_base = np.array([7, 8], dtype=np.float32)
    inp = make_input(head=slice(2, 4), base=base, head_base=head_base)
    assert inp.start_head.tolist() == [7.0, 8.0]


def test_checked_rows_skips_only_the_row_finiteness_scan() -> None:
    bad_rows = np.array([[0, 0, 0, 0], [0, np.inf, 0, 0]], dtype=np.float32)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        make_input(models=bad_rows)  # the default still scans every row
    inp = make_input(models=bad_rows, checked_rows=True)
    assert inp.checked_rows is True
    assert inp.k == 2


def row_tuple(k: int = 2, d: int = 4) -> tuple[np.ndarray, ...]:
    rows = tuple(np.full(d, i + 1.0, dtype=np.float32) for i in range(k))
    for row in rows:
        row.flags.writeable = False  # as buffered rows from the object store are
    return rows


def test_row_input_is_read_in_place() -> None:
    rows = row_tuple()
    inp = make_input(models=rows)
    assert inp.k == 2
    assert all(a is b for a, b in zip(inp.rows, rows, strict=True))


def test_matrix_of_row_input_is_stacked_once_and_read_only() -> None:
    rows = row_tuple()
    inp = make_input(models=rows)
    matrix = inp.matrix
    assert matrix.tolist() == [[1.0] * 4, [2.0] * 4]
    assert inp.matrix is matrix  # cached: a second use does not stack again
    assert not matrix.flags.writeable
    assert not any(np.shares_memory(matrix, row) for row in rows)


def test_rows_of_matrix_input_are_views_of_it() -> None:
    models = np.arange(8, dtype=np.float32).reshape(2, 4)
    inp = make_input(models=models)
    assert inp.matrix is models
    assert [row.tolist() for row in inp.rows] == models.tolist()
    assert all(np.shares_memory(row, models) for row in inp.rows)


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ((np.ones(4, np.float32), np.ones(4, np.float64)), r"models row 1 must be a 1-D float32"),
        ((np.ones(4, np.float32), np.ones(5, np.float32)),
         r"models row 1 has length 5 but own has length 4"),
        ((np.ones((1, 4), np.float32), np.ones(4, np.float32)),
         r"models row 0 must be a 1-D float32"),
        ((np.ones(4, np.float32), [1.0, 1.0, 1.0, 1.0]), r"models row 1 must be a 1-D float32"),
        ([np.ones(4, np.float32), np.ones(4, np.float32)], r"2-D float32 array \[k, d\] or a tuple"),
        ((), r"at least one received model"),
        ((np.ones(4, np.float32), np.array([0, 0, np.nan, 0], np.float32)),
         r"NaN or infinite values in rows \[1\]"),
        ((np.array([np.inf, 0, 0, 0], np.float32), np.array([0, 0, np.nan, 0], np.float32)),
         r"NaN or infinite values in rows \[0, 1\]"),
    ],
)
def test_invalid_row_input_names_the_row(models: object, message: str) -> None:
    senders = ("a", "b")[: len(models)]  # type: ignore[arg-type]
    scores = np.array([0.4, 0.6])[: len(senders)]
    with pytest.raises(ValueError, match=message):
        make_input(models=models, senders=senders, scores=scores)


def test_checked_rows_skips_only_the_finiteness_scan_of_row_input() -> None:
    bad = (np.zeros(4, np.float32), np.array([0, np.inf, 0, 0], np.float32))
    assert make_input(models=bad, checked_rows=True).k == 2
    with pytest.raises(ValueError, match="models row 1 has length 3"):
        make_input(models=(bad[0], np.zeros(3, np.float32)), checked_rows=True)
