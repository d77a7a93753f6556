"""Integration: a small DFL network on a local Ray instance, end to end, chains verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dfl_ray.cli import main as cli_main
from dfl_ray.ledger import read_chain
from dfl_ray.runner import run_experiment
from tests.conftest import tiny_config

pytestmark = pytest.mark.ray


def test_four_nodes_two_rounds_chains_verify(
    local_ray: None, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = run_experiment(tiny_config(tmp_path, data_dir), quiet=True)
    run_dir = tmp_path / "tiny"
    assert summary["rounds"] == 2 and summary["nodes"] == 4
    assert 0.0 <= summary["honest_accuracy_final"] <= 1.0
    assert summary["counters"]["published"] == 8
    assert summary["counters"]["accepted"] == 8 * 3  # ring of 4: everyone hears everyone
    assert summary["rejected"] == {}
    assert 0.0 < summary["ledger_time_share"] < 1.0
    assert json.loads((run_dir / "summary.json").read_text())["n_train"] == summary["n_train"]
    for name in ("config.yaml", "metrics.csv", "accuracy.png", "partition.json"):
        assert (run_dir / name).is_file()
    assert list(run_dir.glob("events.out.tfevents*"))
    for node in range(4):
        capsys.readouterr()
        assert cli_main(["ledger", "verify", str(run_dir / "chains" / f"node_{node}")]) == 0
        out = capsys.readouterr().out
        assert out.startswith("OK height=0"), out


def test_several_nodes_per_host_match_one_node_per_actor(
    local_ray: None, tmp_path: Path, data_dir: Path
) -> None:
    """The sync schedule is deterministic for a seed: neither the host layout nor the run's
    name changes the result, down to the bytes of every node's model."""
    a = run_experiment(
        tiny_config(tmp_path, data_dir, experiment={"name": "a"}, runtime={"hosts": 4}), quiet=True
    )
    b = run_experiment(
        tiny_config(tmp_path, data_dir, experiment={"name": "b"}, runtime={"hosts": 2}), quiet=True
    )
    assert a["node_accuracy_final"] == b["node_accuracy_final"]

    def models(name: str) -> list[bytes]:
        chains = [read_chain(tmp_path / name / "chains" / f"node_{n}") for n in range(4)]
        assert all(len(c.blocks) == 1 for c in chains)
        return [c.blocks[0].model_digest_after for c in chains]

    assert models("a") == models("b")

    # Another seed on the same shards (data.partition_seed): the shards stay, the models move.
    c = run_experiment(
        tiny_config(tmp_path, data_dir, experiment={"name": "c", "seed": 1},
                    data={"partition_seed": 0}, runtime={"hosts": 2}), quiet=True
    )
    run_experiment(
        tiny_config(tmp_path, data_dir, experiment={"name": "d", "seed": 1}, runtime={"hosts": 2}),
        quiet=True,
    )

    def shards(name: str) -> object:
        return json.loads((tmp_path / name / "partition.json").read_text())["label_histograms"]

    assert shards("c") == shards("a") != shards("d")
    assert c["node_accuracy_final"] != a["node_accuracy_final"]
    assert set(models("c")).isdisjoint(models("a"))


def test_async_schedule_runs(local_ray: None, tmp_path: Path, data_dir: Path) -> None:
    summary = run_experiment(
        tiny_config(tmp_path, data_dir, experiment={"name": "async"}, runtime={"schedule": "async"}),
        quiet=True,
    )
    assert summary["schedule"] == "async"
    assert summary["counters"]["published"] == 8
    assert 0.0 <= summary["honest_accuracy_final"] <= 1.0


def test_an_observing_attack_and_diverging_training_run_end_to_end(
    local_ray: None, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ALIE attackers over Ray, and local training that diverges every round: the run ends,
    reports the divergence, and every chain still verifies."""
    summary = run_experiment(
        tiny_config(tmp_path, data_dir, experiment={"name": "wild"},
                    attack={"kind": "alie", "malicious": 2, "params": {"honest_turns": 1}},
                    training={"lr": 1e30}),
    )
    out = capsys.readouterr().out
    assert summary["counters"]["diverged"] == 8  # 4 nodes x 2 rounds
    assert "local training diverged 8 times" in out
    assert summary["counters"]["aggregations"] == 8
    for node in range(4):
        assert cli_main(["ledger", "verify", str(tmp_path / "wild" / "chains" / f"node_{node}")]) == 0
