"""This project's robust rules against ByzFL's implementations of the same rules, on random inputs.

ByzFL (EPFL, `byzfl` 0.0.11) is the oracle: median, trimmed mean, Krum and Multi-Krum, centered
clipping and nearest-neighbour mixing must give what ByzFL gives, up to float32 rounding, where
the two define the same thing. Where they differ by definition, the test says how and checks
the mapping between them.
"""

from __future__ import annotations

import math

import byzfl
import numpy as np
import pytest
from byzfl.utils.misc import distance_tool

from dfl_ray.defense import AggregationInput, centered_clipping, krum, median, multi_krum
from dfl_ray.defense import trimmed_mean as trimmed_mean_rule
from dfl_ray.defense.aggregate import (
    coordinate_median,
    coordinate_trimmed_mean,
    distances_to,
    krum_scores,
    pairwise_sq_distances,
    weighted_coordinate_median,
)
from dfl_ray.defense.sentinel import aggregate, nearest_neighbour_mix

# (rows, dims, seed): small sizes, odd and even numbers of rows.
CASES = [(7, 50, 0), (8, 120, 1), (9, 300, 2), (10, 500, 3), (11, 64, 4), (12, 200, 5)]


def rows_with_outliers(n: int, d: int, seed: int, outliers: int = 2) -> np.ndarray:
    """float32 [n, d]: n - outliers rows around a common centre, then `outliers` rows far off
    (one shifted in every coordinate, the others scaled up), so robust rules have work to do."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(d)
    x = centre + 0.1 * rng.standard_normal((n, d))
    for j in range(outliers):
        i = n - 1 - j
        x[i] = centre + 5.0 + 0.1 * rng.standard_normal(d) if j % 2 == 0 else 20.0 * x[i]
    return x.astype(np.float32)


def as_input(x: np.ndarray, base: np.ndarray | None = None) -> AggregationInput:
    """Row 0 as the own model, the others as received models."""
    k = x.shape[0] - 1
    return AggregationInput(x[0], 0.5, x[1:], tuple(f"s{i}" for i in range(k)),
                            np.full(k, 0.5), {}, base=base)


def close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-5) -> None:
    """float32 agreement relative to the inputs' scale (values up to a few hundred)."""
    expected = np.asarray(expected)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1.0))


def row_index(x: np.ndarray, vector: np.ndarray) -> int:
    """The row of x equal to vector (Krum returns one of its inputs)."""
    hits = [i for i in range(len(x)) if np.array_equal(x[i], vector)]
    assert len(hits) == 1, hits
    return hits[0]


# ------------------------------------------------------------------ median and trimmed mean


@pytest.mark.parametrize(("n", "d", "seed"), CASES)
def test_coordinate_median_is_byzfl_median(n: int, d: int, seed: int) -> None:
    x = rows_with_outliers(n, d, seed)
    expected = byzfl.Median()(x)
    close(coordinate_median(x), expected)
    close(weighted_coordinate_median(x, np.ones(n)), expected)
    votes = np.arange(1, n + 1)  # integer votes: the median of each row repeated that often
    close(weighted_coordinate_median(x, votes.astype(np.float64)),
          byzfl.Median()(np.repeat(x, votes, axis=0)))
    close(median(as_input(x)).model, expected)


@pytest.mark.parametrize(("n", "d", "seed"), CASES)
def test_coordinate_trimmed_mean_is_byzfl_trmean(n: int, d: int, seed: int) -> None:
    x = rows_with_outliers(n, d, seed)
    for trim in range((n - 1) // 2 + 1):  # trim is ByzFL's f: values dropped on each side
        expected = byzfl.TrMean(f=trim)(x)
        mean, shares = coordinate_trimmed_mean(x, trim)
        close(mean, expected)
        close(coordinate_trimmed_mean(tuple(x), trim)[0], expected)  # rows read one by one
        assert shares.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("n", "d", "seed"), CASES)
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3, 0.45])
def test_trimmed_mean_rule_is_byzfl_trmean_of_floor_fraction_n(n: int, d: int, seed: int,
                                                               fraction: float) -> None:
    x = rows_with_outliers(n, d, seed)
    expected = byzfl.TrMean(f=math.floor(fraction * n))(x)
    close(trimmed_mean_rule(as_input(x), trim=fraction).model, expected)


