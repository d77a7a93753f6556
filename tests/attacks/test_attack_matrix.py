"""experiments/attack_matrix.py: trial configs, defense parameters, and cells judged per seed."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

import pytest

from dfl_ray.config import config_from_dict
from tests.helpers import load_script


@pytest.fixture(scope="module")
def matrix() -> ModuleType:
    return load_script("experiments/attack_matrix.py")


def args(**over: object) -> argparse.Namespace:
    values = {"out": Path("/tmp/m"), "rounds": 3, "eval_every": 1, "data_dir": None, "hosts": 1,
              "partitions": ["dirichlet0.1"], "attacks": ["gate_edge"], "defenses": ["dfl_shield"],
              "seeds": [0, 2], "no_removed": False, "malicious": [3], "partition_seed": None}
    values.update(over)
    return argparse.Namespace(**values)


def test_every_suite_attack_and_the_removed_run_make_valid_configs(matrix: ModuleType) -> None:
    for attack in [*matrix.ATTACKS, "removed"]:
        tree = matrix.trial_config(args(), "labels2", attack, "dfl_shield:beta=0.1", 1, 0.5)
        cfg = config_from_dict(tree)
        assert cfg.defense.params == {"beta": 0.1} and cfg.experiment.seed == 1
        if attack == "removed":
            assert cfg.topology.absent == (7, 8, 9) and not cfg.attackers
        elif attack != "none":
            assert cfg.attackers == (7, 8, 9)


def test_node_keys_in_a_defense_spec_set_the_defense_section(matrix: ModuleType) -> None:
    tree = matrix.trial_config(args(), "labels2", "none",
                               "dfl_guard:clip=1,accept=1.5,momentum=0,grad_clip=4,"
                               "probe_classes=own", 0, 0.5)
    cfg = config_from_dict(tree)
    assert cfg.defense.params == {"clip": 1.0}
    assert cfg.defense.accept == 1.5 and cfg.defense.effective_momentum == 0.0
    assert cfg.defense.probe_classes == "own"
    assert cfg.training.grad_clip == 4.0


def run(acc: float, backdoor: float | None = None) -> dict[str, float | None]:
    """A trial's summary as summarize reads it."""
    return {"honest_accuracy_final": acc, "backdoor_success": backdoor}


def test_cells_are_judged_against_the_removed_run_of_the_same_seed(matrix: ModuleType) -> None:
    results = {
        "dirichlet0.1__gate_edge__dfl_shield__s0": run(0.94),
        "dirichlet0.1__gate_edge__dfl_shield__s2": run(0.85),
        "dirichlet0.1__removed__dfl_shield__s0": run(0.95),
        "dirichlet0.1__removed__dfl_shield__s2": run(0.863),
    }
    table, heat = matrix.summarize(results, args())
    row = next(line for line in table.splitlines() if "gate_edge" in line)
    assert "0.895 / 0.850" in row  # mean / worst accuracy
    assert "-0.012 / -0.013" in row  # gaps: -0.010 (seed 0) and -0.013 (seed 2)
    assert heat == [("dirichlet0.1 gate_edge", "dfl_shield", pytest.approx(-0.013))]


def test_fewer_attackers_are_the_last_nodes_and_judged_against_their_own_removed_run(
        matrix: ModuleType) -> None:
    one = config_from_dict(matrix.trial_config(args(), "labels2", "gate_edge", "dfl_guard", 0,
                                               0.5, malicious=1))
    assert one.attackers == (9,) and one.experiment.name == "labels2__gate_edge__dfl_guard__f1__s0"
    gone = config_from_dict(matrix.trial_config(args(), "labels2", "removed", "dfl_guard", 0,
                                                0.5, malicious=2))
    assert gone.topology.absent == (8, 9) and not gone.attackers
    # The default count keeps the names of earlier matrices; `none` has one trial for any count.
    assert matrix.trial_name("labels2", "gate_edge", "dfl_guard", 0) == "labels2__gate_edge__dfl_guard__s0"
    many = args(malicious=[1, 3], attacks=["none", "gate_edge"])
    assert [t[1:] for t in matrix.trials(many) if t[3] == 0] == [
        ("none", "dfl_shield", 0, 1), ("gate_edge", "dfl_shield", 0, 1),
        ("gate_edge", "dfl_shield", 0, 3), ("removed", "dfl_shield", 0, 1),
        ("removed", "dfl_shield", 0, 3)]

    results = {
        "dirichlet0.1__gate_edge__dfl_shield__f1__s0": run(0.94),
        "dirichlet0.1__removed__dfl_shield__f1__s0": run(0.945),
        "dirichlet0.1__gate_edge__dfl_shield__s0": run(0.10),
        "dirichlet0.1__removed__dfl_shield__s0": run(0.95),
    }
    table, heat = matrix.summarize(results, args(malicious=[1, 3], seeds=[0]))
    rows = [line for line in table.splitlines() if "| gate_edge |" in line]
    assert "| 1 |" in rows[0] and "-0.005 / -0.005" in rows[0]
    assert "| 3 |" in rows[1] and "-0.850 / -0.850" in rows[1]
    assert [h[0] for h in heat] == ["dirichlet0.1 gate_edge f=1", "dirichlet0.1 gate_edge"]
    assert matrix.results_section([3]) == ("attack_matrix", "Attack matrix")
    assert matrix.results_section([1, 2])[0] == "attack_matrix_f1_2"


