"""Local training and evaluation loops over uint8 image tensors scaled on the fly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# Caffe's LeNet scales pixels by 1/256, so inputs lie in [0, 1).
PIXEL_SCALE = 1.0 / 256.0

BatchPoison = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SGDSettings:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 0.0
    """Largest L2 norm of a step's gradient (torch.nn.utils.clip_grad_norm_); 0: no clipping."""


def make_optimizer(model: nn.Module, sgd: SGDSettings) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay
    )


def to_input(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [b, H, W] or [b, C, H, W] -> float32 [b, C, H, W] in [0, 1) on `device`."""
    x = images.to(device, non_blocking=True)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.float().mul_(PIXEL_SCALE)


def batch_order(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index batches for `steps` SGD steps: reshuffled passes over n samples, last partial batch kept."""
    batches: list[np.ndarray] = []
    while len(batches) < steps:
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            batches.append(perm[start : start + batch_size])
            if len(batches) == steps:
                break
    return batches


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    steps: int,
    rng: np.random.Generator,
    indices: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    poison: BatchPoison | None = None,
    grad_clip: float = 0.0,
) -> float:
    """Run `steps` SGD steps on (images, labels), restricted to `indices` when given.

    grad_clip > 0 scales each step's gradient down to that L2 norm when it is longer.

    Returns the mean training loss. `images` may be a read-only view shared by many nodes: batches
    are gathered from it, never written to it.
    """
    n = len(images) if indices is None else len(indices)
    if n == 0:
        raise ValueError("cannot train on an empty data set")
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total = 0.0
    for idx in batch_order(n, batch_size, steps, rng):
        index = torch.from_numpy(idx if indices is None else indices[idx])
        x, y = images[index], labels[index]
        if poison is not None:
            x, y = poison(x, y)
        x, y = to_input(x, device), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        if grad_clip > 0.0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total += float(loss.detach())
    # An idle model keeps no gradients: with many models in one process they would cost as
    # much memory as the models themselves.
    optimizer.zero_grad(set_to_none=True)
    return total / max(steps, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> float:
    """Top-1 accuracy of `model` on (images, labels)."""
    if len(images) == 0:
        raise ValueError("cannot evaluate on an empty data set")
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = to_input(images[start : start + batch_size], device)
        y = labels[start : start + batch_size].to(device, non_blocking=True)
        correct += int((model(x).argmax(dim=1) == y).sum())
    return correct / len(images)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, -(-n // batch_size))
