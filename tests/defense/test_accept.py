"""The acceptance test: the longest step towards the aggregate that the node's own validation
loss allows, by hand, and its checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dfl_ray.config import ConfigError, DefenseConfig
from dfl_ray.defense.accept import accept_step, check_tolerance


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def squared(x: np.ndarray) -> float:
    """A validation loss with its minimum at the own model (the origin)."""
    return float(np.sum(x.astype(np.float64) ** 2))


def test_a_candidate_within_the_tolerance_is_kept_whole() -> None:
    candidate = vec(0.5, 0.0)  # loss 0.25 over the own model's 0
    model, step = accept_step(vec(0.0, 0.0), candidate, squared, 0.25)
    assert step == 1.0 and model is candidate


def test_a_costly_candidate_is_cut_to_the_longest_step_that_passes() -> None:
    own, candidate = vec(0.0, 0.0), vec(2.0, 0.0)  # loss 4
    model, step = accept_step(own, candidate, squared, 0.3)
    # s = 1/2: loss 1; s = 1/4: loss 0.25 <= 0.3
    assert step == 0.25
    np.testing.assert_allclose(model, [0.5, 0.0])
    assert model.dtype == np.float32 and squared(model) <= squared(own) + 0.3
    np.testing.assert_array_equal(own, [0.0, 0.0])  # inputs untouched
    np.testing.assert_array_equal(candidate, [2.0, 0.0])


def test_no_passing_step_keeps_the_own_model() -> None:
    own = vec(1.0, 1.0)
    model, step = accept_step(own, vec(100.0, 1.0), lambda x: squared(x - own), 1e-3)
    assert step == 0.0
    np.testing.assert_array_equal(model, own)
    assert not np.shares_memory(model, own)


def test_a_nan_loss_fails_the_test() -> None:
    def loss(x: np.ndarray) -> float:
        return math.nan if x[0] > 0.3 else squared(x)

    model, step = accept_step(vec(0.0), vec(1.0), loss, 10.0)
    assert step == 0.25  # 1 and 1/2 give NaN; 1/4 passes


def test_an_infinite_tolerance_never_calls_the_loss() -> None:
    def loss(x: np.ndarray) -> float:
        raise AssertionError("the test is off: no validation pass")

    candidate = vec(3.0)
    assert accept_step(vec(0.0), candidate, loss, math.inf) == (candidate, 1.0)


@pytest.mark.parametrize("bad", [-0.1, math.nan, "1", True])
def test_tolerance_out_of_range_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="accept must be a number of nats >= 0"):
        check_tolerance(bad)


def test_config_names_a_bad_tolerance() -> None:
    assert DefenseConfig().accept is None  # off by default
    assert DefenseConfig(accept=1.5).accept == 1.5
    with pytest.raises(ConfigError, match=r"defense\.accept must be a number of nats >= 0"):
        DefenseConfig(accept=-1.0)
