"""The attack interface every attacker behaviour implements, and the checks its inputs pass.

An attack has two hooks. `poison_batch` changes a training batch (data-level attacks) and returns
the arrays it was given, untouched, otherwise. `poison_model` turns the attacker's honestly trained
model and the model it started the round from into what it publishes, always a fresh float32
array. `trains` is False when the attacker does not train at all.

Every kind takes `honest_turns`: the attacker behaves honestly (trains on true data, publishes
what it trained) for its first `honest_turns` publications and attacks from then on, the
adaptive attacker that earns trust before it poisons.

Attacks that `observes` craft their model from the honest updates they have seen. A DFL attacker
sees its peers' models arrive like every node does; such attacks get, at publication, the updates
of the honest models it received in its last aggregation (each received model minus the
attacker's own model at the start of that round; colluders' models left out), one round old, as
sync rounds publish before anything of the round arrives. That is the threat model of the
adaptive attacks (`dfl_ray.attacks.adaptive`): colluding attackers who know the defense and its
parameters and see every honest model, but not the honest nodes' data, keys or validation splits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class Attack:
    """No attack: train honestly, publish the trained model."""

    name: ClassVar[str] = "none"
    trains: ClassVar[bool] = True
    poisons_data: ClassVar[bool] = False
    observes: ClassVar[bool] = False
    """Whether `poison_model` uses the honest updates the attacker observed."""
    uses_loss: ClassVar[bool] = False
    """Whether `poison_model` uses `loss`, the attacker's own validation loss."""
    loss_kind: ClassVar[str] = "loss"
    """What `loss` measures: "loss", the validation loss, or "trigger_rate", the backdoor's
    success rate on the attacker's own validation split (`Learner.trigger_rate`)."""
    honest_turns: int = 0
    """Publications made honestly before attacking (0: attack from the first)."""

    def __post_init__(self) -> None:
        check_count("honest_turns", self.honest_turns)

    def active(self, turn: int) -> bool:
        """Whether the attacker attacks on its `turn`-th publication (else it behaves honestly)."""
        return turn >= self.honest_turns

    def poison_batch(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """The (images [b, 28, 28] or [b, C, H, W], int labels [b]) the attacker trains on."""
        check_batch(images, labels, num_classes)
        return images, labels

    def poison_model(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                     turn: int, observed: np.ndarray | None = None,
                     loss: Callable[[np.ndarray], float] | None = None) -> np.ndarray:
        """The model published on the attacker's `turn`-th publication (counted from 0).

        `observed` ([k, size] float32, k >= 0) holds the honest updates the attacker has seen;
        only `observes` attacks read it, and they fall back to the attacker's own update alone
        when it is None or empty. `loss` is the attacker's own validation loss of a model
        vector; only `uses_loss` attacks call it. Before `honest_turns` the trained model is
        published as is.
        """
        check_models(trained, base, turn)
        if observed is not None:
            check_observed(observed, trained.size)
        if loss is not None and not callable(loss):
            raise ValueError(f"loss must be callable, got {type(loss).__name__}")
        if not self.active(turn):
            return trained.copy()
        if self.uses_loss:
            return self._publish_with_loss(trained, base, rng, turn, observed, loss)
        return self._publish(trained, base, rng, turn, observed)

    def _publish_with_loss(self, trained: np.ndarray, base: np.ndarray,
                           rng: np.random.Generator, turn: int, observed: np.ndarray | None,
                           loss: Callable[[np.ndarray], float] | None) -> np.ndarray:
        return self._publish(trained, base, rng, turn, observed)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return trained.copy()



def honest_updates(trained: np.ndarray, base: np.ndarray,
                   observed: np.ndarray | None) -> np.ndarray:
    """[k + 1, size] float32: the observed honest updates and the attacker's own one."""
    own = (trained - base)[None, :]
    if observed is None or len(observed) == 0:
        return own
    return np.concatenate([np.asarray(observed, dtype=np.float32), own])


def check_count(name: str, value: object, low: int = 0) -> None:
    """`value` must be an integer >= `low` (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_positive(name: str, value: object) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"attack parameter {name} must be a finite number > 0, got {value!r}")


def check_batch(images: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
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


def check_observed(observed: np.ndarray, size: int) -> None:
    if (not isinstance(observed, np.ndarray) or observed.ndim != 2
            or (len(observed) and observed.shape[1] != size)):
        raise ValueError(f"observed must be an array [k, {size}], got "
                         f"{getattr(observed, 'shape', type(observed).__name__)}")


def check_models(trained: np.ndarray, base: np.ndarray, turn: int) -> None:
    for name, vec in (("trained", trained), ("base", base)):
        if not isinstance(vec, np.ndarray) or vec.dtype != np.float32 or vec.ndim != 1:
            raise ValueError(f"{name} must be a 1-D float32 array, got "
                             f"{getattr(vec, 'dtype', type(vec).__name__)} "
                             f"{getattr(vec, 'shape', '')}")
    if trained.shape != base.shape:
        raise ValueError(f"trained has shape {trained.shape} but base has shape {base.shape}")
    if isinstance(turn, bool) or not isinstance(turn, (int, np.integer)) or turn < 0:
        raise ValueError(f"turn must be an integer >= 0, got {turn!r}")
