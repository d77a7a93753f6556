"""Model-poisoning baselines that need nothing but the attacker's own update.

Sign flip and scaled update (the boosting of Bhagoji et al., "Analyzing Federated Learning
through an Adversarial Lens", ICML 2019) and Gaussian noise (Blanchard et al., NeurIPS 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dfl_ray.attacks.base import Attack, check_count, check_positive


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
        super().__post_init__()
        check_positive("scale", self.scale)
        check_count("keep_last", self.keep_last)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
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
        super().__post_init__()
        check_positive("scale", self.scale)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return base + np.float32(self.scale) * (trained - base)


@dataclass(frozen=True)
class GaussianNoise(Attack):
    """Publish the trained model plus N(0, std^2) noise on every weight."""

    name: ClassVar[str] = "gaussian_noise"
    std: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("std", self.std)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return trained + rng.standard_normal(trained.size, dtype=np.float32) * np.float32(self.std)


