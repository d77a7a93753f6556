"""Attacker behaviours: how a malicious node changes its training data or the model it publishes.

The original DFL set (Tian et al., "DFL: High-Performance Blockchain-Based Federated Learning",
arXiv 2110.15457): random model, random model every other turn, weights minus uniform noise,
free-rider, shuffled labels, shifted labels, blank images. Added model-poisoning baselines: sign
flip and scaled update (the boosting of Bhagoji et al., "Analyzing Federated Learning through an
Adversarial Lens", ICML 2019) and Gaussian noise (Blanchard et al., NeurIPS 2017).

An attack has two hooks. `poison_batch` changes a training batch (data-level attacks) and returns
the arrays it was given, untouched, otherwise. `poison_model` turns the attacker's honestly trained
model and the model it started the round from into what it publishes, always a fresh float32
array. `trains` is False when the attacker does not train at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Attack:
    """No attack: train honestly, publish the trained model."""

    name: ClassVar[str] = "none"
    trains: ClassVar[bool] = True
    poisons_data: ClassVar[bool] = False

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """The (images [b, 28, 28] or [b, C, H, W], int labels [b]) the attacker trains on."""
        _check_batch(images, labels, num_classes)
        return images, labels

    def poison_model(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                     turn: int) -> np.ndarray:
        """The model published on the attacker's `turn`-th publication (counted from 0)."""
        _check_models(trained, base, turn)
        return self._publish(trained, base, rng, turn)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int) -> np.ndarray:
        return trained.copy()


def _random_model(size: int, rng: np.random.Generator) -> np.ndarray:
    return rng.random(size, dtype=np.float32) * np.float32(0.001)


@dataclass(frozen=True)
class RandomModel(Attack):
    """Publish a random model: every weight U(0, 0.001), whatever was trained."""

    name: ClassVar[str] = "random_model"

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int) -> np.ndarray:
        return _random_model(trained.size, rng)


@dataclass(frozen=True)
class RandomModelByTurn(Attack):
    """Publish a random model (U(0, 0.001)) on even turns 0, 2, 4, ... and the trained one on odd."""

    name: ClassVar[str] = "random_model_by_turn"

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int) -> np.ndarray:
        return _random_model(trained.size, rng) if turn % 2 == 0 else trained.copy()


@dataclass(frozen=True)
class MinusUniform(Attack):
    """Publish the trained model minus U(0, 0.1) noise on every weight."""

    name: ClassVar[str] = "minus_uniform"

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int) -> np.ndarray:
        return trained - rng.random(trained.size, dtype=np.float32) * np.float32(0.1)


@dataclass(frozen=True)
class FreeRider(Attack):
    """Skip training and republish the model held at the start of the round."""

    name: ClassVar[str] = "free_rider"
    trains: ClassVar[bool] = False

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int) -> np.ndarray:
        return base.copy()


@dataclass(frozen=True)
class LabelShuffle(Attack):
    """Train on the batch's labels randomly permuted among its samples."""

    name: ClassVar[str] = "label_shuffle"
    poisons_data: ClassVar[bool] = True

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        _check_batch(images, labels, num_classes)
        return images, rng.permutation(labels)


@dataclass(frozen=True)
class LabelShift(Attack):
    """Train on every label shifted by one class: (label + 1) mod num_classes."""

    name: ClassVar[str] = "label_shift"
    poisons_data: ClassVar[bool] = True

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        _check_batch(images, labels, num_classes)
        return images, (labels + 1) % num_classes


@dataclass(frozen=True)
class BlankImages(Attack):
    """Train on all-zero images with the true labels."""

    name: ClassVar[str] = "blank_images"
    poisons_data: ClassVar[bool] = True

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        _check_batch(images, labels, num_classes)
        return np.zeros_like(images), labels


