"""Krum and Multi-Krum over the own and the received models.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", NeurIPS 2017. Each of the n = k + 1 candidates (own model included) is scored by
the sum of squared distances to its n - f - 2 nearest other candidates; Krum keeps the best one,
Multi-Krum averages the m best.

Few candidates: Krum's guarantee needs n > 2f + 2. The rule still runs below that, by scoring
against max(1, n - f - 2) nearest neighbours (so at least the single nearest); with n = 2 both
candidates score the same. Ties go to the lower index, i.e. the own model first, so an undecidable
buffer leaves the node where it is.
"""

from __future__ import annotations

import numpy as np

from dfl_ray.defense.aggregate import (
    krum_scores,
    pairwise_sq_distances,
    stack_candidates,
    weighted_mean,
)
from dfl_ray.defense.base import AggregationInput, AggregationResult, check_count


def check_krum_params(*, f: int | None = None) -> None:
    """Raise ValueError naming a parameter outside its range."""
    if f is not None:
        check_count("f", f, 0)


def check_multi_krum_params(*, f: int | None = None, m: int | None = None) -> None:
    """Raise ValueError naming a parameter outside its range."""
    check_krum_params(f=f)
    if m is not None:
        check_count("m", m, 1)


def krum(inp: AggregationInput, *, f: int | None = None) -> AggregationResult:
    """w' = the candidate (own or received) with the lowest Krum score, copied.

    f: number of Byzantine candidates to tolerate; None means the most Krum tolerates for this
        buffer, max(0, (n - 3) // 2) with n = k + 1.
    Weights: 1 for the chosen received model, 0 for the others (all 0 when the own model wins).
    Reputations pass through unchanged.
    """
    return multi_krum(inp, f=f, m=1)


def multi_krum(inp: AggregationInput, *, f: int | None = None,
               m: int | None = None) -> AggregationResult:
    """w' = mean of the m candidates (own or received) with the lowest Krum scores.

    f: as for `krum`. m: how many candidates to average; None means n - f, as in the paper's
        experiments; a larger m than there are candidates averages all of them.
    Weights: 1/m for each chosen received model, 0 for the others. Reputations pass through.
    """
    check_multi_krum_params(f=f, m=m)
    n = inp.k + 1
    tolerated = max(0, (n - 3) // 2) if f is None else int(f)
    chosen_count = min(n, n - tolerated if m is None else int(m))
    chosen_count = max(chosen_count, 1)

    rows = stack_candidates(inp.own, inp.rows)
    scores = krum_scores(pairwise_sq_distances(rows), tolerated)
    chosen = np.argsort(scores, kind="stable")[:chosen_count]
    selection = np.zeros(n)
    selection[chosen] = 1.0
    model = rows[chosen[0]].copy() if chosen_count == 1 else weighted_mean(rows, selection)
    return AggregationResult(model, dict(inp.reputations), selection[1:] / chosen_count)
