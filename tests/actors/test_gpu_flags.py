"""GPU flags on a machine without GPUs: clear errors before any actor starts, or a CPU fallback.

The GPU path itself (an actor holding a GPU share and training on cuda) needs a GPU and is not
exercised here; `resolve_device` is tested in tests/node/test_build.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
from ray._private import state

from dfl_ray.actors import network
from dfl_ray.actors.network import PlacementError, host_resources
from dfl_ray.cli import main as cli_main
from dfl_ray.config import Config, config_from_dict
from dfl_ray.runner import run_experiment
from tests.conftest import tiny_tree


def gpu_tree(out: Path, data_dir: Path, name: str, **runtime: Any) -> dict[str, Any]:
    """The tiny run without attackers, fedavg, two host actors, with these runtime fields."""
    return tiny_tree(out, data_dir, experiment={"name": name, "eval_every": 2},
                     data={"partition": "iid"}, attack={"kind": "none", "malicious": 0},
                     defense={"rule": "fedavg"}, runtime={"hosts": 2, **runtime})


def actors_created() -> int:
    # Every actor ever created in this Ray instance, dead ones included.
    return len(state.actors())


# ------------------------------------------------------------------ host_resources, without Ray


def flags(device: str, gpus_per_node: float) -> Config:
    return config_from_dict({"runtime": {"device": device, "gpus_per_node": gpus_per_node}})


def cluster_with(monkeypatch: pytest.MonkeyPatch, resources: dict[str, float]) -> None:
    monkeypatch.setattr(network.ray, "cluster_resources", lambda: dict(resources))


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_invalid_gpus_on_a_cluster_without_gpus(
    monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    cluster_with(monkeypatch, {"CPU": 2.0})
    with pytest.raises(PlacementError) as caught:
        host_resources(flags(device, 0.25), 2, [2, 2])
    assert "--gpus-per-node 0.25" in str(caught.value)
    assert "--device auto" in str(caught.value)


def test_auto_asks_for_no_gpus_on_a_cluster_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster_with(monkeypatch, {"CPU": 2.0})
    assert host_resources(flags("auto", 0.25), 2, [2, 2]) == (1.0, [0.0, 0.0])


def test_gpu_share_per_host_is_per_node_share_times_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster_with(monkeypatch, {"CPU": 4.0, "GPU": 1.0})
    cpus, gpus = host_resources(flags("cuda", 0.25), 2, [3, 1])
    assert cpus == 2.0
    assert gpus == [0.75, 0.25]


def test_invalid_cuda_without_gpus_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster_with(monkeypatch, {"CPU": 4.0, "GPU": 1.0})
    with pytest.raises(PlacementError, match="--gpus-per-node > 0"):
        host_resources(flags("cuda", 0.0), 2, [1, 1])


# ------------------------------------------------------------------ runs on this machine


@pytest.mark.ray
@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_invalid_gpu_run_fails_before_any_actor(
    local_ray: None, tmp_path: Path, data_dir: Path, device: str
) -> None:
    assert ray.cluster_resources().get("GPU", 0.0) == 0.0  # this machine has no GPU
    config = config_from_dict(
        gpu_tree(tmp_path, data_dir, f"gpu_{device}", gpus_per_node=0.25, device=device)
    )
    before = actors_created()
    with pytest.raises(PlacementError, match=r"--gpus-per-node 0\.25.*--device auto"):
        run_experiment(config, quiet=True)
    assert actors_created() == before
    assert not (tmp_path / f"gpu_{device}" / "chains").exists()


@pytest.mark.ray
def test_invalid_gpu_flags_on_the_command_line(
    local_ray: None, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = actors_created()
    code = cli_main([
        "run", "--data-dir", str(data_dir), "--out", str(tmp_path), "--name", "cli_gpu",
        "--nodes", "4", "--topology", "ring", "--rounds", "1", "--attack", "none",
        "--malicious", "0", "--gpus-per-node", "0.25", "--device", "cuda",
        "--experiment.progress", "false",
    ])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: --gpus-per-node 0.25" in err and "--device auto" in err
    assert "Traceback" not in err
    assert actors_created() == before


@pytest.mark.ray
def test_auto_falls_back_to_the_cpu_and_runs(
    local_ray: None, tmp_path: Path, data_dir: Path
) -> None:
    config = config_from_dict(
        gpu_tree(tmp_path, data_dir, "gpu_auto", gpus_per_node=0.25, device="auto")
    )
    summary = run_experiment(config, quiet=True)
    assert summary["counters"]["published"] == 8
    assert summary["rejected"] == {}
    assert 0.0 <= summary["honest_accuracy_final"] <= 1.0
    assert sorted(summary["placement"]) == ["0", "1", "2", "3"]
