"""Server momentum (FedAvgM) on top of a rule: the step by hand and its checks."""

from __future__ import annotations

import numpy as np
import pytest

from dfl_ray.config import ConfigError, DefenseConfig
from dfl_ray.defense.momentum import default_momentum, momentum_step


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_momentum_step_by_hand() -> None:
    anchor, velocity = vec(1.0, 2.0), vec(0.5, -1.0)
    model = momentum_step(anchor, vec(0.0, 3.0), velocity, 0.5)
    # v = 0.5 * (0.5, -1) + ((1, 2) - (0, 3)) = (1.25, -1.5); w = anchor - v
    np.testing.assert_allclose(velocity, [1.25, -1.5])
    np.testing.assert_allclose(model, [-0.25, 3.5])
    assert model.dtype == np.float32 and not np.shares_memory(model, anchor)


def test_zero_momentum_returns_the_rule_result() -> None:
    velocity = vec(9.0, 9.0)
    model = momentum_step(vec(1.0, 2.0), vec(0.25, 3.0), velocity, 0.0)
    np.testing.assert_allclose(model, [0.25, 3.0])


@pytest.mark.parametrize("beta", [1.0, -0.1, float("nan"), True, "0.5"])
def test_momentum_out_of_range_is_refused(beta: object) -> None:
    with pytest.raises(ValueError, match="momentum"):
        momentum_step(vec(1.0), vec(1.0), vec(0.0), beta)  # type: ignore[arg-type]


def test_momentum_refuses_mismatched_vectors() -> None:
    with pytest.raises(ValueError, match="velocity must be float32 shaped like anchor"):
        momentum_step(vec(1.0, 2.0), vec(1.0, 2.0), vec(0.0), 0.5)


def test_config_default_is_per_rule_and_validated() -> None:
    assert DefenseConfig().effective_momentum == default_momentum("dfl_guard") > 0.0
    # the original's rules and the published aggregators run as their sources state them
    for rule in ("half_fedavg", "dfl_reputation", "fedavg", "median", "krum"):
        assert DefenseConfig(rule=rule).effective_momentum == 0.0
    assert DefenseConfig(rule="median", momentum=0.3).effective_momentum == 0.3
    assert DefenseConfig(momentum=0.0).effective_momentum == 0.0
    with pytest.raises(ConfigError, match=r"defense\.momentum must be in \[0, 1\)"):
        DefenseConfig(momentum=1.0)
