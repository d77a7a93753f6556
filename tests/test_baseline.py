"""The centralised baseline reaches the accuracy ceiling the DFL runs are judged against."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfl_ray.baseline import train_centralized
from dfl_ray.data import load_dataset


@pytest.mark.slow
def test_centralized_lenet_reaches_95_percent_in_5_epochs(data_dir: Path) -> None:
    data = load_dataset("mnist", data_dir, download=False)
    result = train_centralized(data, epochs=5, seed=0)
    assert len(result.accuracies) == 5
    assert result.accuracies[-1] >= 0.95, result.accuracies


def test_invalid_epochs(data_dir: Path) -> None:
    data = load_dataset("mnist", data_dir, download=False)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train_centralized(data, epochs=0)