@dataclass(frozen=True)
class SignFlip(Attack):
    """Publish base - scale * (trained - base): the update reversed (and scaled).

    keep_last > 0 leaves the last `keep_last` weights as trained: with 10 (LeNet's output bias)
    this is an attacker who knows dfl_guard's reversal test and hides from it.
    """

    name: ClassVar[str] = "sign_flip"
    scale: float = 1.0
    keep_last: int = 0

    def __post_init__(self) -> None:
        _check_positive("scale", self.scale)
        if (isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int | np.integer)
                or self.keep_last < 0):
            raise ValueError(f"keep_last must be an integer >= 0, got {self.keep_last!r}")

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int) -> np.ndarray:
        out = base - np.float32(self.scale) * (trained - base)
        if self.keep_last:
            out[-self.keep_last:] = trained[-self.keep_last:]
        return out


@dataclass(frozen=True)
class ScaledUpdate(Attack):
    """Publish base + scale * (trained - base): the update boosted."""

    name: ClassVar[str] = "scaled_update"
    scale: float = 10.0

    def __post_init__(self) -> None:
        _check_positive("scale", self.scale)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int) -> np.ndarray:
        return base + np.float32(self.scale) * (trained - base)


@dataclass(frozen=True)
class GaussianNoise(Attack):
    """Publish the trained model plus N(0, std^2) noise on every weight."""

    name: ClassVar[str] = "gaussian_noise"
    std: float = 0.1

    def __post_init__(self) -> None:
        _check_positive("std", self.std)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int) -> np.ndarray:
        return trained + rng.standard_normal(trained.size, dtype=np.float32) * np.float32(self.std)


_ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (Attack, RandomModel, RandomModelByTurn, MinusUniform, FreeRider, LabelShuffle,
                LabelShift, BlankImages, SignFlip, ScaledUpdate, GaussianNoise)
}

ATTACK_KINDS: tuple[str, ...] = tuple(_ATTACKS)


def _get(kind: str) -> type[Attack]:
    if kind not in _ATTACKS:
        raise ValueError(f"unknown attack kind {kind!r}; valid kinds: {list(ATTACK_KINDS)}")
    return _ATTACKS[kind]


def attack_params(kind: str) -> dict[str, Any]:
    """The parameters attack `kind` takes, each with its default value."""
    return {f.name: f.default for f in fields(_get(kind))}


def make_attack(kind: str, **params: Any) -> Attack:
    """The attack `kind` with `params`; raises ValueError naming an unknown kind or parameter."""
    allowed = attack_params(kind)
    for key in params:
        if key not in allowed:
            raise ValueError(f"attack {kind!r} has no parameter {key!r}; "
                             f"its parameters are {sorted(allowed)}")
    return _get(kind)(**params)


def _check_positive(name: str, value: object) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"attack parameter {name} must be a finite number > 0, got {value!r}")


def _check_batch(images: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    if not isinstance(images, np.ndarray) or images.ndim not in (3, 4):
        raise ValueError(f"images must be an array [b, H, W] or [b, C, H, W], "
                         f"got {getattr(images, 'shape', type(images).__name__)}")
    if (not isinstance(labels, np.ndarray) or labels.ndim != 1
            or not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D integer array, got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} "
                         f"{getattr(labels, 'shape', '')}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but images has {images.shape[0]}")
    if (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
            or num_classes < 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got values "
                         f"{int(labels.min())}..{int(labels.max())}")


def _check_models(trained: np.ndarray, base: np.ndarray, turn: int) -> None:
    for name, vec in (("trained", trained), ("base", base)):
        if not isinstance(vec, np.ndarray) or vec.dtype != np.float32 or vec.ndim != 1:
            raise ValueError(f"{name} must be a 1-D float32 array, got "
                             f"{getattr(vec, 'dtype', type(vec).__name__)} "
                             f"{getattr(vec, 'shape', '')}")
    if trained.shape != base.shape:
        raise ValueError(f"trained has shape {trained.shape} but base has shape {base.shape}")
    if isinstance(turn, bool) or not isinstance(turn, (int, np.integer)) or turn < 0:
        raise ValueError(f"turn must be an integer >= 0, got {turn!r}")
