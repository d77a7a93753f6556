"""The node's aggregator: the rule over the buffer, then server momentum, on a real node."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dfl_ray.defense.base import AggregationInput, AggregationResult
from dfl_ray.node.node import DFLNode
from tests.helpers import local_host, small_config


def record_rule_results(node: DFLNode) -> list[np.ndarray]:
    """Wrap `node`'s aggregation rule so that each result's model is appended to the list returned."""
    results: list[np.ndarray] = []
    rule = node.aggregator.rule

    def recording(inp: AggregationInput, params: dict[str, float]) -> AggregationResult:
        out = rule(inp, params)
        results.append(out.model.copy())
        return out

    node.aggregator.rule = recording  # type: ignore[assignment]
    return results


def test_node_applies_momentum_to_its_rule_results(tmp_path: Path) -> None:
    beta = 0.5
    host = local_host(small_config(defense={"rule": "fedavg", "momentum": beta}), tmp_path)
    node = host.nodes[0]
    initial = node.get_vector()
    results = record_rule_results(node)
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


def test_the_acceptance_test_cuts_a_costly_aggregate_short_on_a_real_node(
        tmp_path: Path) -> None:
    tolerance = 0.05
    host = local_host(small_config(defense={"rule": "fedavg", "momentum": 0.5,
                                            "accept": tolerance}), tmp_path)
    node = host.nodes[0]
    assert node.aggregator.probe is not None  # kept for the test though fedavg never calls it
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def far(inp: AggregationInput, params: dict[str, float]) -> AggregationResult:
        # The rule hands back a model far from the own one: its validation loss is high.
        model = inp.own + np.float32(5.0)
        seen.append((inp.own.copy(), model))
        return AggregationResult(model, dict(inp.reputations), np.ones(inp.k) / (inp.k + 1))

    node.aggregator.rule = far  # type: ignore[assignment]
    initial = node.get_vector()
    host.begin_round(0)
    host.end_round(0)
    host.finish_round()
    own, candidate = seen[0]
    kept = node.get_vector()
    loss = node.learner.loss
    assert loss(candidate) > loss(own) + tolerance  # the test had something to cut
    assert loss(kept) <= loss(own) + tolerance
    step = float(np.median((kept - own) / (candidate - own)))
    assert round(step, 4) in (0.0, 0.5, 0.25, 0.125, 0.0625)
    np.testing.assert_allclose(kept, own + np.float32(step) * (candidate - own), atol=1e-5)
    assert node.counters["accept_shortened"] == 1
    # momentum carries on the move made, not the one cut short
    aggregator = node.aggregator
    assert aggregator.anchor is not None and aggregator.velocity is not None
    np.testing.assert_array_equal(aggregator.anchor, kept)
    np.testing.assert_allclose(aggregator.velocity, initial - kept, atol=1e-6)


def test_an_aggregate_within_the_tolerance_is_kept_whole(tmp_path: Path) -> None:
    host = local_host(small_config(defense={"rule": "fedavg", "accept": 100.0}), tmp_path)
    node = host.nodes[0]
    results = record_rule_results(node)
    host.begin_round(0)
    host.end_round(0)
    host.finish_round()
    np.testing.assert_array_equal(node.get_vector(), results[0])
    assert node.counters["accept_shortened"] == 0


def test_without_the_acceptance_test_fedavg_nodes_keep_no_probe(tmp_path: Path) -> None:
    host = local_host(small_config(defense={"rule": "fedavg"}), tmp_path)
    assert host.nodes[0].aggregator.probe is None
