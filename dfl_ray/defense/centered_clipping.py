"""Centered clipping around the own model.

Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust Optimization", ICML 2021
(Algorithm 2, centered clipping): v <- v + 1/n sum_i (x_i - v) min(1, tau / ||x_i - v||),
repeated `iters` times. The paper centres on the previous aggregate (momentum); a DFL node's
natural centre is its own model, and the own model is one of the n = k + 1 inputs x_i. Each
iteration moves v by at most (k / n) * tau, whatever the received models hold.
"""

from __future__ import annotations

import numpy as np

from dfl_ray.defense.aggregate import clip_factors, distances_to, stack_candidates, weighted_mean
from dfl_ray.defense.base import AggregationInput, AggregationResult, check_count, check_number


def check_centered_clipping_params(*, tau: float | None = None, iters: int = 1) -> None:
    """Raise ValueError naming a parameter outside its range."""
    if tau is not None:
        check_number("tau", tau, 0.0, allow_inf=True)
    check_count("iters", iters, 1)


def centered_clipping(inp: AggregationInput, *, tau: float | None = None,
                      iters: int = 1) -> AggregationResult:
    """w' = v after `iters` centered-clipping steps from v = own model.

    tau: clipping radius in parameter space (math.inf: plain mean of own + received). None
        adapts it to the buffer: each step uses the median distance of the received models to v,
        so at least half of them are clipped and the radius needs no tuning per model size.
    iters: number of clipping steps (the paper finds 1 enough when centred on a good estimate).
    Weights: each received model's exact coefficient in w' (w' is a convex combination of own and
    received models). Reputations pass through unchanged.
    """
    check_centered_clipping_params(tau=tau, iters=iters)
    rows = stack_candidates(inp.own, inp.rows)
    n = rows.shape[0]
    # v is tracked as coefficients over the rows and rebuilt from them, so no error accumulates
    # across iterations and the weights come out exact.
    coeffs = np.zeros(n)
    coeffs[0] = 1.0
    for _ in range(int(iters)):
        v = weighted_mean(rows, coeffs)
        dist = distances_to(rows, v)
        radius = float(np.median(dist[1:])) if tau is None else float(tau)
        pull = clip_factors(dist, radius) / n
        coeffs = (1.0 - pull.sum()) * coeffs + pull
    model = weighted_mean(rows, coeffs)
    return AggregationResult(model, dict(inp.reputations), coeffs[1:])