# ------------------------------------------------------------------------ Krum and Multi-Krum
# ByzFL scores a row by its squared distances to its n - f - 1 nearest others (the sorted row of
# the distance matrix from index 1 to n - f, averaged); Blanchard et al. and this project sum over
# the n - f - 2 nearest. Averaging instead of summing ranks rows alike, so ByzFL's Krum(f) is this
# project's krum with f - 1, and ByzFL's MultiKrum(f), the mean of the n - f best rows, is
# multi_krum with f - 1 and m = n - f.


@pytest.mark.parametrize(("n", "d", "seed"), CASES)
def test_pairwise_sq_distances_are_byzfls(n: int, d: int, seed: int) -> None:
    x = rows_with_outliers(n, d, seed)
    expected = distance_tool(x).cdist(x, x) ** 2  # what ByzFL's Krum and MultiKrum use
    np.testing.assert_allclose(pairwise_sq_distances(x), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(distances_to(x, x[0]), np.sqrt(expected[0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("n", "d", "seed"), CASES)
def test_krum_with_f_minus_one_is_byzfl_krum(n: int, d: int, seed: int) -> None:
    x = rows_with_outliers(n, d, seed, outliers=3)
    for f in range(1, (n - 1) // 2 + 1):  # ByzFL needs 2f < n
        chosen = row_index(x, byzfl.Krum(f=f)(x))
        assert chosen < n - 3  # never an outlier
        scores = krum_scores(pairwise_sq_distances(x), f - 1)
        assert int(np.argmin(scores)) == chosen
        np.testing.assert_array_equal(krum(as_input(x), f=f - 1).model, x[chosen])


@pytest.mark.parametrize(("n", "d", "seed"), CASES)
def test_multi_krum_with_f_minus_one_is_byzfl_multikrum(n: int, d: int, seed: int) -> None:
    x = rows_with_outliers(n, d, seed, outliers=3)
    for f in range(1, (n - 1) // 2 + 1):
        expected = byzfl.MultiKrum(f=f)(x)
        close(multi_krum(as_input(x), f=f - 1, m=n - f).model, expected)
        best = np.argsort(krum_scores(pairwise_sq_distances(x), f - 1), kind="stable")[:n - f]
        close(x[best].mean(axis=0), expected)


def test_krum_counts_one_neighbour_fewer_than_byzfl() -> None:
    """The same f picks different rows: points 0, 1, 2, 10, 11 on a line with f = 1.

    Two nearest (this project): 1 scores 1 + 1 = 2, best. Three nearest (ByzFL): 2 scores
    1 + 4 + 64 = 69, better than 1's 1 + 1 + 81 = 83.
    """
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=np.float32)
    np.testing.assert_array_equal(byzfl.Krum(f=1)(x), [2.0])
    np.testing.assert_array_equal(krum(as_input(x), f=1).model, [1.0])
    np.testing.assert_array_equal(krum(as_input(x), f=0).model, [2.0])


# ------------------------------------------------------------------------- centered clipping
# Same iteration: v <- v + 1/n sum_i (x_i - v) min(1, tau / ||x_i - v||) over all n inputs.
# Centre: this project starts from the own model (row 0); ByzFL from its `m`, zero by default.
# ByzFL 0.0.11's constructor refuses every m that is not None (it asks for an array that is both
# a numpy array and a torch tensor), so the own model is given either by translating the inputs
# (ByzFL on x - own, plus own) or by setting `m` after construction. ByzFL's instance also keeps
# its output as the next call's centre, so each comparison uses a fresh one. ByzFL's radius is
# fixed; this project's tau=None takes, each step, the median distance of the received models
# to v, which the last test feeds ByzFL step by step.


def byzfl_cc(x: np.ndarray, centre: np.ndarray, tau: float, iters: int) -> np.ndarray:
    with np.errstate(divide="ignore"):  # the own row lies at distance 0: factor min(1, inf)
        return byzfl.CenteredClipping(L=iters, tau=float(tau))(x - centre) + centre


def test_byzfl_centered_clipping_refuses_a_centre() -> None:
    with pytest.raises(TypeError, match="m must be of type"):
        byzfl.CenteredClipping(m=np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize(("n", "d", "seed"), CASES)
@pytest.mark.parametrize("iters", [1, 3])
def test_centered_clipping_is_byzfl_centered_clipping_from_the_own_model(
        n: int, d: int, seed: int, iters: int) -> None:
    x = rows_with_outliers(n, d, seed)
    spread = float(np.median(np.linalg.norm(x[1:] - x[0], axis=1)))
    for tau in (0.1 * spread, spread, 10.0 * spread, math.inf):
        ours = centered_clipping(as_input(x), tau=tau, iters=iters).model
        close(ours, byzfl_cc(x, x[0], tau, iters))
        cc = byzfl.CenteredClipping(L=iters, tau=float(tau))
        cc.m = x[0].copy()
        with np.errstate(divide="ignore"):
            close(ours, cc(x))
    # An infinite radius clips nothing: one step from anywhere lands on the mean.
    close(centered_clipping(as_input(x), tau=math.inf, iters=iters).model, x.mean(axis=0))


@pytest.mark.parametrize(("n", "d", "seed"), CASES)
@pytest.mark.parametrize("iters", [1, 2, 4])
def test_centered_clipping_adaptive_radius_is_byzfl_with_the_median_distance(
        n: int, d: int, seed: int, iters: int) -> None:
    x = rows_with_outliers(n, d, seed)
    v = x[0].astype(np.float32)
    for _ in range(iters):
        radius = float(np.median(np.linalg.norm(x[1:].astype(np.float64) - v, axis=1)))
        v = byzfl_cc(x, v, radius, 1).astype(np.float32)
    close(centered_clipping(as_input(x), tau=None, iters=iters).model, v)


# ---------------------------------------------------------------- nearest-neighbour mixing
# ByzFL's NNM(f) replaces each row by the mean of its n - f nearest rows (itself included); this
# project's nearest_neighbour_mix(stack, base, keep) does so with keep = n - f, measuring on the
# rows minus `base`, which moves no distance.


@pytest.mark.parametrize(("n", "d", "seed"), CASES)
def test_nearest_neighbour_mix_is_byzfl_nnm(n: int, d: int, seed: int) -> None:
    x = rows_with_outliers(n, d, seed, outliers=3)
    base = (x[0] - 0.05 * np.random.default_rng(seed + 100).standard_normal(d)).astype(np.float32)
    for f in range(0, n):
        close(nearest_neighbour_mix(x, base, n - f), byzfl.NNM(f=f)(x))


@pytest.mark.parametrize(("n", "d", "seed"), CASES)
@pytest.mark.parametrize("trim", [0.15, 0.25, 0.4])
def test_sentinel_trimmed_feature_layers_are_byzfl_trmean_after_nnm(
        n: int, d: int, seed: int, trim: float) -> None:
    """dfl_sentinel's feature layers (no head: the whole model) with every model weighted are
    ByzFL's TrMean(f) of NNM(f) of the own model and the clipped models, f = floor(trim n)."""
    x = rows_with_outliers(n, d, seed)
    rng = np.random.default_rng(seed + 200)
    base = (x[0] - 0.05 * rng.standard_normal(d)).astype(np.float32)
    inp = as_input(x, base=base)
    pull = rng.uniform(0.3, 1.0, n - 1)
    stack = np.vstack([x[0], base + pull[:, None].astype(np.float32) * (x[1:] - base)])
    f = math.floor(trim * n)
    assert f >= 1
    out = aggregate(inp, pull, np.ones(n - 1), 1.0, trim)
    close(out, byzfl.TrMean(f=f)(byzfl.NNM(f=f)(stack.astype(np.float32))))
    unmixed = aggregate(inp, pull, np.ones(n - 1), 1.0, trim, mix=False)
    close(unmixed, byzfl.TrMean(f=f)(stack.astype(np.float32)))
