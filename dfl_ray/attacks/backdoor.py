"""Backdoor: images carrying a small pixel trigger are taught to be one target class.

Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS 2020 (model replacement when
`scale` > 1) and Sun et al., "Can You Really Backdoor Federated Learning?", arXiv 1911.07963, 2019
(the pixel-pattern trigger; norm bounds and small noise as the defense). The attacker trains on
batches in which a `fraction` of the images carry the trigger (a bright `size` x `size` square
one pixel in from the bottom-right corner, where MNIST digits never reach) and are relabelled
`target`; the rest stay clean, so the model keeps its accuracy and the backdoor hides in it.
`backdoor_success` is what the evaluation reports: the share of triggered test images of the
other classes that the model classifies as the target. With `blend` > 0 the trigger is instead a
fixed noise image over the whole picture, mixed in with that weight (the blended injection of
Chen et al., arXiv 1712.05526, 2017): no small patch anywhere for a defense to look for. With
`evade` > 0 the attacker knows the trigger scan (dfl_ray.node.triggers), which refuses models
that send `trigger_refuse` of a node's images to a found patch's class: it publishes the
longest step from its round start towards its trained model whose success rate on its own
validation split stays under `evade`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dfl_ray.attacks.base import Attack, check_batch, check_count, check_positive

EVADE_HALVINGS = 6
"""How many times an evading backdoor attacker halves its step before publishing its round
start."""

BLEND_SEED = 20171205
"""Seed of the blended trigger's noise image, which every colluder uses."""


def stamp_trigger(images: np.ndarray, size: int, blend: float = 0.0) -> np.ndarray:
    """A copy of images ([b, H, W] or [b, C, H, W]) with the trigger: a `size` x `size` square at
    full brightness, or with `blend` > 0 (1 - blend) x image + blend x a fixed noise image."""
    out = np.array(images, copy=True)
    bright = np.iinfo(out.dtype).max if np.issubdtype(out.dtype, np.integer) else 1.0
    if blend <= 0.0:
        out[..., -1 - size:-1, -1 - size:-1] = bright
        return out
    noise = np.random.default_rng(BLEND_SEED).random(out.shape[-2:]) * bright
    mixed = (1.0 - blend) * out.astype(np.float64) + blend * noise
    return np.rint(mixed).astype(out.dtype) if np.issubdtype(out.dtype, np.integer) \
        else mixed.astype(out.dtype)


@dataclass(frozen=True)
class Backdoor(Attack):
    """Train with a pixel trigger relabelled `target`; publish base + scale * (trained - base)."""

    name: ClassVar[str] = "backdoor"
    poisons_data: ClassVar[bool] = True
    target: int = 0
    """The class triggered images are taught to be."""
    size: int = 3
    """Side of the square trigger, in pixels."""
    fraction: float = 0.5
    """Share of each training batch that carries the trigger."""
    scale: float = 1.0
    """Boost of the published update (1: unscaled; Bagdasaryan et al. use about n / attackers)."""
    blend: float = 0.0
    """Weight of the whole-image noise trigger (0: the square of side `size`)."""
    evade: float = 0.0
    """Success rate on the own validation split to stay under (0: publish the trained model)."""
    loss_kind: ClassVar[str] = "trigger_rate"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("target", self.target)
        check_count("size", self.size, 1)
        check_positive("fraction", self.fraction)
        if self.fraction > 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}")
        check_positive("scale", self.scale)
        if isinstance(self.evade, bool) or not isinstance(self.evade, int | float) \
                or not 0.0 <= self.evade <= 1.0:
            raise ValueError(f"evade must be a share in [0, 1], got {self.evade!r}")
        if isinstance(self.blend, bool) or not isinstance(self.blend, int | float) \
                or not 0.0 <= self.blend < 1.0:
            raise ValueError(f"blend must be a number in [0, 1), got {self.blend!r}")

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        check_batch(images, labels, num_classes)
        if self.target >= num_classes:
            raise ValueError(f"target {self.target} is not one of the {num_classes} classes")
        chosen = rng.random(len(labels)) < float(self.fraction)
        images, labels = np.array(images, copy=True), np.array(labels, copy=True)
        images[chosen] = stamp_trigger(images[chosen], int(self.size), float(self.blend))
        labels[chosen] = int(self.target)
        return images, labels

    @property
    def uses_loss(self) -> bool:  # type: ignore[override]
        return self.evade > 0.0

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        if float(self.scale) == 1.0:
            return trained.copy()
        return base + np.float32(self.scale) * (trained - base)

    def _publish_with_loss(self, trained: np.ndarray, base: np.ndarray,
                           rng: np.random.Generator, turn: int, observed: np.ndarray | None,
                           loss: Callable[[np.ndarray], float] | None) -> np.ndarray:
        """The longest step of 1, 1/2, ... 1/2^EVADE_HALVINGS, else the round start, whose
        success rate (`loss`: the node hands the rate instead of the loss) is under `evade`."""
        published = self._publish(trained, base, rng, turn, observed)
        if loss is None:
            raise ValueError("backdoor with evade needs its success rate (loss=...)")
        step = 1.0
        for _ in range(EVADE_HALVINGS + 1):
            moved = base + np.float32(step) * (published - base)
            if float(loss(moved)) < float(self.evade):
                return moved
            step /= 2.0
        return base.copy()

    def triggered_test_set(self, images: np.ndarray,
                           labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The test images of every class but the target, triggered, and their target labels."""
        keep = np.asarray(labels) != int(self.target)
        triggered = stamp_trigger(np.asarray(images)[keep], int(self.size), float(self.blend))
        return triggered, np.full(int(keep.sum()), int(self.target), dtype=np.int64)
