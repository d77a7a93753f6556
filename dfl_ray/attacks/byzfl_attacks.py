"""ByzFL's attacks, run against this project's defenses.

ByzFL (EPFL's library of Byzantine-robust learning, `byzfl` 0.0.11) implements the published
model-poisoning attacks as functions from the honest vectors to the one vector every Byzantine
worker sends. Each kind here publishes base + that vector, computed on the honest updates the
attacker observed and its own (`dfl_ray.attacks.base.honest_updates`), so the literature's
attacks, as ByzFL implements them, run against this project's rules. The optimised
variants (ByzFL's Opt-IPM and Opt-ALIE) line-search the attack factor tau to push a surrogate of
the receiver's rule, a ByzFL aggregator over the honest updates plus f copies of the attack, as
far from the honest mean as it goes; `rule` names the surrogate.

ByzFL imports torch, torchvision and matplotlib when it loads, so it is imported on an
attacker's first publication, not with this module: importing `dfl_ray.attacks` stays
numpy-only.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dfl_ray.attacks.base import Attack, check_positive, honest_updates

RULES: tuple[str, ...] = ("median", "trmean", "krum", "multikrum", "cc", "nnm_trmean",
                          "nnm_median")
"""Surrogate rules the optimised attacks search against: ByzFL's Median, TrMean(f), Krum(f),
MultiKrum(f), centered clipping (see `_CenteredClippingAtBase`), and TrMean(f) or Median after
nearest-neighbour mixing NNM(f)."""

# ByzFL's Gaussian attack draws from numpy's global generator; the draw is seeded from the
# attacker's own generator and the global state restored, one attacker at a time.
_GLOBAL_RANDOM = threading.Lock()


def _byzfl() -> Any:
    import byzfl

    return byzfl


def _check_real(name: str, value: object) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating)
            or not math.isfinite(value)):
        raise ValueError(f"attack parameter {name} must be a finite number, got {value!r}")


def _check_count(name: str, value: object, low: int) -> None:
    if (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low):
        raise ValueError(f"attack parameter {name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class _ByzflAttack(Attack):
    """Publishes base + the vector ByzFL's attack computes from the honest updates [n, size]
    (the observed ones, then the attacker's own). `_vector` returns None where the attack is
    undefined for the rows at hand; the trained model is published then."""

    observes: ClassVar[bool] = True
    keep_sum: int = 0
    """The last `keep_sum` coordinates of the published update are shifted to sum to zero: an
    attacker that knows `dfl_guard`'s balance test (LeNet's output bias is the last 10); 0
    publishes ByzFL's vector as it is."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_count("keep_sum", self.keep_sum, 0)

    def _vector(self, byzfl: Any, updates: np.ndarray,
                rng: np.random.Generator) -> np.ndarray | None:
        raise NotImplementedError

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        updates = honest_updates(trained, base, observed if self.observes else None)
        vector = self._vector(_byzfl(), np.ascontiguousarray(updates, dtype=np.float32), rng)
        if vector is None:
            return trained.copy()
        update = np.asarray(vector, dtype=np.float32)  # ByzFL answers numpy input in numpy
        if update.shape != base.shape:
            raise RuntimeError(f"ByzFL's {type(self).__name__} attack returned shape "
                               f"{update.shape} for models of shape {base.shape}")
        if self.keep_sum:
            update = update.copy()
            tail = update[-self.keep_sum:]
            tail -= tail.mean(dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # byzfl_inf publishes inf
            return np.add(base, update, dtype=np.float32)


@dataclass(frozen=True)
class ByzflSignFlip(_ByzflAttack):
    """ByzFL's SignFlipping (Allen-Zhu et al., ICLR 2021): base - mean(u)."""

    name: ClassVar[str] = "byzfl_sign_flip"

    def _vector(self, byzfl: Any, updates: np.ndarray,
                rng: np.random.Generator) -> np.ndarray | None:
        return byzfl.SignFlipping()(updates)


@dataclass(frozen=True)
class ByzflIPM(_ByzflAttack):
    """ByzFL's InnerProductManipulation (Xie et al., UAI 2019): base - tau * mean(u)."""

    name: ClassVar[str] = "byzfl_ipm"
    tau: float = 2.0
    """Attack factor (ByzFL's default 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("tau", self.tau)

    def _vector(self, byzfl: Any, updates: np.ndarray,
                rng: np.random.Generator) -> np.ndarray | None:
        return byzfl.InnerProductManipulation(tau=float(self.tau))(updates)


@dataclass(frozen=True)
class ByzflALIE(_ByzflAttack):
    """ByzFL's ALittleIsEnough (Baruch et al., NeurIPS 2019): base + mean(u) + tau * std(u).

    ByzFL's std is per coordinate with ddof = 1 (the sample standard deviation) and the shift
    is added (a negative tau subtracts it; this project's `alie` subtracts z population
    standard deviations). The sample std of one row is undefined: with only its own update the
    attacker publishes the trained model.

    With `up` < 1 the shift keeps its sign on a share `up` of the coordinates and is mirrored
    on the rest, a pattern drawn once from `PATTERN_SEED` (the same for every colluder and
    every round, so that the shifts add up over rounds): an attacker that knows dfl_guard's
    sign test (no received model may lie above the receiver's own on many more coordinates
    than below) keeps up - (1 - up) = 2 up - 1 under its threshold.
    """

    name: ClassVar[str] = "byzfl_alie"
    PATTERN_SEED: ClassVar[int] = 20191208
    tau: float = 1.5
    """Attack factor, any finite number (ByzFL's default 1.5)."""
    up: float = 1.0
    """Share of the coordinates whose shift keeps its sign, in [0.5, 1] (1: ByzFL's ALIE)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_real("tau", self.tau)
        _check_real("up", self.up)
        if not 0.5 <= float(self.up) <= 1.0:
            raise ValueError(f"attack parameter up must be in [0.5, 1], got {self.up!r}")

    def _vector(self, byzfl: Any, updates: np.ndarray,
                rng: np.random.Generator) -> np.ndarray | None:
        if len(updates) < 2:
            return None
        vector = byzfl.ALittleIsEnough(tau=float(self.tau))(updates)
        if self.up >= 1.0:
            return vector
        mean = updates.mean(axis=0)
        mirrored = np.random.default_rng(self.PATTERN_SEED).random(mean.size) >= self.up
        vector = np.asarray(vector, dtype=np.float32).copy()
        vector[mirrored] = 2.0 * mean[mirrored] - vector[mirrored]  # mean - shift
        return vector


class _CenteredClippingAtBase:
    """ByzFL's CenteredClipping, one step from v = 0 (in update space: the round-start model),
    with the radius this project's `centered_clipping` takes when tau is None: the median
    distance of the inputs to v. A fresh ByzFL instance per call, as ByzFL's keeps the last
    output as the next call's centre."""

    def __init__(self, byzfl: Any) -> None:
        self.byzfl = byzfl

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        radius = float(np.median(np.linalg.norm(vectors.astype(np.float64), axis=1)))
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero row: radius / 0 = inf
            return self.byzfl.CenteredClipping(L=1, tau=radius)(vectors)


def _surrogate(byzfl: Any, rule: str, f: int) -> tuple[Any, list[Any]]:
    """ByzFL's aggregator and pre-aggregators for `rule` (one of RULES), built with f."""
    if rule == "median":
        return byzfl.Median(), []
    if rule == "trmean":
        return byzfl.TrMean(f=f), []
    if rule == "krum":
        return byzfl.Krum(f=f), []
    if rule == "multikrum":
        return byzfl.MultiKrum(f=f), []
    if rule == "cc":
        return _CenteredClippingAtBase(byzfl), []
    if rule == "nnm_trmean":
        return byzfl.TrMean(f=f), [byzfl.NNM(f=f)]
    if rule == "nnm_median":
        return byzfl.Median(), [byzfl.NNM(f=f)]
    raise ValueError(f"attack parameter rule must be one of {list(RULES)}, got {rule!r}")


@dataclass(frozen=True)
class ByzflOptIPM(_ByzflAttack):
    """ByzFL's Optimal_InnerProductManipulation: IPM with the tau that moves the surrogate
    rule's aggregate of (honest updates + f copies of the attack) farthest from the honest mean.

    ByzFL's search: from tau = 0, steps of 10 doubled while the distance grows, then shrunk by
    0.8 per probe, `evals` evaluations in all. With n honest rows and n <= f the surrogate uses
    n - 1 copies (ByzFL's trimmed mean and Krum need fewer Byzantine vectors than honest ones);
    with only its own update the attacker has nothing to search on and publishes the trained
    model.
    """

    name: ClassVar[str] = "byzfl_opt_ipm"
    rule: str = "nnm_trmean"
    """Surrogate of the receivers' rule, one of RULES."""
    f: int = 3
    """Colluders: copies of the attack the surrogate aggregates, and the f of its rule."""
    evals: int = 20
    """Evaluations of the surrogate in the search for tau (ByzFL's default 20)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.rule, str) or self.rule not in RULES:
            raise ValueError(f"attack parameter rule must be one of {list(RULES)}, "
                             f"got {self.rule!r}")
        _check_count("f", self.f, 1)
        _check_count("evals", self.evals, 1)

    def _optimal(self, byzfl: Any) -> Any:
        return byzfl.Optimal_InnerProductManipulation

    def _vector(self, byzfl: Any, updates: np.ndarray,
                rng: np.random.Generator) -> np.ndarray | None:
        f = min(int(self.f), len(updates) - 1)
        if f < 1:
            return None
        agg, pre_aggs = _surrogate(byzfl, self.rule, f)
        attack = self._optimal(byzfl)(agg, pre_agg_list=pre_aggs, f=f, evals=int(self.evals))
        return attack(updates)


@dataclass(frozen=True)
class ByzflOptALIE(ByzflOptIPM):
    """ByzFL's Optimal_ALittleIsEnough: ALIE (mean + tau * std) with the tau found as for
    `byzfl_opt_ipm`; like `byzfl_alie` it needs two honest rows."""

    name: ClassVar[str] = "byzfl_opt_alie"

    def _optimal(self, byzfl: Any) -> Any:
        return byzfl.Optimal_ALittleIsEnough


@dataclass(frozen=True)
class ByzflMimic(_ByzflAttack):
    """ByzFL's Mimic (Karimireddy, He, Jaggi, ICLR 2022): base + the honest update number
    `epsilon`, counted in the order `honest_updates` gives (the observed ones, then the
    attacker's own). When fewer rows are at hand the attacker publishes the trained model."""

    name: ClassVar[str] = "byzfl_mimic"
    epsilon: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_count("epsilon", self.epsilon, 0)

    def _vector(self, byzfl: Any, updates: np.ndarray,
                rng: np.random.Generator) -> np.ndarray | None:
        if int(self.epsilon) >= len(updates):
            return None
        return np.array(byzfl.Mimic(epsilon=int(self.epsilon))(updates))


@dataclass(frozen=True)
class ByzflInf(_ByzflAttack):
    """ByzFL's Inf: an update of +inf in every coordinate, so the published model is +inf
    everywhere (receivers' payload checks refuse it as not finite)."""

    name: ClassVar[str] = "byzfl_inf"
    observes: ClassVar[bool] = False

    def _vector(self, byzfl: Any, updates: np.ndarray,
                rng: np.random.Generator) -> np.ndarray | None:
        return byzfl.Inf()(updates)


@dataclass(frozen=True)
class ByzflGaussian(_ByzflAttack):
    """ByzFL's Gaussian: an update drawn N(mu, sigma^2) per coordinate, whatever was trained.

    ByzFL draws from numpy's global generator; it is seeded with rng.integers(2**32), one draw
    of the attacker's generator, and restored after the draw, so a seed fixes the attack and
    nothing else sees the global generator change.
    """

    name: ClassVar[str] = "byzfl_gaussian"
    observes: ClassVar[bool] = False
    mu: float = 0.0
    sigma: float = 1.0
    """Standard deviation per coordinate (ByzFL's default 1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_real("mu", self.mu)
        _check_real("sigma", self.sigma)
        if self.sigma < 0:
            raise ValueError(f"attack parameter sigma must be >= 0, got {self.sigma!r}")

    def _vector(self, byzfl: Any, updates: np.ndarray,
                rng: np.random.Generator) -> np.ndarray | None:
        seed = int(rng.integers(2**32))
        attack = byzfl.Gaussian(mu=float(self.mu), sigma=float(self.sigma))
        with _GLOBAL_RANDOM:
            state = np.random.get_state()
            np.random.seed(seed)
            try:
                return attack(updates)
            finally:
                np.random.set_state(state)
