"""Ending well: Ctrl-C writes an interrupted summary; a run whose driver was killed resumes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfl_ray.ledger import verify_chain
from tests.helpers import own_seqs

pytestmark = pytest.mark.ray

WAIT_S = 600.0  # for a loaded machine; the test waits for events, never for a time


def command(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from dfl_ray.cli import main; sys.exit(main())",
            "run", *args]


def tiny_run(out: Path, data_dir: Path, rounds: int) -> list[str]:
    return command(
        "--data-dir", str(data_dir), "--out", str(out), "--name", "tiny", "--rounds", str(rounds),
        "--eval-every", "1", "--topology", "ring", "--nodes", "4", "--attack", "none",
        "--buffer-size", "2", "--training.local_steps", "2", "--ledger.block_size", "2",
        "--runtime.num_cpus", "2", "--experiment.progress", "false",
    )


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    # A session of its own, so the whole process group (the driver and the Ray it started)
    # can be killed at once, as when the driver's machine goes down.
    with log.open("ab") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Return once metrics.csv has a row of `step` (the driver finished that round)."""
    deadline = time.monotonic() + WAIT_S
    path = run_dir / "metrics.csv"
    while time.monotonic() < deadline:
        if path.exists():
            with path.open(newline="") as f:
                if any(row.get("step") == str(step) for row in csv.DictReader(f)):
                    return
        assert proc.poll() is None, f"the run ended early:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"no step {step} in {path}:\n{log.read_text()[-3000:]}")


def test_a_run_whose_driver_was_killed_resumes_from_its_chains(
    tmp_path: Path, data_dir: Path
) -> None:
    run_dir, log = tmp_path / "tiny", tmp_path / "log.txt"
    first = start(tiny_run(tmp_path, data_dir, rounds=5), log)
    try:
        wait_for_step(run_dir, 2, first, log)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not (run_dir / "summary.json").exists()  # nothing could write it
    before = {n: own_seqs(run_dir, n) for n in range(4)}

    second = subprocess.run(command("--resume", str(run_dir)), capture_output=True, text=True,
                            timeout=WAIT_S, start_new_session=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert 2 <= summary["resumed_from_round"] <= 3
    assert summary["rounds_completed"] == 5
    for n in range(4):
        verify_chain(run_dir / "chains" / f"node_{n}")
        seqs = own_seqs(run_dir, n)
        # The chain went on from where it was: no seq lost, reused or skipped.
        assert seqs[: len(before[n])] == before[n] and seqs == list(range(len(seqs)))
        assert len(seqs) > len(before[n])
    with (run_dir / "metrics.csv").open(newline="") as f:
        steps = {int(row["step"]) for row in csv.DictReader(f)}
    assert {1, 2, 5} <= steps  # the first run's rows kept, the resumed run's appended


def test_ctrl_c_ends_the_run_with_an_interrupted_summary(tmp_path: Path, data_dir: Path) -> None:
    run_dir, log = tmp_path / "tiny", tmp_path / "log.txt"
    proc = start(tiny_run(tmp_path, data_dir, rounds=50), log)
    try:
        wait_for_step(run_dir, 1, proc, log)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the driver
        assert proc.wait(timeout=WAIT_S) == 130, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["error"] is None
    assert 1 <= summary["rounds_completed"] < 50
    assert "dfl-ray run --resume" in log.read_text()
    for n in range(4):
        verify_chain(run_dir / "chains" / f"node_{n}")
