"""How many host actors carry a network, and a network above the actor-per-node limit on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dfl_ray.actors.network import ACTOR_PER_NODE_MAX, Network, resolve_hosts
from dfl_ray.config import Config
from dfl_ray.data import partition
from dfl_ray.models import LeNet, ModelSpec, model_to_vector
from dfl_ray.topology import build_topology, neighbors
from tests.helpers import genesis_for, small_config, synthetic_arrays


def test_hosts_auto_is_one_actor_per_node_for_small_networks() -> None:
    assert resolve_hosts(0, 10, 2.0) == 10
    assert resolve_hosts(0, ACTOR_PER_NODE_MAX, 2.0) == ACTOR_PER_NODE_MAX
    assert resolve_hosts(0, 2, 64.0) == 2


def test_hosts_auto_is_one_host_per_cpu_for_large_networks() -> None:
    assert resolve_hosts(0, ACTOR_PER_NODE_MAX + 1, 2.0) == 2
    assert resolve_hosts(0, 1000, 16.0) == 16
    assert resolve_hosts(0, 1000, 2.5) == 2  # whole CPUs only
    assert resolve_hosts(0, 40, 0.5) == 1  # at least one host
    assert resolve_hosts(0, 40, 64.0) == 40  # never more hosts than nodes


def test_hosts_requested_are_taken_as_given() -> None:
    assert resolve_hosts(3, 1000, 2.0) == 3
    assert resolve_hosts(1, 10, 16.0) == 1
    assert resolve_hosts(50, 10, 2.0) == 10


@pytest.mark.parametrize(
    "requested, nodes, cpus",
    [(-1, 10, 2.0), (0, 0, 2.0), (0, 10, 0.0), (0, 10, float("nan")), (True, 10, 2.0)],
)
def test_invalid_hosts_arguments(requested: Any, nodes: int, cpus: float) -> None:
    with pytest.raises(ValueError):
        resolve_hosts(requested, nodes, cpus)


def build_network(config: Config, run_dir: Path) -> Network:
    torch.manual_seed(0)
    model = LeNet()
    spec = ModelSpec.of(model, "lenet")
    initial = model_to_vector(model)
    n = config.topology.nodes
    arrays: dict[str, Any] = synthetic_arrays(n_train=8 * n, seed=0)
    shards = partition(arrays["train_labels"], n, kind="iid", seed=0, val_fraction=0.25)
    graph = build_topology("regular", n, degree=config.topology.degree, seed=0)
    return Network(
        config, shards=shards, neighbors=neighbors(graph),
        genesis=genesis_for(config, initial, spec), spec=spec,
        arrays={**arrays, "initial": initial}, run_dir=str(run_dir),
    )


@pytest.mark.ray
def test_large_network_runs_on_one_host_per_cpu(local_ray: None, tmp_path: Path) -> None:
    n, degree = ACTOR_PER_NODE_MAX + 2, 4
    config = small_config(
        topology={"kind": "regular", "nodes": n, "degree": degree},
        defense={"rule": "fedavg", "buffer_size": degree},
        training={"local_steps": 1, "batch_size": 8},
        ledger={"ttl": 1, "keep_payloads": 0},
    )
    net = build_network(config, tmp_path)
    try:
        assert len(net.hosts) == 2  # the cluster's CPUs
        assert sorted(len(g) for g in net.groups) == [n // 2, n // 2]
        net.run_round(0)
        stats = net.stats()
    finally:
        net.shutdown()
    assert len(stats) == n
    for st in stats.values():
        assert st["rejected"] == {}
        assert st["counters"]["accepted"] == degree  # within and across hosts alike
        assert st["counters"]["receipts"] == degree
        assert st["counters"]["aggregations"] == 1
