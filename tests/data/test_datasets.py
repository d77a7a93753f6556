"""Data-folder resolution, the missing-data error, and loading the offline MNIST."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dfl_ray.data import DataNotFoundError, load_dataset, resolve_data_dir


def test_explicit_dir_wins_over_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DFL_DATA_DIR", "/from/env")
    assert resolve_data_dir(tmp_path) == tmp_path
    assert resolve_data_dir(None) == Path("/from/env")


def test_default_dir_is_a_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DFL_DATA_DIR", raising=False)
    assert resolve_data_dir(None).parts[-2:] == ("dfl_ray", "data")


def test_invalid_missing_data_names_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("mnist", tmp_path, download=False)
    text = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in text
    assert "train-images-idx3-ubyte" in text and "DFL_DATA_DIR" in text and "--data-dir" in text


def test_invalid_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", None)


def test_loads_offline_mnist_as_uint8(data_dir: Path) -> None:
    data = load_dataset("mnist", data_dir, download=False)
    assert data.train_images.dtype == torch.uint8 and data.train_images.dim() == 3
    assert data.train_labels.dtype == torch.int64
    assert data.n_train == len(data.train_images) and data.n_test == len(data.test_images)
    assert data.num_classes == 10
    assert "mnist" in data.describe()
