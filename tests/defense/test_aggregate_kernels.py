"""Numeric kernels of dfl_ray.defense.aggregate on small hand-made arrays."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dfl_ray.defense import aggregate
from dfl_ray.defense.aggregate import (
    clip_factors,
    coordinate_median,
    coordinate_trimmed_mean,
    distances_to,
    krum_scores,
    pairwise_sq_distances,
    stack_candidates,
    weighted_coordinate_median,
    weighted_mean,
    weighted_sum,
)

RNG_SEED = 7


def rows(n: int, d: int = 9) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).standard_normal((n, d)).astype(np.float32)


def read_only_rows(n: int, d: int) -> tuple[np.ndarray, ...]:
    """n separate read-only rows, as a node's buffered models are."""
    out = tuple(np.random.default_rng(RNG_SEED + i).standard_normal(d).astype(np.float32)
                for i in range(n))
    for row in out:
        row.flags.writeable = False
    return out


# Long enough to span three blocks of the blocked kernels, the last one partial.
LONG = 2 * aggregate._BLOCK + 3


def test_stack_candidates_puts_own_first_in_one_copy() -> None:
    own, models = np.zeros(3, np.float32), np.ones((2, 3), np.float32)
    out = stack_candidates(own, models)
    assert out.tolist() == [[0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert not np.shares_memory(out, models) and not np.shares_memory(out, own)
    rows = read_only_rows(2, 3)
    assert stack_candidates(own, rows).tolist() == [own.tolist(), *(r.tolist() for r in rows)]


def test_stack_candidates_returns_a_fresh_array_each_call() -> None:
    own, rows = np.zeros(16, np.float32), read_only_rows(3, 16)
    first = stack_candidates(own, rows)
    again = stack_candidates(own, rows[:2])
    assert first.dtype == np.float32 and first.flags.writeable
    assert not np.shares_memory(first, again)
    assert not any(np.shares_memory(first, row) for row in rows)
    np.testing.assert_array_equal(first, np.stack((own, *rows)))  # untouched by the second call


def test_stack_candidates_of_an_earlier_stack_copies_it() -> None:
    own, rows = np.zeros(16, np.float32), read_only_rows(3, 16)
    stacked = stack_candidates(own, rows)
    again = stack_candidates(stacked[3], (stacked[2], stacked[1]))
    np.testing.assert_array_equal(again, np.stack((rows[2], rows[1], rows[0])))
    assert not np.shares_memory(again, stacked)


def test_weighted_sum_reads_separate_rows_across_blocks() -> None:
    rows = read_only_rows(4, LONG)
    weights = np.array([0.5, -1.25, 0.0, 3.0])
    expected = weights @ np.stack(rows).astype(np.float64)
    out = weighted_sum(rows, weights)
    assert out.dtype == np.float32 and out.shape == (LONG,) and out.flags.writeable
    assert not any(np.shares_memory(out, row) for row in rows)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_weighted_sum_matches_a_float64_reference_to_float32_rounding(n: int) -> None:
    separate = read_only_rows(n, LONG)
    weights = np.random.default_rng(n).uniform(-2.0, 2.0, n)
    x = np.stack(separate).astype(np.float64)
    w32 = weights.astype(np.float32).astype(np.float64)  # the kernel scales by float32 weights
    out = weighted_sum(separate, weights)
    # Each row costs one rounding of its product and one of the running sum.
    bound = 2 * n * np.finfo(np.float32).eps * (np.abs(w32) @ np.abs(x))
    assert np.all(np.abs(out - w32 @ x) <= bound)
    np.testing.assert_allclose(out, weights @ x, rtol=1e-5, atol=1e-5)


def test_weighted_sum_adds_rows_in_order_in_float32() -> None:
    separate = read_only_rows(4, LONG)
    weights = np.array([0.3, -1.7, 2.25, 0.1])
    expected = separate[0] * np.float32(weights[0])
    for row, w in zip(separate[1:], weights[1:], strict=True):
        expected = expected + row * np.float32(w)
    np.testing.assert_array_equal(weighted_sum(separate, weights), expected)
    np.testing.assert_array_equal(weighted_sum(np.stack(separate), weights), expected)


def test_weighted_sum_of_strided_rows_matches_contiguous_ones() -> None:
    matrix = rows(3, 40)
    strided = (matrix[0, ::2], matrix[1, ::-2], matrix[2, 1::2])
    weights = np.array([1.0, 2.0, -0.5])
    expected = weighted_sum(tuple(np.ascontiguousarray(r) for r in strided), weights)
    np.testing.assert_array_equal(weighted_sum(strided, weights), expected)


@pytest.mark.parametrize(
    ("rows_in", "weights", "message"),
    [
        ((np.ones(3, np.float32),) * 2, [1.0], "weights must have shape"),
        ((np.ones(3, np.float32),) * 2, [1.0, np.inf], "weights must be finite"),
        ((), [], "at least one row"),
        (([1.0, 2.0], np.ones(2, np.float32)), [1.0, 1.0], "1-D float32 arrays; row 0 is list"),
        ((np.ones(3, np.float32), np.ones(3, np.float64)), [1.0, 1.0], "row 1 is float64"),
        ((np.ones(3, np.float32), np.ones(4, np.float32)), [1.0, 1.0], r"shape \(3,\); row 1"),
    ],
)
def test_invalid_weighted_sum(rows_in: tuple[np.ndarray, ...], weights: list[float],
                              message: str) -> None:
    with pytest.raises(ValueError, match=message):
        weighted_sum(rows_in, np.array(weights))


def test_weighted_mean_of_rows_matches_the_matrix_product() -> None:
    separate = read_only_rows(5, LONG)
    weights = np.array([3.0, 1.0, 0.0, 2.0, 0.5])
    np.testing.assert_allclose(weighted_mean(separate, weights),
                               weighted_mean(np.stack(separate), weights), rtol=1e-5, atol=1e-6)


def test_weighted_mean_normalises_weights() -> None:
    x = np.array([[0.0, 4.0], [2.0, 8.0]], dtype=np.float32)
    out = weighted_mean(x, np.array([3.0, 1.0]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.5, 5.0], rtol=1e-6)


@pytest.mark.parametrize("weights", [[0.0, 0.0], [1.0, -1.0], [1.0, np.nan], [1.0]])
def test_invalid_weighted_mean_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        weighted_mean(np.ones((2, 3), np.float32), np.array(weights))


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_coordinate_median_matches_numpy(n: int) -> None:
    x = rows(n)
    np.testing.assert_allclose(coordinate_median(x), np.median(x, axis=0), rtol=1e-6)


def test_weighted_coordinate_median_equals_median_of_repeated_rows() -> None:
    rng = np.random.default_rng(RNG_SEED)
    for _ in range(50):
        n = int(rng.integers(1, 7))
        x = rng.standard_normal((n, 5)).astype(np.float32)
        votes = rng.integers(0, 4, n)
        if votes.sum() == 0:
            continue
        # Integer votes act as that many copies of the row; vote 0 removes it.
        expected = np.median(np.repeat(x, votes, axis=0), axis=0)
        out = weighted_coordinate_median(x, votes.astype(np.float64))
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_weighted_coordinate_median_follows_the_majority_of_votes() -> None:
    x = np.array([[0.0], [1.0], [10.0], [11.0], [12.0]])
    assert weighted_coordinate_median(x, np.array([2.0, 1.0, 0.5, 0.5, 0.5]))[0] == 1.0
    assert weighted_coordinate_median(x, np.ones(5))[0] == 10.0


@pytest.mark.parametrize("votes", [[0.0, 0.0], [1.0, -1.0], [1.0, np.inf], [1.0]])
def test_invalid_weighted_median_votes(votes: list[float]) -> None:
    with pytest.raises(ValueError, match="votes"):
        weighted_coordinate_median(np.ones((2, 3), np.float32), np.array(votes))


def test_coordinate_trimmed_mean_drops_extremes_per_coordinate() -> None:
    x = np.array([[0, 10], [1, 11], [2, 12], [100, -100], [3, 13]], dtype=np.float32)
    mean, shares = coordinate_trimmed_mean(x, 1)
    np.testing.assert_allclose(mean, [2.0, 11.0])
    # Row 3 is an extreme in both coordinates, so it contributes nothing.
    assert shares[3] == 0.0
    np.testing.assert_allclose(shares.sum(), 1.0)


def test_coordinate_trimmed_mean_at_half_is_the_median() -> None:
    for n in (3, 4, 7):
        x = rows(n)
        mean, _ = coordinate_trimmed_mean(x, (n - 1) // 2)
        np.testing.assert_allclose(mean, np.median(x, axis=0), rtol=1e-6)


@pytest.mark.parametrize("trim", [0, 1, 2])
def test_coordinate_trimmed_mean_of_rows_across_blocks_matches_one_sorted_array(trim: int) -> None:
    separate = [row.copy() for row in read_only_rows(5, LONG)]
    separate[2] = separate[1].copy()  # ties, credited the same way block by block
    separate[3][:1000] = separate[4][:1000]
    for row in separate:
        row.flags.writeable = False
    x = np.stack(separate)
    order = np.argsort(x, axis=0)[trim : 5 - trim]
    expected = np.take_along_axis(x, order, axis=0).mean(axis=0, dtype=np.float64)
    counts = np.bincount(order.ravel(), minlength=5).astype(np.float64)
    for given in (tuple(separate), x):
        mean, shares = coordinate_trimmed_mean(given, trim)
        np.testing.assert_array_equal(mean, expected.astype(np.float32))
        np.testing.assert_array_equal(shares, counts / counts.sum())


@pytest.mark.parametrize("trim", [-1, 2, 3])
def test_invalid_trim_count(trim: int) -> None:
    with pytest.raises(ValueError, match="trim"):
        coordinate_trimmed_mean(rows(4), trim)


def test_distances_to_matches_norm() -> None:
    x = rows(4)
    centre = x[0] * 0.5
    np.testing.assert_allclose(distances_to(x, centre), np.linalg.norm(x - centre, axis=1),
                               rtol=1e-6)


def test_distances_to_reads_separate_rows_across_blocks() -> None:
    separate = read_only_rows(3, LONG)
    centre = (separate[0] * np.float32(0.5)).astype(np.float32)
    expected = np.linalg.norm(np.stack(separate).astype(np.float64) - centre, axis=1)
    np.testing.assert_allclose(distances_to(separate, centre), expected, rtol=1e-12)


def test_invalid_distances_to_row_length() -> None:
    with pytest.raises(ValueError, match=r"shape \(4,\); row 1 is float32 array of shape \(3,\)"):
        distances_to((np.ones(4, np.float32), np.ones(3, np.float32)), np.zeros(4, np.float32))


def test_pairwise_sq_distances_matches_brute_force() -> None:
    x = rows(5)
    expected = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(axis=2)
    out = pairwise_sq_distances(x)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert np.all(np.diag(out) == 0.0)


def test_pairwise_sq_distances_stays_exact_for_close_far_from_origin_points() -> None:
    # |a|^2 + |b|^2 - 2ab would cancel here in float32; a direct difference does not.
    x = np.full((2, 1000), 100.0, dtype=np.float32)
    x[1] += np.float32(0.001)
    np.testing.assert_allclose(pairwise_sq_distances(x)[0, 1], 1000 * (x[1, 0] - x[0, 0]) ** 2,
                               rtol=1e-5)


def test_pairwise_sq_distances_sums_each_pair_as_one_row_reduction() -> None:
    # One [d] buffer per pair gives the same float64 sums as reducing the [n - 1 - i, d]
    # differences of row i along axis 1: the pairs' order and each sum are unchanged.
    x = np.stack(read_only_rows(5, LONG))
    expected = np.zeros((5, 5))
    for i in range(4):
        diff = x[i + 1 :] - x[i]
        expected[i, i + 1 :] = np.square(diff).sum(axis=1, dtype=np.float64)
    np.testing.assert_array_equal(pairwise_sq_distances(x), expected + expected.T)


def test_krum_scores_sum_nearest_distances() -> None:
    # Points on a line at 0, 1, 2, 10: squared distances by hand.
    x = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    d2 = pairwise_sq_distances(x)
    # n = 4, f = 1: n - f - 2 = 1 nearest.
    assert krum_scores(d2, 1).tolist() == [1.0, 1.0, 1.0, 64.0]
    # f = 0: 2 nearest.
    assert krum_scores(d2, 0).tolist() == [5.0, 2.0, 5.0, 145.0]
    # f too large for n: degrades to the single nearest neighbour.
    assert krum_scores(d2, 5).tolist() == [1.0, 1.0, 1.0, 64.0]


def test_clip_factors_pull_far_points_onto_the_ball() -> None:
    out = clip_factors(np.array([0.0, 1.0, 4.0]), 2.0)
    assert out.tolist() == [1.0, 1.0, 0.5]
    assert clip_factors(np.array([0.0, 3.0]), 0.0).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="radius"):
        clip_factors(np.array([1.0]), -1.0)


def test_kernel_results_are_fresh_and_alias_no_input() -> None:
    separate = read_only_rows(5, 64)
    matrix = np.stack(separate)
    matrix.flags.writeable = False
    votes = np.array([1.0, 2.0, 0.5, 1.0, 1.0])
    calls = [
        lambda: stack_candidates(separate[0], separate[1:]),
        lambda: weighted_sum(separate, votes),
        lambda: weighted_sum(matrix, votes),
        lambda: weighted_mean(separate, votes),
        lambda: weighted_mean(matrix, votes),
        lambda: coordinate_median(matrix),
        lambda: coordinate_median(matrix[:4]),
        lambda: weighted_coordinate_median(matrix, votes),
        lambda: weighted_coordinate_median(matrix, np.ones(5)),
        lambda: coordinate_trimmed_mean(matrix, 1)[0],
        lambda: distances_to(separate, separate[0]),
        lambda: pairwise_sq_distances(matrix),
    ]
    for call in calls:
        first, second = call(), call()
        assert first.flags.writeable and first.flags.owndata
        assert not np.shares_memory(first, second)
        assert not any(np.shares_memory(first, x) for x in (matrix, *separate))
        np.testing.assert_array_equal(first, second)


def test_defense_imports_neither_torch_nor_the_models() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import dfl_ray.defense as defense\n"
        "for m in pkgutil.iter_modules(defense.__path__):\n"
        "    importlib.import_module(f'dfl_ray.defense.{m.name}')\n"
        "bad = sorted(n for n in sys.modules if n == 'torch' or n.startswith('dfl_ray.models'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
