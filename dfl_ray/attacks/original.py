"""The original DFL attacks (Tian et al., "DFL: High-Performance Blockchain-Based Federated
Learning", arXiv 2110.15457): random model, random model every other turn, weights minus uniform
noise, free-rider, shuffled labels, shifted labels, blank images; and swapped labels (targeted
label flipping), which the original did not have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dfl_ray.attacks.base import Attack, check_batch


def _random_model(size: int, rng: np.random.Generator) -> np.ndarray:
    return rng.random(size, dtype=np.float32) * np.float32(0.001)


@dataclass(frozen=True)
class RandomModel(Attack):
    """Publish a random model: every weight U(0, 0.001), whatever was trained."""

    name: ClassVar[str] = "random_model"

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return _random_model(trained.size, rng)


@dataclass(frozen=True)
class RandomModelByTurn(Attack):
    """Publish a random model (U(0, 0.001)) on even turns 0, 2, 4, ... and the trained one on odd."""

    name: ClassVar[str] = "random_model_by_turn"

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return _random_model(trained.size, rng) if turn % 2 == 0 else trained.copy()


@dataclass(frozen=True)
class MinusUniform(Attack):
    """Publish the trained model minus U(0, 0.1) noise on every weight."""

    name: ClassVar[str] = "minus_uniform"

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return trained - rng.random(trained.size, dtype=np.float32) * np.float32(0.1)


@dataclass(frozen=True)
class FreeRider(Attack):
    """Skip training and republish the model held at the start of the round."""

    name: ClassVar[str] = "free_rider"
    trains: ClassVar[bool] = False

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return base.copy()


@dataclass(frozen=True)
class LabelShuffle(Attack):
    """Train on the batch's labels randomly permuted among its samples."""

    name: ClassVar[str] = "label_shuffle"
    poisons_data: ClassVar[bool] = True

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        check_batch(images, labels, num_classes)
        return images, rng.permutation(labels)


@dataclass(frozen=True)
class LabelShift(Attack):
    """Train on every label shifted by one class: (label + 1) mod num_classes."""

    name: ClassVar[str] = "label_shift"
    poisons_data: ClassVar[bool] = True

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        check_batch(images, labels, num_classes)
        return images, (labels + 1) % num_classes


@dataclass(frozen=True)
class LabelSwap(Attack):
    """Train with the classes present in each batch named in reverse order (the lowest present
    class labelled as the highest, and so on).

    On a shard of two classes (2 labels per node) the two are swapped in every batch: honest
    training on data whose two digits carry each other's names (targeted label flipping, Tolpegin
    et al., "Data Poisoning Attacks Against Federated Learning Systems", ESORICS 2020). Where an
    attacker and one honest node hold the same two classes and nobody else does, a receiver
    without them sees two equally plausible namings and no data to choose between them.
    """

    name: ClassVar[str] = "label_swap"
    poisons_data: ClassVar[bool] = True

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        check_batch(images, labels, num_classes)
        present = np.unique(labels)
        names = np.arange(num_classes, dtype=labels.dtype)
        names[present] = present[::-1]
        return images, names[labels]


@dataclass(frozen=True)
class BlankImages(Attack):
    """Train on all-zero images with the true labels."""

    name: ClassVar[str] = "blank_images"
    poisons_data: ClassVar[bool] = True

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        check_batch(images, labels, num_classes)
        return np.zeros_like(images), labels


