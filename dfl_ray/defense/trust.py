"""dfl_trust: median-centred distance gating, centered clipping and a reputation that recovers.

Why: the original DFL reputation (Tian et al., arXiv 2110.15457) failed on non-IID data because
every aggregation penalised someone, so honest reputations drained to 0 and the rule fell back to
a plain mean that let the attacker in, and because absolute scores punish honest peers whose
label mix differs from the receiver's. Scores alone cannot be trusted under label skew (an honest
model may score low on my data, a constant-class model high), but honest models start each round
from nearly the same aggregate and stay close together in parameter space. So this rule decides
membership by geometry and uses scores only, relatively, to steer a recovering reputation:

1. centre c = coordinate-wise median of own + received (Yin et al., "Byzantine-Robust
   Distributed Learning: Towards Optimal Statistical Rates", ICML 2018), weighted by votes:
   each sender votes with its reputation before this round, the own model with own_weight
   capped at the others' total (an own model holding the majority alone would be the centre,
   at distance 0). A plain median is captured whenever attackers fill most of a small buffer
   (3 of 4 in about 5 % of buffers with 30 % attackers), and a node that averages them in then
   helps them capture its peers' medians; with votes, senders already caught have no say, and
   with initial < own_weight / 2 the own model and one honest peer outvote three newcomers;
2. distance gating: with d_i = ||x_i - c|| and D = the larger of the own model's distance and
   the same weighted median of d over own + received, reject a received model with
   d_i > gate * D (the distance-based rejection idea of Blanchard et al., "Machine Learning with
   Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017);
3. centered clipping of each accepted model into the ball of radius clip * D around c
   (Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust Optimization", ICML 2021);
4. reputation as an exponential moving average R <- (1 - beta) R + beta q of an observation q in
   [0, 1]: 0 when gated out, else clip(1 + (a_i - s_med) / margin, 0, 1) with s_med the median
   score of own + accepted models this round, so one bad round is forgotten and nobody is
   penalised for being the lowest of a good lot;
5. w' = (own_weight * w + sum R_i clip(m_i)) / (own_weight + sum R_i) over accepted models with
   R_i >= floor: trust-weighted averaging with norm clipping, as in FLTrust (Cao, Fang, Liu,
   Gong, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping", NDSS 2021), with
   the trust earned over rounds instead of from a root data set.
"""

from __future__ import annotations

import math

import numpy as np

from dfl_ray.defense.aggregate import (
    clip_factors,
    distances_to,
    stack_candidates,
    weighted_coordinate_median,
)
from dfl_ray.defense.base import AggregationInput, AggregationResult, check_number


def check_dfl_trust_params(*, gate: float = 2.5, clip: float = 1.0, beta: float = 0.25,
                           margin: float = 0.25, initial: float = 0.4, floor: float = 0.2,
                           own_weight: float = 1.0) -> None:
    """Raise ValueError naming a parameter outside its range."""
    check_number("gate", gate, 0.0, allow_inf=True)
    check_number("clip", clip, 0.0, allow_inf=True)
    check_number("beta", beta, 0.0, 1.0, low_open=True)
    check_number("margin", margin, 0.0, low_open=True)
    check_number("initial", initial, 0.0, 1.0)
    check_number("floor", floor, 0.0, 1.0)
    check_number("own_weight", own_weight, 0.0)


def dfl_trust(inp: AggregationInput, *, gate: float = 2.5, clip: float = 1.0, beta: float = 0.25,
              margin: float = 0.25, initial: float = 0.4, floor: float = 0.2,
              own_weight: float = 1.0) -> AggregationResult:
    """Gate, clip and reputation-weight the received models around their weighted median.

    gate: reject a received model farther than gate * D from the centre (D = the weighted
        median distance of own + received to the centre, at least the own model's distance);
        math.inf disables gating.
    clip: clip accepted models to within clip * D of the centre; math.inf disables clipping.
    beta: reputation learning rate, in (0, 1]. A single bad observation costs a sender at
        reputation 1 beta; each good round after it shrinks that loss by the factor (1 - beta).
    margin: score gap below the round's median score at which the observation q reaches 0;
        models scoring at or above the median observe q = 1.
    initial: reputation of a sender seen for the first time. Below own_weight / 2, so that in a
        buffer of 4 the own model and one honest peer outvote three unknown senders; one clean
        round lifts a newcomer from 0.4 to 0.55, so honest peers gain weight quickly.
    floor: accepted models whose updated reputation is below it get weight 0 (from the initial
        0.4, three rejections in a row).
    own_weight: weight and vote of the own model (reputations are in [0, 1], so 1 is "as one
        fully trusted peer"); its vote is capped at the received models' total. If nothing has
        weight the own model is kept; if nothing has a vote all candidates vote equally.

    Weights: R_i / (own_weight + sum R_j) for each counted model, before clipping moves part of
    that share onto the centre.
    """
    check_dfl_trust_params(gate=gate, clip=clip, beta=beta, margin=margin, initial=initial,
                           floor=floor, own_weight=own_weight)
    prior = inp.get_reputations(float(initial))
    # The own vote is capped at the others' total: an own model holding the majority alone
    # would be the centre, at distance 0, making D = 0 and rejecting every received model.
    votes = np.append(min(float(own_weight), float(prior.sum())), prior)
    if votes.sum() <= 0.0:
        votes = np.ones_like(votes)
    rows = stack_candidates(inp.own, inp.rows)
    centre = weighted_coordinate_median(rows, votes)
    dist = distances_to(rows, centre)
    # The own model is honest and freshly trained like the honest peers, so its distance is a
    # floor on the honest spread: models that skipped training (free-riders) sit near the centre
    # and would otherwise shrink D until honest updates looked like outliers.
    spread = max(float(weighted_coordinate_median(dist[:, None], votes)[0]), float(dist[0]))
    accepted = dist[1:] <= float(gate) * spread if math.isfinite(gate) else np.ones(inp.k, bool)

    reference = float(np.median(np.append(inp.scores[accepted], inp.own_score)))
    observed = np.clip(1.0 + (inp.scores - reference) / float(margin), 0.0, 1.0)
    observed[~accepted] = 0.0
    reputation = (1.0 - beta) * prior + beta * observed
    raw = np.where(accepted & (reputation >= floor), reputation, 0.0)

    total = float(own_weight) + float(raw.sum())
    if total > 0.0:
        shares = raw / total
        radius = float(clip) * spread if math.isfinite(clip) else math.inf
        pull = clip_factors(dist[1:], radius)
        # A clipped model is c + s_i (m_i - c) = s_i m_i + (1 - s_i) c: mix the rows and the centre.
        row_coeffs = np.append(float(own_weight) / total, shares * pull)
        centre_coeff = float((shares * (1.0 - pull)).sum())
        mixed = (row_coeffs.astype(np.float32) @ rows).astype(np.float64) + centre_coeff * centre
        model = mixed.astype(np.float32)
    else:
        shares = np.zeros(inp.k)
        model = inp.own.copy()

    reputations = dict(inp.reputations)
    reputations.update(zip(inp.senders, reputation.tolist(), strict=True))
    return AggregationResult(model, reputations, shares)
