"""Server momentum (FedAvgM) on top of a rule: the step by hand, its checks, and in a node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfl_ray.config import ConfigError, DefenseConfig
from dfl_ray.defense.base import AggregationInput, AggregationResult
from dfl_ray.defense.momentum import default_momentum, momentum_step
from tests.helpers import local_host, small_config


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


def test_node_applies_momentum_to_its_rule_results(tmp_path: Path) -> None:
    beta = 0.5
    host = local_host(small_config(defense={"rule": "fedavg", "momentum": beta}), tmp_path)
    node = host.nodes[0]
    initial = node.get_vector()
    results: list[np.ndarray] = []
    rule = node.rule

    def recording(inp: AggregationInput, params: dict[str, float]) -> AggregationResult:
        out = rule(inp, params)
        results.append(out.model.copy())
        return out

    node.rule = recording  # type: ignore[assignment]
    for r in range(2):
        host.begin_round(r)
        host.end_round(r)
        host.finish_round()
        if r == 0:  # the velocity starts at zero: the first step is the rule's result
            np.testing.assert_allclose(node.get_vector(), results[0], atol=1e-6)
    r0, r1 = results
    # v1 = initial - r0, v2 = beta v1 + (r0 - r1), w2 = r0 - v2 = r1 - beta (initial - r0)
    expected = r1 - beta * (initial - r0)
    np.testing.assert_allclose(node.get_vector(), expected, atol=1e-5)
    assert not np.allclose(expected, r1, atol=1e-4)  # momentum really moved the model


def test_without_momentum_a_node_keeps_no_velocity(tmp_path: Path) -> None:
    host = local_host(small_config(defense={"rule": "fedavg"}), tmp_path)
    assert host.nodes[0].velocity is None and host.nodes[0].anchor is None
