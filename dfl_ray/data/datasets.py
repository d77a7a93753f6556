"""MNIST and Fashion-MNIST through torchvision, held in memory as uint8 tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

DATA_DIR_ENV = "DFL_DATA_DIR"

# name -> (torchvision class name, the raw files torchvision reads)
DATASETS: dict[str, str] = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataNotFoundError(FileNotFoundError):
    """The data set is neither on disk nor downloadable; the message says where to put it."""


@dataclass(frozen=True)
class Dataset:
    """A whole data set in memory: uint8 images [N, H, W] and int64 labels [N], train and test."""

    name: str
    root: Path
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int = 10

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    @property
    def n_test(self) -> int:
        return len(self.test_labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])

    def describe(self) -> str:
        return f"{self.name} from {self.root} ({self.n_train:,} train / {self.n_test:,} test)"


def default_data_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dfl_ray")) / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: the explicit argument, else $DFL_DATA_DIR, else the user cache folder."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return default_data_dir()


def _has_raw_files(root: Path, class_name: str) -> bool:
    raw = root / class_name / "raw"
    return all((raw / f).is_file() for f in RAW_FILES)


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, *, download: bool = True
) -> Dataset:
    """Load a data set into memory, downloading through torchvision only when its files are absent.

    Raises DataNotFoundError naming the folder searched, how to point at another one, and the files
    needed, when the files are missing and the download is disabled or fails (e.g. no network).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    from torchvision import datasets as tvd

    class_name = DATASETS[name]
    root = resolve_data_dir(data_dir)
    cls = getattr(tvd, class_name)
    present = _has_raw_files(root, class_name)
    if not present and not download:
        raise DataNotFoundError(_missing_message(name, root, class_name, "download is disabled"))
    try:
        train = cls(str(root), train=True, download=not present)
        test = cls(str(root), train=False, download=False)
    except Exception as exc:  # torchvision raises URLError, RuntimeError, ... depending on the failure
        if present:
            raise
        raise DataNotFoundError(
            _missing_message(name, root, class_name, f"the download failed: {exc}")
        ) from exc
    return Dataset(
        name=name,
        root=root,
        train_images=train.data.contiguous(),
        train_labels=train.targets.to(torch.int64),
        test_images=test.data.contiguous(),
        test_labels=test.targets.to(torch.int64),
        num_classes=len(train.classes),
    )


def _missing_message(name: str, root: Path, class_name: str, why: str) -> str:
    files = ", ".join(RAW_FILES)
    return (
        f"dataset {name!r} not found under {root / class_name / 'raw'} and {why}. "
        f"Point dfl_ray at a folder holding {class_name}/raw/ with the files {files} "
        f"(torchvision's layout) with --data-dir PATH or the {DATA_DIR_ENV} environment variable, "
        f"or allow the download on a machine with internet access."
    )
