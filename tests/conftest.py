"""Shared fixtures: the offline data folder, a local Ray instance, and a tiny run's config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfl_ray.config import Config, config_from_dict

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]


def offline_data_dir() -> Path | None:
    """$DFL_DATA_DIR, else ../shared/data beside the repository, if it holds MNIST."""
    for candidate in (os.environ.get("DFL_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = offline_data_dir()
    if found is None:
        pytest.skip("no offline MNIST: set DFL_DATA_DIR to a folder holding MNIST/raw")
    return found


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance with two CPUs for the tests of one module (Ray imported only here)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny_tree(out: Path, data_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A 4-node ring, 2 rounds of 2 local steps on real MNIST, one random-model attacker;
    each keyword is a config section whose fields override these."""
    tree: dict[str, dict[str, Any]] = {
        "experiment": {"name": "tiny", "out": str(out), "rounds": 2, "eval_every": 1,
                       "progress": False},
        "data": {"data_dir": str(data_dir), "partition": "dirichlet", "alpha": 0.5},
        "topology": {"kind": "ring", "nodes": 4},
        "attack": {"kind": "random_model", "malicious": 1},
        "defense": {"rule": "dfl_guard", "buffer_size": 2},
        "training": {"local_steps": 2},
        "ledger": {"block_size": 2},
    }
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return tree


def tiny_config(out: Path, data_dir: Path, **sections: dict[str, Any]) -> Config:
    """`tiny_tree` as a validated Config."""
    return config_from_dict(tiny_tree(out, data_dir, **sections))
