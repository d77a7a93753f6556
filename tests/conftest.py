"""Shared fixtures: the offline data folder and small synthetic data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