def test_a_bad_results_section_name_is_refused_before_any_trial_runs(
        matrix: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        matrix.main(["--out", str(tmp_path), "--section", "two words", "Title", "--table-only",
                     "--write-results"])
    assert exit_info.value.code == 2
    assert "--section: section name must be letters" in capsys.readouterr().err
    assert not (tmp_path / "matrix.json").exists()


def test_a_section_without_write_results_is_refused(
        matrix: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        matrix.main(["--out", str(tmp_path), "--section", "partial", "Title", "--table-only"])
    assert exit_info.value.code == 2
    assert "give --write-results too" in capsys.readouterr().err
    assert not (tmp_path / "matrix.json").exists()


def test_invocations_sharing_a_folder_keep_each_others_trials(matrix: ModuleType,
                                                              tmp_path: Path) -> None:
    """Two invocations on one --out folder each read matrix.json when they start; a trial
    that finishes is added to what the file holds at that moment, not to that first copy."""
    import json

    store = tmp_path / "matrix.json"
    first = matrix.store_trial(store, "a", {"honest_accuracy_final": 0.9})
    second = matrix.store_trial(store, "b", {"honest_accuracy_final": 0.8})  # the other one
    assert set(first) == {"a"} and set(second) == {"a", "b"}
    assert set(json.loads(store.read_text())) == {"a", "b"}
    assert not (tmp_path / "matrix.json.partial").exists()


def test_a_partition_seed_holds_the_shards_and_names_the_trials(matrix: ModuleType) -> None:
    fixed = args(partition_seed=2)
    cfg = config_from_dict(matrix.trial_config(fixed, "labels2", "gate_edge", "dfl_guard", 0, 0.5))
    assert cfg.data.partition_seed == 2 and cfg.experiment.seed == 0
    assert cfg.experiment.name == "labels2__gate_edge__dfl_guard__p2__s0"
    plain = config_from_dict(matrix.trial_config(args(), "labels2", "gate_edge", "dfl_guard", 0, 0.5))
    assert plain.data.partition_seed is None
    results = {
        "dirichlet0.1__gate_edge__dfl_shield__p2__s0": run(0.80),
        "dirichlet0.1__removed__dfl_shield__p2__s0": run(0.86),
        "dirichlet0.1__gate_edge__dfl_shield__s0": run(0.10),  # other shards: not this cell
    }
    table, _ = matrix.summarize(results, args(partition_seed=2, seeds=[0]))
    row = next(line for line in table.splitlines() if "| gate_edge |" in line)
    assert "0.800 / 0.800" in row and "-0.060 / -0.060" in row


def test_a_trial_that_ran_other_code_is_refused(matrix: ModuleType) -> None:
    from dfl_ray.code import CodeMismatchError, fingerprint

    matrix.check_trial_code("t", {"environment": {"dfl_ray": fingerprint()}})
    with pytest.raises(CodeMismatchError, match="trial t ran dfl_ray 0{16}, but this script"):
        matrix.check_trial_code("t", {"environment": {"dfl_ray": "0" * 16}})
    with pytest.raises(CodeMismatchError, match="trial t ran dfl_ray None"):
        matrix.check_trial_code("t", {})


def test_a_stored_trial_loses_its_chains_and_keeps_its_summary(matrix: ModuleType,
                                                                tmp_path: Path) -> None:
    """Once a trial is in matrix.json its chain stores go (they are ~150 MB a trial); the run
    folder's summary and metrics stay, and a trial without chains is left as it is."""
    run = tmp_path / "t__s0"
    (run / "chains" / "node_0").mkdir(parents=True)
    (run / "chains" / "node_0" / "blocks.sqlite").write_bytes(b"x" * 1000)
    (run / "summary.json").write_text("{}")
    assert matrix.discard_chains(tmp_path, "t__s0") == 1000
    assert not (run / "chains").exists() and (run / "summary.json").is_file()
    assert matrix.discard_chains(tmp_path, "t__s0") == 0
