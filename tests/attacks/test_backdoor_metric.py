"""The backdoor's success rate travels with each node's accuracy into the run's scalars."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from dfl_ray.node.group import NodeEvaluation
from dfl_ray.runner import accuracy_scalars


def test_node_evaluation_is_the_accuracy_and_survives_pickling() -> None:
    ev = NodeEvaluation(0.9, 0.25)
    assert ev == 0.9 and isinstance(ev, float)
    back = pickle.loads(pickle.dumps(ev))
    assert back == 0.9 and back.backdoor == 0.25
    assert NodeEvaluation(0.5).backdoor is None


def test_accuracy_scalars_report_the_honest_backdoor_success() -> None:
    accs = {0: NodeEvaluation(0.9, 0.1), 1: NodeEvaluation(0.8, 0.3), 2: NodeEvaluation(0.1, 1.0)}
    out = accuracy_scalars(accs, attackers={2})
    assert out["accuracy/honest_mean"] == pytest.approx(0.85)
    assert out["backdoor/honest_mean"] == pytest.approx(0.2)
    assert out["backdoor/honest_max"] == pytest.approx(0.3)
    plain = accuracy_scalars({0: 0.9, 1: 0.8}, attackers=set())
    assert not any(k.startswith("backdoor/") for k in plain)
    assert np.isclose(plain["accuracy/honest_mean"], 0.85)


def run_one_round(attack: dict[str, object]) -> dict[int, float]:
    from tests.helpers import local_host, small_config

    config = small_config(attack=attack, defense={"rule": "dfl_shield", "buffer_size": 2})
    host = local_host(config, None)
    assert host.begin_round(0) == []
    assert host.end_round(0) == []
    host.finish_round()
    for node in host.nodes.values():
        assert node.aggregator.probe is not None  # dfl_shield calls the validation probe
        assert node.counters["aggregations"] == 1
    return host.evaluate()


def test_group_evaluation_carries_the_backdoor_success_of_every_node() -> None:
    accs = run_one_round({"kind": "backdoor", "malicious": 1, "params": {"target": 1}})
    assert len(accs) == 4
    for value in accs.values():
        assert isinstance(value, NodeEvaluation)
        assert value.backdoor is not None and 0.0 <= value.backdoor <= 1.0
    clean = run_one_round({"kind": "none", "malicious": 0})
    assert all(getattr(v, "backdoor", None) is None for v in clean.values())
