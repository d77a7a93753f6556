"""The dfl_ray code fingerprint, and runs whose host actors import other code than the driver."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dfl_ray.cli import main as cli_main
from dfl_ray.code import (
    PACKAGE,
    CodeMismatchError,
    check_same_code,
    describe,
    fingerprint,
    fingerprint_of,
)
from tests.conftest import tiny_tree


def altered_copy(into: Path) -> Path:
    """A copy of the dfl_ray package under `into`, one comment added to one module."""
    copy = into / "dfl_ray"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "defense" / "guard.py").open("a") as f:
        f.write("# another checkout\n")
    return copy


def test_the_fingerprint_follows_every_source_file(tmp_path: Path) -> None:
    assert len(fingerprint()) == 16 and int(fingerprint(), 16) >= 0
    same = tmp_path / "same" / "dfl_ray"
    shutil.copytree(PACKAGE, same, ignore=shutil.ignore_patterns("__pycache__"))
    assert fingerprint_of(same) == fingerprint()
    assert fingerprint_of(altered_copy(tmp_path)) != fingerprint()
    (same / "defense" / "guard.py").rename(same / "defense" / "guard2.py")
    assert fingerprint_of(same) != fingerprint()  # a renamed file counts too


def test_a_process_with_other_code_is_named() -> None:
    check_same_code({"host 0": describe()})
    other = {"fingerprint": "0" * 16, "path": "/elsewhere/dfl_ray", "host": "box"}
    with pytest.raises(CodeMismatchError) as caught:
        check_same_code({"host 0": describe(), "host 1 (nodes 2, 3)": other})
    message = str(caught.value)
    assert ("host 1 (nodes 2, 3) runs dfl_ray 0000000000000000 from /elsewhere/dfl_ray on box"
            in message)
    assert "host 0" not in message and fingerprint() in message


@pytest.mark.ray
def test_a_run_whose_workers_import_another_checkout_is_refused(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import ray
    import yaml

    # Ray puts the driver's working directory first on its workers' import path: started
    # from a folder holding another dfl_ray, the host actors import that one.
    other = altered_copy(tmp_path / "checkout")
    monkeypatch.chdir(other.parent)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_tree(tmp_path / "runs", data_dir)))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert cli_main(["run", "--config", str(config)]) == 2
    finally:
        ray.shutdown()
    err = capsys.readouterr().err
    assert f"from {other}" in err and "runs dfl_ray" in err
    assert fingerprint_of(other) in err and fingerprint() in err
    assert not (tmp_path / "runs" / "tiny" / "chains").exists()  # no node was made
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["status"] == "failed" and "CodeMismatchError" in summary["error"]
    assert summary["environment"]["dfl_ray"] == fingerprint()  # what the driver ran
