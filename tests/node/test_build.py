"""Config to nodes: the device choice, with torch's CUDA check patched either way (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from dfl_ray.node import resolve_device


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_cpu_is_cpu_whatever_the_gpus(with_cuda: None) -> None:
    assert resolve_device("cpu", 0.0) == "cpu"
    assert resolve_device("cpu", 1.0) == "cpu"


def test_auto_uses_cuda_only_with_a_held_share(with_cuda: None) -> None:
    assert resolve_device("auto", 0.25) == "cuda"
    # Ray leaves GPUs visible to an actor that reserved none: it must not use them.
    assert resolve_device("auto", 0.0) == "cpu"


def test_auto_falls_back_to_cpu_without_cuda(no_cuda: None) -> None:
    assert resolve_device("auto", 0.25) == "cpu"


def test_cuda_with_a_share_and_a_device(with_cuda: None) -> None:
    assert resolve_device("cuda", 0.5) == "cuda"


def test_invalid_cuda_without_a_device(no_cuda: None) -> None:
    with pytest.raises(RuntimeError, match="--device auto"):
        resolve_device("cuda", 0.25)


def test_invalid_cuda_without_a_share(with_cuda: None) -> None:
    with pytest.raises(RuntimeError, match="--gpus-per-node > 0"):
        resolve_device("cuda", 0.0)


@pytest.mark.parametrize("requested", ["gpu", "CUDA", ""])
def test_invalid_device_name(requested: str) -> None:
    with pytest.raises(ValueError, match="cpu, cuda or auto"):
        resolve_device(requested, 0.0)


@pytest.mark.parametrize("gpus", [-0.25, float("nan")])
def test_invalid_gpu_share(gpus: float) -> None:
    with pytest.raises(ValueError, match="GPU share"):
        resolve_device("auto", gpus)
