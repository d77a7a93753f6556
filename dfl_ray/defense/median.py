"""Coordinate-wise median of the own and the received models.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018 (the coordinate-wise median aggregator). Here the own model is one of
the n = k + 1 candidates, so a node never takes a value that only received models agree on.
"""

from __future__ import annotations

from dfl_ray.defense.aggregate import coordinate_trimmed_mean
from dfl_ray.defense.base import AggregationInput, AggregationResult


def median(inp: AggregationInput) -> AggregationResult:
    """w' = coordinate-wise median of own + received (mean of the two middle values for even n).

    Weights: each received model's share of w' averaged over coordinates, i.e. the fraction of
    coordinates in which it is the median (half a coordinate for each of two middle values).
    Reputations pass through unchanged.
    """
    candidates = (inp.own, *inp.rows)
    model, shares = coordinate_trimmed_mean(candidates, (len(candidates) - 1) // 2)
    return AggregationResult(model, dict(inp.reputations), shares[1:])
