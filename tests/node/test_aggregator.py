"""The node's aggregator: the rule over the buffer, then server momentum, on a real node."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dfl_ray.defense.base import AggregationInput, AggregationResult
from tests.helpers import local_host, small_config


def test_node_applies_momentum_to_its_rule_results(tmp_path: Path) -> None:
    beta = 0.5
    host = local_host(small_config(defense={"rule": "fedavg", "momentum": beta}), tmp_path)
    node = host.nodes[0]
    initial = node.get_vector()
    results: list[np.ndarray] = []
    rule = node.aggregator.rule

    def recording(inp: AggregationInput, params: dict[str, float]) -> AggregationResult:
        out = rule(inp, params)
        results.append(out.model.copy())
        return out

    node.aggregator.rule = recording  # type: ignore[assignment]
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
    assert host.nodes[0].aggregator.velocity is None and host.nodes[0].aggregator.anchor is None
