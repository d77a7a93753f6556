"""Model registry: architecture name -> builder, so other models can be added beside LeNet."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dfl_ray.models.lenet import LeNet

ModelBuilder = Callable[[int, int, int], nn.Module]

MODELS: dict[str, ModelBuilder] = {
    "lenet": lambda in_channels, num_classes, image_size: LeNet(in_channels, num_classes, image_size),
}


def build_model(name: str, *, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """Build a registered model; an unknown name is an error listing the registered ones."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {sorted(MODELS)}") from None
    return builder(in_channels, num_classes, image_size)


def register_model(name: str, builder: ModelBuilder) -> None:
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = builder
