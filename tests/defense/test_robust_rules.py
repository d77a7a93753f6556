"""median, trimmed_mean, krum, multi_krum and centered_clipping on a cluster plus an outlier."""

from __future__ import annotations

import numpy as np
import pytest

from dfl_ray.defense import (
    AggregationInput,
    centered_clipping,
    krum,
    median,
    multi_krum,
    trimmed_mean,
)

D = 20


def cluster_with_outlier(honest: int = 4, seed: int = 3) -> AggregationInput:
    """Own + `honest` received models near a common point, then one received model far away."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(D).astype(np.float32)
    own = centre + 0.01 * rng.standard_normal(D).astype(np.float32)
    near = centre + 0.01 * rng.standard_normal((honest, D)).astype(np.float32)
    outlier = centre + 100.0
    models = np.vstack([near, outlier[None, :]]).astype(np.float32)
    senders = tuple(f"h{i}" for i in range(honest)) + ("bad",)
    return AggregationInput(own, 0.9, models, senders, np.full(honest + 1, 0.9), {"h0": 0.5})


def candidates(inp: AggregationInput) -> np.ndarray:
    return np.vstack([inp.own[None, :], inp.models])


def test_median_ignores_one_outlier() -> None:
    inp = cluster_with_outlier()
    out = median(inp)
    np.testing.assert_allclose(out.model, np.median(candidates(inp), axis=0), rtol=1e-6)
    # Every coordinate of the result comes from the honest cluster.
    assert np.abs(out.model - inp.models[0]).max() < 0.1
    assert out.weights[-1] == 0.0
    assert out.reputations == {"h0": 0.5}


def test_trimmed_mean_drops_the_extremes() -> None:
    own = np.array([0.0, 10.0], np.float32)
    models = np.array([[1, 11], [2, 12], [100, -100], [3, 13]], dtype=np.float32)
    inp = AggregationInput(own, 0.5, models, ("a", "b", "c", "d"), np.full(4, 0.5), {})
    out = trimmed_mean(inp, trim=0.2)  # n = 5: one value dropped on each side
    np.testing.assert_allclose(out.model, [2.0, 11.0])
    assert out.weights[2] == 0.0


def test_trimmed_mean_with_nothing_to_trim_is_the_plain_mean() -> None:
    inp = cluster_with_outlier(honest=2)  # n = 4, floor(0.2 * 4) = 0
    out = trimmed_mean(inp, trim=0.2)
    np.testing.assert_allclose(out.model, candidates(inp).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(out.weights, [0.25, 0.25, 0.25])


def test_trimmed_mean_resists_one_outlier() -> None:
    inp = cluster_with_outlier(honest=4)  # n = 6, one value trimmed per side
    out = trimmed_mean(inp, trim=0.2)
    assert np.abs(out.model - inp.own).max() < 0.1
    assert out.weights[-1] == 0.0


def test_krum_picks_a_model_from_the_honest_cluster() -> None:
    inp = cluster_with_outlier()
    out = krum(inp, f=1)
    cands = candidates(inp)
    matches = [i for i in range(len(cands)) if np.array_equal(out.model, cands[i])]
    assert matches and matches[0] < len(cands) - 1
    assert out.weights[-1] == 0.0
    assert out.weights.sum() in (0.0, 1.0)


def test_multi_krum_averages_the_honest_cluster() -> None:
    inp = cluster_with_outlier()
    out = multi_krum(inp, f=1)  # m = n - f = 5: all of own + the four honest
    honest_mean = candidates(inp)[:-1].mean(axis=0)
    np.testing.assert_allclose(out.model, honest_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.weights, [0.2, 0.2, 0.2, 0.2, 0.0])


def test_krum_with_a_single_received_model_keeps_the_own_model() -> None:
    inp = cluster_with_outlier(honest=0)  # n = 2: the two candidates cannot be told apart
    out = krum(inp, f=3)
    np.testing.assert_array_equal(out.model, inp.own)
    assert out.weights.tolist() == [0.0]


def test_multi_krum_with_m_above_n_averages_everyone() -> None:
    inp = cluster_with_outlier(honest=1)
    out = multi_krum(inp, f=0, m=10)
    np.testing.assert_allclose(out.model, candidates(inp).mean(axis=0), rtol=1e-5)


def test_centered_clipping_bounds_the_move() -> None:
    inp = cluster_with_outlier()
    tau, n = 0.5, inp.k + 1
    for iters in (1, 3):
        out = centered_clipping(inp, tau=tau, iters=iters)
        move = float(np.linalg.norm(out.model.astype(np.float64) - inp.own))
        assert move <= iters * (inp.k / n) * tau + 1e-5
        # The result is the convex combination its weights describe.
        own_coeff = 1.0 - out.weights.sum()
        rebuilt = own_coeff * inp.own.astype(np.float64) + out.weights @ inp.models
        np.testing.assert_allclose(out.model, rebuilt, rtol=1e-5, atol=1e-5)
    # The outlier is pulled to within tau: its coefficient times 100 * sqrt(D) is at most tau / n.
    assert out.weights[-1] * np.linalg.norm(inp.models[-1] - inp.own) <= 1.01 * 3 * tau / n


def test_centered_clipping_with_infinite_tau_is_the_mean_of_all() -> None:
    inp = cluster_with_outlier()
    out = centered_clipping(inp, tau=float("inf"))
    np.testing.assert_allclose(out.model, candidates(inp).mean(axis=0), rtol=1e-5, atol=1e-5)


def test_centered_clipping_adaptive_tau_keeps_the_outlier_out() -> None:
    inp = cluster_with_outlier()
    out = centered_clipping(inp)
    assert np.linalg.norm(out.model - inp.own) < 0.1


@pytest.mark.parametrize(
    ("rule", "params", "name"),
    [
        (trimmed_mean, {"trim": 0.5}, "trim"),
        (trimmed_mean, {"trim": -0.1}, "trim"),
        (krum, {"f": -1}, "f"),
        (krum, {"f": 1.5}, "f"),
        (multi_krum, {"m": 0}, "m"),
        (centered_clipping, {"tau": -1.0}, "tau"),
        (centered_clipping, {"iters": 0}, "iters"),
    ],
)
def test_invalid_robust_rule_params(rule: object, params: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=f"parameter {name} "):
        rule(cluster_with_outlier(), **params)  # type: ignore[operator]
