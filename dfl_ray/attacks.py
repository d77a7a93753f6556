"""Attacker behaviours: how a malicious node changes its training data or the model it publishes.

The original DFL set (Tian et al., "DFL: High-Performance Blockchain-Based Federated Learning",
arXiv 2110.15457): random model, random model every other turn, weights minus uniform noise,
free-rider, shuffled labels, shifted labels, blank images. Added model-poisoning baselines: sign
flip and scaled update (the boosting of Bhagoji et al., "Analyzing Federated Learning through an
Adversarial Lens", ICML 2019), Gaussian noise (Blanchard et al., NeurIPS 2017), ALIE (Baruch et
al., "A Little Is Enough: Circumventing Defenses For Distributed Learning", NeurIPS 2019) and IPM
(Xie et al., "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product Manipulation",
UAI 2019).

An attack has two hooks. `poison_batch` changes a training batch (data-level attacks) and returns
the arrays it was given, untouched, otherwise. `poison_model` turns the attacker's honestly trained
model and the model it started the round from into what it publishes, always a fresh float32
array. `trains` is False when the attacker does not train at all.

Every kind takes `honest_turns`: the attacker behaves honestly (trains on true data, publishes
what it trained) for its first `honest_turns` publications and attacks from then on, the
adaptive attacker that earns trust before it poisons.

ALIE and IPM are omniscient-style attacks: they craft their model from the honest updates they
have seen. A DFL attacker sees its peers' models arrive like every node does; `observes` attacks
get, at publication, the updates of the honest models it received in its last aggregation (each
received model minus the attacker's own model at the start of that round; colluders' models left
out), one round old, as sync rounds publish before anything of the round arrives.
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
    observes: ClassVar[bool] = False
    """Whether `poison_model` uses the honest updates the attacker observed."""
    honest_turns: int = 0
    """Publications made honestly before attacking (0: attack from the first)."""

    def __post_init__(self) -> None:
        if (isinstance(self.honest_turns, bool) or not isinstance(self.honest_turns, int | np.integer)
                or self.honest_turns < 0):
            raise ValueError(f"honest_turns must be an integer >= 0, got {self.honest_turns!r}")

    def active(self, turn: int) -> bool:
        """Whether the attacker attacks on its `turn`-th publication (else it behaves honestly)."""
        return turn >= self.honest_turns

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """The (images [b, 28, 28] or [b, C, H, W], int labels [b]) the attacker trains on."""
        _check_batch(images, labels, num_classes)
        return images, labels

    def poison_model(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                     turn: int, observed: np.ndarray | None = None) -> np.ndarray:
        """The model published on the attacker's `turn`-th publication (counted from 0).

        `observed` ([k, size] float32, k >= 0) holds the honest updates the attacker has seen;
        only `observes` attacks read it, and they fall back to the attacker's own update alone
        when it is None or empty. Before `honest_turns` the trained model is published as is.
        """
        _check_models(trained, base, turn)
        if observed is not None:
            _check_observed(observed, trained.size)
        if not self.active(turn):
            return trained.copy()
        return self._publish(trained, base, rng, turn, observed)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return trained.copy()


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
        super().__post_init__()
        _check_positive("scale", self.scale)
        if (isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int | np.integer)
                or self.keep_last < 0):
            raise ValueError(f"keep_last must be an integer >= 0, got {self.keep_last!r}")

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
        _check_positive("scale", self.scale)

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
        _check_positive("std", self.std)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return trained + rng.standard_normal(trained.size, dtype=np.float32) * np.float32(self.std)


def _honest_updates(trained: np.ndarray, base: np.ndarray,
                    observed: np.ndarray | None) -> np.ndarray:
    """[k + 1, size] float32: the observed honest updates and the attacker's own one."""
    own = (trained - base)[None, :]
    if observed is None or len(observed) == 0:
        return own
    return np.concatenate([np.asarray(observed, dtype=np.float32), own])


@dataclass(frozen=True)
class ALIE(Attack):
    """"A little is enough" (Baruch et al., NeurIPS 2019): base + mean(u) - z * std(u).

    u are the honest updates the attacker has seen (see the module docstring) and its own;
    mean and std are per coordinate. Every coordinate of the published update lies `z`
    standard deviations below the honest mean: a small shift inside the spread of honest
    updates, meant to pass defenses that look for outliers. Baruch et al. derive z from the number of workers (about
    0.5-1 for their settings); z = 1 is the default here.
    """

    name: ClassVar[str] = "alie"
    observes: ClassVar[bool] = True
    z: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive("z", self.z)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        u = _honest_updates(trained, base, observed)
        mean = u.mean(axis=0, dtype=np.float64)
        std = u.std(axis=0, dtype=np.float64)
        return (base + (mean - self.z * std)).astype(np.float32)


@dataclass(frozen=True)
class IPM(Attack):
    """Inner product manipulation (Xie et al., UAI 2019): base - epsilon * mean(u).

    u are the honest updates the attacker has seen and its own. The published update points
    against the honest mean, so that averaged in it shrinks (epsilon small: the model barely
    moves, close to honest models and hard to tell from them) or reverses (epsilon large) the
    honest progress. Xie et al. use 0.1 against Krum and large values against the median;
    epsilon = 1 is a sign flip of the mean honest update.
    """

    name: ClassVar[str] = "ipm"
    observes: ClassVar[bool] = True
    epsilon: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive("epsilon", self.epsilon)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        mean = _honest_updates(trained, base, observed).mean(axis=0, dtype=np.float64)
        return (base - self.epsilon * mean).astype(np.float32)


_ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (Attack, RandomModel, RandomModelByTurn, MinusUniform, FreeRider, LabelShuffle,
                LabelShift, BlankImages, SignFlip, ScaledUpdate, GaussianNoise, ALIE, IPM)
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
    """The attack `kind` with `params`; raises ValueError naming an unknown kind or parameter.

    Configuration files and flags give every parameter as a number: a whole float (10.0) is
    taken for an integer parameter, any other value is checked by the attack itself.
    """
    allowed = attack_params(kind)
    for key, value in params.items():
        if key not in allowed:
            raise ValueError(f"attack {kind!r} has no parameter {key!r}; "
                             f"its parameters are {sorted(allowed)}")
        if (type(allowed[key]) is int and isinstance(value, float) and value.is_integer()):
            params[key] = int(value)
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


def _check_observed(observed: np.ndarray, size: int) -> None:
    if (not isinstance(observed, np.ndarray) or observed.ndim != 2
            or (len(observed) and observed.shape[1] != size)):
        raise ValueError(f"observed must be an array [k, {size}], got "
                         f"{getattr(observed, 'shape', type(observed).__name__)}")


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
