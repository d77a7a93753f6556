"""Spread placement on a four-machine Ray cluster faked on one host, and the cluster launcher file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from dfl_ray.actors import network
from dfl_ray.actors.network import PlacementError, host_resources
from dfl_ray.cli import main as cli_main
from dfl_ray.config import Config, config_from_dict
from dfl_ray.runner import run_experiment
from tests.conftest import tiny_tree

REPO = Path(__file__).resolve().parents[2]
CLUSTER_FILE = REPO / "cluster" / "four_node.yaml"
MACHINES = 4
STORE_BYTES = 80 * 1024**2  # each fake machine's object store; the runs move a few MB


def spread_config(out: Path, data_dir: Path, **sections: dict[str, Any]) -> Config:
    """The tiny run with dfl_trust, one host actor per machine."""
    tree = tiny_tree(out, data_dir, experiment={"name": "spread"},
                     defense={"rule": "dfl_trust"}, runtime={"placement": "spread", "hosts": 4})
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return config_from_dict(tree)


@pytest.fixture(scope="module")
def four_machines() -> Iterator[dict[str, str]]:
    """Four Ray nodes, each marked by its own resource machine_<i>; yields node id -> machine.

    The head has two CPUs and the others one, like a mixed cluster: a host actor's default CPU
    share must fit the smallest machine.
    """
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"machine_0": 1},
                        "object_store_memory": STORE_BYTES, "include_dashboard": False},
    )
    try:
        for i in range(1, MACHINES):
            cluster.add_node(num_cpus=1, resources={f"machine_{i}": 1},
                             object_store_memory=STORE_BYTES)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        machines = {
            node["NodeID"]: next(r for r in node["Resources"] if r.startswith("machine_"))
            for node in ray.nodes() if node["Alive"]
        }
        yield machines
    finally:
        ray.shutdown()
        cluster.shutdown()


# ------------------------------------------------------------------ on the fake cluster


@pytest.mark.ray
def test_spread_puts_each_host_on_its_own_machine(
    four_machines: dict[str, str], tmp_path: Path, data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert len(four_machines) == MACHINES
    summary = run_experiment(spread_config(tmp_path, data_dir), quiet=True)
    placement = summary["placement"]
    assert sorted(placement) == ["0", "1", "2", "3"]
    used = {four_machines[ray_node] for ray_node in placement.values()}
    assert used == {f"machine_{i}" for i in range(MACHINES)}
    assert summary["counters"]["published"] == 8
    assert summary["rejected"] == {}
    run_dir = tmp_path / "spread"
    assert json.loads((run_dir / "summary.json").read_text())["placement"] == placement
    for node in range(4):
        capsys.readouterr()
        assert cli_main(["ledger", "verify", str(run_dir / "chains" / f"node_{node}")]) == 0
        assert capsys.readouterr().out.startswith("OK "), node


@pytest.mark.ray
def test_spread_keeps_a_host_s_nodes_together(
    four_machines: dict[str, str], tmp_path: Path, data_dir: Path
) -> None:
    """Two hosts of two nodes each: two machines, and both nodes of a host on the same one."""
    summary = run_experiment(
        spread_config(tmp_path, data_dir, experiment={"name": "two"}, runtime={"hosts": 2}),
        quiet=True,
    )
    where = {int(n): four_machines[r] for n, r in summary["placement"].items()}
    assert where[0] == where[1] and where[2] == where[3]
    assert where[0] != where[2]
    assert ray.util.placement_group_table() and all(
        pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values()
    )


@pytest.mark.ray
def test_invalid_spread_more_hosts_than_machines(
    four_machines: dict[str, str], tmp_path: Path, data_dir: Path
) -> None:
    config = spread_config(
        tmp_path, data_dir, experiment={"name": "five"}, topology={"nodes": 5},
        runtime={"hosts": 5},
    )
    groups_before = len(ray.util.placement_group_table())
    with pytest.raises(PlacementError) as caught:
        run_experiment(config, quiet=True)
    message = str(caught.value)
    assert "5 host actors" in message and f"{MACHINES} node(s)" in message
    assert f"--hosts {MACHINES}" in message and "--placement pack" in message
    # It failed before reserving anything.
    assert len(ray.util.placement_group_table()) == groups_before


# ------------------------------------------------------------------ sizing, without Ray


def fake_cluster(monkeypatch: pytest.MonkeyPatch, cpus_per_machine: list[float]) -> None:
    nodes = [{"Alive": True, "Resources": {"CPU": c}} for c in cpus_per_machine]
    monkeypatch.setattr(network.ray, "nodes", lambda: nodes)
    monkeypatch.setattr(network.ray, "cluster_resources",
                        lambda: {"CPU": float(sum(cpus_per_machine))})


def sizing_config(placement: str) -> Config:
    return config_from_dict({"runtime": {"placement": placement}})


def test_spread_share_fits_the_smallest_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cluster(monkeypatch, [8.0, 4.0, 4.0, 4.0])
    cpus, gpus = host_resources(sizing_config("spread"), 4, [1, 1, 1, 1])
    assert cpus == 4.0  # not 20 / 4 = 5, which no 4-CPU machine could hold
    assert gpus == [0.0] * 4


def test_spread_share_ignores_machines_without_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cluster(monkeypatch, [0.0, 4.0, 4.0])
    cpus, _ = host_resources(sizing_config("spread"), 2, [1, 1])
    assert cpus == 4.0


def test_pack_share_divides_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cluster(monkeypatch, [8.0, 4.0, 4.0, 4.0])
    cpus, _ = host_resources(sizing_config("pack"), 3, [1, 1, 1])
    assert cpus == pytest.approx(6.666, abs=1e-9)  # rounded down to Ray's precision


# ------------------------------------------------------------------ the launcher file


def test_cluster_file_is_a_valid_launcher_config() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER_FILE.read_text())
    assert config["provider"]["type"] == "local"
    assert len(config["provider"]["worker_ips"]) == MACHINES - 1
    validate_config(prepare_config(config))  # Ray's own schema: unknown fields are errors


def test_cluster_file_keeps_token_auth_and_a_local_dashboard() -> None:
    config = yaml.safe_load(CLUSTER_FILE.read_text())
    text = CLUSTER_FILE.read_text()
    assert "RAY_AUTH_MODE=disabled" not in text
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert "export RAY_AUTH_MODE=token" in start, key
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "~/.ray/auth_token" in config["file_mounts"].values()
    for placeholder in ("HEAD_IP_HERE", "SSH_USER_HERE", "SSH_PRIVATE_KEY_PATH_HERE"):
        assert placeholder in text


def test_invalid_cluster_file_field_is_rejected() -> None:
    """The schema check above can fail: a misspelt field does not pass it."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER_FILE.read_text())
    config["setup_command"] = config.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_command"):
        validate_config(prepare_config(config))
