"""Omniscient-style attacks that craft their model from the honest updates they observed.

ALIE (Baruch et al., "A Little Is Enough: Circumventing Defenses For Distributed Learning",
NeurIPS 2019), IPM (Xie et al., "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner
Product Manipulation", UAI 2019), min-max and min-sum (Shejwalkar and Houmansadr, "Manipulating
the Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated Learning", NDSS
2021) and mimic (Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets
via Bucketing", ICLR 2022). See `dfl_ray.attacks.base` for what `observed` holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dfl_ray.attacks.base import Attack, check_count, check_positive, honest_updates


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
        check_positive("z", self.z)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        u = honest_updates(trained, base, observed)
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
        check_positive("epsilon", self.epsilon)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        mean = honest_updates(trained, base, observed).mean(axis=0, dtype=np.float64)
        return (base - self.epsilon * mean).astype(np.float32)




def _largest_gamma(fits: Callable[[float], bool], start: float, tol: float) -> float:
    """The largest gamma in [0, start] with fits(gamma), by the halving search of Shejwalkar and
    Houmansadr's code (step halves each probe, up while it fits, down while it does not)."""
    gamma, step, best = start, start / 2.0, 0.0
    while step > tol:
        if fits(gamma):
            best = max(best, gamma)
            gamma += step
        else:
            gamma -= step
        step /= 2.0
    return best


def _pairwise_sq(u: np.ndarray) -> np.ndarray:
    """float64 [n, n]: squared distances between the rows of u (float64 [n, size])."""
    sq = (u * u).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (u @ u.T), 0.0)


def _around(u: np.ndarray, mean: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """||u_i - mean||^2 and p . (u_i - mean) per row: with a unit p, the squared distance of
    u_i to mean + gamma p is the first minus 2 gamma times the second plus gamma^2."""
    centred = u - mean
    return (centred * centred).sum(axis=1), centred @ p


@dataclass(frozen=True)
class MinMax(Attack):
    """Min-max (Shejwalkar and Houmansadr, NDSS 2021): base + mean(u) + gamma * p.

    u are the honest updates the attacker has seen and its own, p = -mean(u) / ||mean(u)|| (the
    paper's inverse unit vector), and gamma the largest value for which the published update is
    no farther from any honest update than the two farthest honest updates are from each other:
    as far against the honest direction as it can go while staying inside the honest spread,
    which distance-based defenses (Krum, gating on distances) cannot tell apart. Colluders see
    nearly the same honest models, so they publish nearly the same update.
    """

    name: ClassVar[str] = "min_max"
    observes: ClassVar[bool] = True
    gamma_init: float = 10.0
    """Start of the search for gamma (in units of ||p|| = 1, i.e. of parameter distance)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("gamma_init", self.gamma_init)

    def _fits(self, u: np.ndarray, mean: np.ndarray, p: np.ndarray) -> Callable[[float], bool]:
        limit = float(_pairwise_sq(u).max())
        spread, along = _around(u, mean, p)

        def fits(gamma: float) -> bool:
            return float((spread - 2.0 * gamma * along + gamma * gamma).max()) <= limit

        return fits

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        u = honest_updates(trained, base, observed).astype(np.float64)
        mean = u.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm == 0.0 or len(u) < 2:
            return (base + mean).astype(np.float32)
        p = -mean / norm
        gamma = _largest_gamma(self._fits(u, mean, p), float(self.gamma_init), 1e-5)
        return (base + mean + gamma * p).astype(np.float32)


@dataclass(frozen=True)
class MinSum(MinMax):
    """Min-sum (Shejwalkar and Houmansadr, NDSS 2021): as min-max, but gamma is the largest value
    for which the published update's summed squared distance to the honest updates stays within
    the largest such sum of an honest update: it passes rules that score by summed distances."""

    name: ClassVar[str] = "min_sum"

    def _fits(self, u: np.ndarray, mean: np.ndarray, p: np.ndarray) -> Callable[[float], bool]:
        limit = float(_pairwise_sq(u).sum(axis=1).max())
        spread, along = _around(u, mean, p)

        def fits(gamma: float) -> bool:
            return float((spread - 2.0 * gamma * along + gamma * gamma).sum()) <= limit

        return fits


@dataclass(frozen=True)
class Mimic(Attack):
    """Mimic (Karimireddy, He, Jaggi, ICLR 2022): publish base plus one honest node's update.

    Every colluder copies the same honest update, the one reaching farthest along the top
    principal direction of the honest updates (found by `iterations` of power iteration), so
    that node's data is over-represented in every aggregate: under label skew this pulls the
    honest models towards one node's labels while every published update is a genuine one.
    """

    name: ClassVar[str] = "mimic"
    observes: ClassVar[bool] = True
    iterations: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("iterations", self.iterations, 1)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        if observed is None or len(observed) == 0:
            return trained.copy()
        u = np.asarray(observed, dtype=np.float64)
        centred = u - u.mean(axis=0)
        # Power iteration from a fixed start, so colluders with the same observations agree.
        v = np.ones(u.shape[1]) / np.sqrt(u.shape[1])
        for _ in range(int(self.iterations)):
            w = centred.T @ (centred @ v)
            norm = float(np.linalg.norm(w))
            if norm == 0.0:
                break
            v = w / norm
        pick = int(np.argmax(np.abs(centred @ v)))
        return (base + u[pick]).astype(np.float32)
