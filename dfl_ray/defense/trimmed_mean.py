"""Coordinate-wise trimmed mean of the own and the received models.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018 (the coordinate-wise trimmed-mean aggregator, trimming a beta
fraction on each side). The own model is one of the n = k + 1 candidates.
"""

from __future__ import annotations

import math

from dfl_ray.defense.aggregate import coordinate_trimmed_mean
from dfl_ray.defense.base import AggregationInput, AggregationResult, check_number


def check_trimmed_mean_params(*, trim: float = 0.2) -> None:
    """Raise ValueError naming a parameter outside its range."""
    check_number("trim", trim, 0.0, 0.5)
    if trim == 0.5:
        raise ValueError("parameter trim must be below 0.5 (something must be left), got 0.5")


def trimmed_mean(inp: AggregationInput, *, trim: float = 0.2) -> AggregationResult:
    """w' = per coordinate, the mean of own + received after dropping the floor(trim * n) lowest
    and the floor(trim * n) highest values (n = k + 1).

    trim: fraction dropped on each side, in [0, 0.5). With few candidates floor(trim * n) may be 0,
        and the rule is then the plain mean of own + received (e.g. trim 0.2 needs n >= 5).
    Weights: each received model's share of w' averaged over coordinates. Reputations pass through.
    """
    check_trimmed_mean_params(trim=trim)
    candidates = (inp.own, *inp.rows)
    # The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from trimming one value too few.
    count = math.floor(float(trim) * len(candidates) + 1e-9)
    model, shares = coordinate_trimmed_mean(candidates, count)
    return AggregationResult(model, dict(inp.reputations), shares[1:])
