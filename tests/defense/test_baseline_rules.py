"""fedavg, half_fedavg and the original dfl_reputation rule, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from dfl_ray.defense import AggregationInput, dfl_reputation, fedavg, half_fedavg

MODELS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
OWN = np.array([2.0, 2.0, 2.0], dtype=np.float32)


def three(scores: list[float], reputations: dict[str, float]) -> AggregationInput:
    return AggregationInput(OWN, 0.9, MODELS, ("a", "b", "c"), np.array(scores), reputations)


def test_fedavg_is_the_mean_of_received_models() -> None:
    models = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]], dtype=np.float32)
    inp = AggregationInput(np.zeros(2, np.float32), 0.5, models, ("a", "b", "c"),
                           np.array([0.1, 0.2, 0.3]), {"a": 0.4, "z": 0.7})
    out = fedavg(inp)
    np.testing.assert_allclose(out.model, [3.0, 5.0], rtol=1e-6)
    np.testing.assert_allclose(out.weights, [1 / 3, 1 / 3, 1 / 3])
    assert out.reputations == {"a": 0.4, "z": 0.7}


def test_half_fedavg_mixes_own_and_mean_half_and_half() -> None:
    models = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]], dtype=np.float32)
    inp = AggregationInput(np.array([1.0, -5.0], np.float32), 0.5, models, ("a", "b", "c"),
                           np.array([0.1, 0.2, 0.3]), {})
    out = half_fedavg(inp)
    np.testing.assert_allclose(out.model, [2.0, 0.0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.weights, [1 / 6, 1 / 6, 1 / 6])
    assert out.reputations == {}


def test_dfl_reputation_matches_the_hand_computed_formula() -> None:
    # c is new (initial 1.0) and has the minimum score, so only c is penalised.
    out = dfl_reputation(three([0.8, 0.6, 0.2], {"a": 1.0, "b": 0.5, "x": 0.3}), delta=0.05)
    assert out.reputations == {"a": 1.0, "b": 0.5, "c": 0.95, "x": 0.3}
    # Weights a_i * R0_i = 0.8, 0.3, 0.2 (c's R0 is 1.0, before its penalty); sum 1.3.
    expected = [2 / 2 + 0.5 * 0.8 / 1.3, 2 / 2 + 0.5 * 0.3 / 1.3, 2 / 2 + 0.5 * 0.2 / 1.3]
    np.testing.assert_allclose(out.model, expected, rtol=1e-6)
    np.testing.assert_allclose(out.weights, [0.4 / 1.3, 0.15 / 1.3, 0.1 / 1.3])


def test_dfl_reputation_penalises_every_tied_minimum_and_floors_at_zero() -> None:
    out = dfl_reputation(three([0.3, 0.7, 0.3], {"a": 0.02, "b": 0.5, "c": 0.5}), delta=0.05)
    assert out.reputations == {"a": 0.0, "b": 0.5, "c": pytest.approx(0.45)}
    # a's weight still uses R0 = 0.02, not the floored 0: 0.006, 0.35, 0.15.
    np.testing.assert_allclose(out.weights, 0.5 * np.array([0.006, 0.35, 0.15]) / 0.506)


def test_dfl_reputation_falls_back_to_plain_mean_when_all_weights_are_zero() -> None:
    out = dfl_reputation(three([0.5, 0.6, 0.7], {"a": 0.0, "b": 0.0, "c": 0.0}))
    np.testing.assert_allclose(out.model, [1 + 0.5 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(out.weights, [1 / 6] * 3)
    assert out.reputations == {"a": 0.0, "b": 0.0, "c": 0.0}


def test_dfl_reputation_drains_equally_good_senders_and_never_recovers() -> None:
    # The original's flaw, kept on purpose: equal scores are all "the minimum" every time.
    reputations: dict[str, float] = {}
    history = []
    for _ in range(25):
        out = dfl_reputation(three([0.9, 0.9, 0.9], reputations), delta=0.05)
        reputations = out.reputations
        history.append(reputations["a"])
    assert all(later <= earlier for earlier, later in zip(history, history[1:], strict=False))
    assert reputations == {"a": 0.0, "b": 0.0, "c": 0.0}


@pytest.mark.parametrize(("params", "name"), [({"delta": -0.1}, "delta"),
                                              ({"initial": 1.5}, "initial"),
                                              ({"delta": "0.05"}, "delta")])
def test_invalid_dfl_reputation_params(params: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        dfl_reputation(three([0.1, 0.2, 0.3], {}), **params)  # type: ignore[arg-type]
