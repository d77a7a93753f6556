"""Plain averaging: FedAvg and the original DFL's HalfFedAvg.

FedAvg: McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017 (here unweighted: every buffered model counts once, whatever its sample
count). HalfFedAvg: the mix the original DFL implementation (Tian et al., "DFL:
High-Performance Blockchain-Based Federated Learning", arXiv 2110.15457) used for its "fedavg" runs.
Neither rule looks at scores or reputations; they are the undefended baselines.
"""

from __future__ import annotations

import numpy as np

from dfl_ray.defense.aggregate import weighted_mean, weighted_sum
from dfl_ray.defense.base import AggregationInput, AggregationResult


def fedavg(inp: AggregationInput) -> AggregationResult:
    """w' = mean(m_i); the own model is replaced. Weights: 1/k each."""
    k = inp.k
    model = weighted_mean(inp.rows, np.ones(k))
    return AggregationResult(model, dict(inp.reputations), np.full(k, 1.0 / k))


def half_fedavg(inp: AggregationInput) -> AggregationResult:
    """w' = 1/2 w + 1/2 mean(m_i). Weights: 1/(2k) each (the own model keeps 1/2)."""
    k = inp.k
    model = weighted_sum((inp.own, *inp.rows), np.append(0.5, np.full(k, 0.5 / k)))
    return AggregationResult(model, dict(inp.reputations), np.full(k, 0.5 / k))
