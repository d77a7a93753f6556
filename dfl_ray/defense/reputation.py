"""The original DFL reputation rule: penalise the lowest-scored senders, weight by score x reputation.

Tian et al., "DFL: High-Performance Blockchain-Based Federated Learning", arXiv 2110.15457 (ACM DLT
2023); kept exactly as its implementation behaved (reputation_005 / reputation_001) for comparison.
Its known flaws are deliberate here: every call penalises someone, so honest reputations drain to
0 over time and the rule then degenerates to a plain mean; `dfl_trust` is the fixed successor.
"""

from __future__ import annotations

import numpy as np

from dfl_ray.defense.aggregate import weighted_sum
from dfl_ray.defense.base import AggregationInput, AggregationResult, check_number


def check_dfl_reputation_params(*, delta: float = 0.05, initial: float = 1.0) -> None:
    """Raise ValueError naming a parameter outside its range."""
    check_number("delta", delta, 0.0, 1.0)
    check_number("initial", initial, 0.0, 1.0)


def dfl_reputation(inp: AggregationInput, *, delta: float = 0.05,
                   initial: float = 1.0) -> AggregationResult:
    """Original DFL aggregation with a penalty-only reputation.

    delta: reputation a sender loses each time its model has the lowest score of the buffer
        (0.05 for the original reputation_005, 0.01 for reputation_001); floored at 0, never regained.
    initial: reputation of a sender seen for the first time.

    Every model whose score equals the minimum score (ties included, so all of them when all
    scores are equal) costs its sender `delta`. The model mixes with weights a_i * R0_i, R0 being
    the reputations before this update: w' = 1/2 w + 1/2 sum(a_i R0_i m_i) / sum(a_i R0_i), or
    w' = 1/2 w + 1/2 mean(m_i) when all those weights are 0. Weights: each model's share of w'.
    """
    check_dfl_reputation_params(delta=delta, initial=initial)
    prior = inp.get_reputations(float(initial))
    penalised = inp.scores == inp.scores.min()
    updated = np.where(penalised, np.maximum(prior - float(delta), 0.0), prior)

    raw = inp.scores * prior
    shares = 0.5 * raw / raw.sum() if raw.sum() > 0.0 else np.full(inp.k, 0.5 / inp.k)
    model = weighted_sum((inp.own, *inp.rows), np.append(0.5, shares))

    reputations = dict(inp.reputations)
    reputations.update(zip(inp.senders, updated.tolist(), strict=True))
    return AggregationResult(model, reputations, shares)
