"""Numeric kernels of dfl_ray.defense.aggregate on small hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

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
)

RNG_SEED = 7


def rows(n: int, d: int = 9) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).standard_normal((n, d)).astype(np.float32)


def test_stack_candidates_puts_own_first_in_a_fresh_array() -> None:
    own, models = np.zeros(3, np.float32), np.ones((2, 3), np.float32)
    out = stack_candidates(own, models)
    assert out.tolist() == [[0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert not np.shares_memory(out, models)


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


@pytest.mark.parametrize("trim", [-1, 2, 3])
def test_invalid_trim_count(trim: int) -> None:
    with pytest.raises(ValueError, match="trim"):
        coordinate_trimmed_mean(rows(4), trim)


def test_distances_to_matches_norm() -> None:
    x = rows(4)
    centre = x[0] * 0.5
    np.testing.assert_allclose(distances_to(x, centre), np.linalg.norm(x - centre, axis=1),
                               rtol=1e-6)


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
