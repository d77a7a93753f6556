"""Centralised baseline: one model trained on the whole training set, the ceiling for DFL runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dfl_ray.data import Dataset
from dfl_ray.models import SGDSettings, build_model, evaluate, make_optimizer, train_steps
from dfl_ray.models.training import steps_per_epoch


@dataclass(frozen=True)
class BaselineResult:
    accuracies: tuple[float, ...]
    """Test accuracy after each epoch."""
    seconds: float


def train_centralized(
    data: Dataset,
    *,
    epochs: int = 5,
    seed: int = 0,
    model_name: str = "lenet",
    batch_size: int = 64,
    sgd: SGDSettings | None = None,
    device: str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> BaselineResult:
    """Train `model_name` on all of `data`'s training set; test accuracy after every epoch."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    shape = data.image_shape
    channels = 1 if len(shape) == 2 else shape[0]
    model = build_model(
        model_name, in_channels=channels, num_classes=data.num_classes, image_size=shape[-1]
    ).to(device)
    settings = sgd or SGDSettings()
    opt = make_optimizer(model, settings)
    steps = steps_per_epoch(data.n_train, batch_size)
    accs = []
    start = time.perf_counter()
    for epoch in range(epochs):
        train_steps(
            model, opt, data.train_images, data.train_labels,
            batch_size=batch_size, steps=steps, rng=rng, device=device,
            grad_clip=settings.grad_clip,
        )
        accs.append(evaluate(model, data.test_images, data.test_labels, batch_size=256, device=device))
        if on_epoch is not None:
            on_epoch(epoch + 1, accs[-1])
    return BaselineResult(tuple(accs), time.perf_counter() - start)
