"""dfl_shield: dfl_guard rebuilt for attackers who know it: update-norm bounds no attacker can
widen, and a test of each received model on data no attacker has seen.

Why. dfl_guard gates and clips by distances to the own model, with the radius set from the
median of those distances. A white-box attacker (`dfl_ray.attacks.GateEdge`) sits just inside
that radius and pushes against the honest direction; honest models drift apart, the median
distance grows, the radius grows with it, and the models diverge. Geometry alone cannot settle
it: colluders who all sit at one side of every coordinate also drag a coordinate-wise median
towards them (the order-statistic shift ALIE exploits), so even a median reference direction
let the gate-edge attacker through. What the attackers cannot fit is the receiver's own
validation split. So every received model is read as an update from the receiver's round-start
model b (u_i = m_i - b, own update u_0 = w - b), and:

1. norm bound: r = the median of the update norms of own + received models. With attackers
   fewer than half of those, r is an order statistic of honest update norms whatever the
   attackers send: they can move it from one honest norm to a neighbouring one, never beyond
   the honest norms. An update longer than `gate` * r counts for nothing this round (random and
   boosted models); the others are clipped to `clip` * r (norm bounding, Sun et al., "Can You
   Really Backdoor Federated Learning?", arXiv 1911.07963; centered clipping, Karimireddy, He,
   Jaggi, ICML 2021, here centred on the round start);
2. validation probe (`inp.probe`, the node's validation loss): for each received model, the own
   model w is moved `probe_step` of the way towards its clipped version on every coordinate
   but the output layer, and the rise of the validation loss over w's is measured. The output
   layer stays w's own, so an honest peer's other label mix (which lives in the classifier)
   costs little, while a model whose feature layers work against learning costs much. A model
   whose rise exceeds `probe_ratio` x the median rise (floored at 0) plus `probe_slack` counts
   for nothing this round: the median rise is an honest one while attackers are fewer than half
   of the received, and no attacker knows the data it is measured on (the idea of validating
   updates on data the server holds, as in Zeno, Xie, Koyejo, Gupta, ICML 2019, and FLTrust,
   Cao et al., NDSS 2021, with each node's own split as the root data);
3. dfl_guard's reversal test (the output layer's update skew, `head_skew`) against sign
   flippers that leave the feature layers honest, and its balance test (`head_imbalance`:
   no training moves every class's output bias one way, which ALIE does); optionally
   (`oppose` < 1) a cosine test against the coordinate-wise median update (off by default, for
   the reason above);
4. a recovering reputation: R <- (1 - beta) R + beta when the model passed 1-3, R <- (1 -
   penalty) R when it failed (with penalty = beta, dfl_guard's moving average), and a floor
   below which a sender has no weight;
5. w' = (own_weight * w + sum R_i (b + clip(u_i))) / (own_weight + sum R_i).

It does not stop a backdoor sent by as many nodes as hold a digit: a trigger taught by three
colluders costs nothing on clean validation data and looks, to any statistic over updates,
like a class that three honest nodes hold.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dfl_ray.defense.aggregate import distances_to, weighted_sum
from dfl_ray.defense.base import AggregationInput, AggregationResult, check_number
from dfl_ray.defense.guard import head_imbalance, passes_probe, passes_reversal


def check_dfl_shield_params(*, clip: float = 2.0, gate: float = 4.0, probe_step: float = 0.5,
                            probe_ratio: float = 2.0, probe_slack: float = 0.05,
                            oppose: float = 1.0, coords: int = 32768, reversal: float = 0.0,
                            beta: float = 0.3, penalty: float = 0.3, initial: float = 1.0,
                            floor: float = 0.3, own_weight: float = 1.0,
                            balance: float = 0.5, entry: float = 0.0) -> None:
    """Raise ValueError naming a parameter outside its range."""
    check_number("entry", entry, 0.0, 1.0)
    check_number("penalty", penalty, 0.0, 1.0)
    check_number("probe_step", probe_step, 0.0, 1.0, low_open=True)
    check_number("probe_ratio", probe_ratio, 0.0, allow_inf=True)
    check_number("probe_slack", probe_slack, 0.0)
    check_number("clip", clip, 0.0, low_open=True, allow_inf=True)
    check_number("gate", gate, 0.0, low_open=True, allow_inf=True)
    check_number("oppose", oppose, 0.0, 1.0)
    check_number("reversal", reversal, 0.0, 1.0)
    check_number("balance", balance, 0.0, 1.0)
    check_number("beta", beta, 0.0, 1.0, low_open=True)
    check_number("initial", initial, 0.0, 1.0)
    check_number("floor", floor, 0.0, 1.0)
    check_number("own_weight", own_weight, 0.0, low_open=True)
    if isinstance(coords, bool) or not isinstance(coords, int | float) or coords != int(coords) \
            or coords < 0:
        raise ValueError(f"coords must be a whole number >= 0 (0: all coordinates), got {coords!r}")


def dfl_shield(inp: AggregationInput, *, clip: float = 2.0, gate: float = 4.0,
               probe_step: float = 0.5, probe_ratio: float = 2.0, probe_slack: float = 0.05,
               oppose: float = 1.0, coords: int = 32768, reversal: float = 0.0,
               beta: float = 0.3, penalty: float = 0.3, initial: float = 1.0,
               floor: float = 0.3, own_weight: float = 1.0,
               balance: float = 0.5, entry: float = 0.0) -> AggregationResult:
    """Bound update norms by the median update norm, test each model on the node's validation
    data, and average with recovering reputations (needs `inp.base`; the probe test needs
    `inp.probe` and is skipped without it).

    clip: clip each received update to clip * r (r = median update norm of own + received).
    gate: an update longer than gate * r counts for nothing this round.
    probe_step: how far (a fraction in (0, 1]) the probe moves w towards each clipped model.
    probe_ratio, probe_slack: a model whose validation-loss rise exceeds probe_ratio x the
        median rise (floored at 0) + probe_slack counts for nothing this round (needs
        `inp.probe`, skipped without it; math.inf turns the test off).
    oppose: an update whose cosine with the coordinate-wise median update is below -oppose counts
        for nothing this round (1 turns the test off).
    coords: coordinates sampled for that median and cosine (0: all of them).
    reversal: dfl_guard's output-layer reversal test (1 turns it off).
    balance: dfl_guard's output-bias balance test (1 turns it off).
    beta: reputation a passing round earns: R <- (1 - beta) R + beta.
    penalty: reputation share a failing round costs: R <- (1 - penalty) R (penalty = beta is
        dfl_guard's symmetric moving average; a larger penalty keeps a sender that fails often,
        even half the time, below the floor).
    initial, floor, own_weight: reputation and weights as in dfl_guard.
    entry: the reputation from the rounds before this one that a sender needs to get weight
        (0: none). The floor is checked after this round's update, and a pass lifts R to at
        least beta, so with beta >= floor a sender that passes one round in two is weighted
        every time it passes; with entry = floor it must have kept its standing.
    """
    check_dfl_shield_params(clip=clip, gate=gate, probe_step=probe_step,
                            probe_ratio=probe_ratio, probe_slack=probe_slack, oppose=oppose,
                            coords=coords, reversal=reversal, beta=beta, penalty=penalty,
                            initial=initial, floor=floor, own_weight=own_weight,
                            balance=balance, entry=entry)
    if inp.base is None:
        raise ValueError("dfl_shield needs AggregationInput.base (the round-start model)")
    own, base, k = inp.own, inp.base, inp.k
    norms = update_norms(inp)
    own_norm = float(np.linalg.norm(own.astype(np.float64) - base))
    r = float(np.median(np.append(norms, own_norm)))
    accepted = norms <= gate * r if np.isfinite(gate) else np.ones(k, dtype=bool)
    if oppose < 1.0:
        accepted &= median_update_cosines(inp, int(coords)) >= -oppose
    if inp.start_head is not None and reversal < 1.0:
        accepted &= passes_reversal(inp, reversal, accepted)
    if inp.head is not None and balance < 1.0:
        accepted &= head_imbalance(inp) <= balance
    radius = float(clip) * r
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = np.where(norms > radius, radius / norms, 1.0) if np.isfinite(radius) else np.ones(k)
    if inp.probe is not None and np.isfinite(probe_ratio) and accepted.any():
        accepted &= passes_probe(inp, pull, accepted, ratio=probe_ratio, step=probe_step,
                                 slack=probe_slack)

    prior = inp.get_reputations(float(initial))
    reputation = np.where(accepted, (1.0 - beta) * prior + beta, (1.0 - penalty) * prior)
    weights = np.where(accepted & (reputation >= floor) & (prior >= entry), reputation, 0.0)
    shares = weights / (float(own_weight) + float(weights.sum()))
    # A clipped model is b + p_i (m_i - b) = p_i m_i + (1 - p_i) b: mix rows, own and base.
    coeffs = shares * pull
    own_share = 1.0 - float(shares.sum())
    model = weighted_sum((*inp.rows, own, base),
                         np.concatenate([coeffs, [own_share, float((shares - coeffs).sum())]]))

    reputations = dict(inp.reputations)
    reputations.update(zip(inp.senders, reputation.tolist(), strict=True))
    return AggregationResult(model, reputations, shares)


def update_norms(inp: AggregationInput) -> np.ndarray:
    """float64 [k]: ||m_i - base|| for each received model."""
    if inp.base is None:
        raise ValueError("update_norms needs AggregationInput.base")
    return distances_to(inp.rows, inp.base)


def median_update_cosines(inp: AggregationInput, coords: int) -> np.ndarray:
    """float64 [k]: cosine of each received update m_i - base with the coordinate-wise median
    of the own and received updates.

    Taken on `coords` coordinates (0 or >= d: all of them) drawn with a seed from the own model,
    which no sender knows before it publishes. A zero vector has cosine 0.
    """
    if inp.base is None:
        raise ValueError("median_update_cosines needs AggregationInput.base")
    d = inp.own.shape[0]
    if 0 < coords < d:
        seed = int.from_bytes(hashlib.blake2b(inp.own[:4096].tobytes(), digest_size=8).digest(),
                              "little")
        idx = np.sort(np.random.default_rng(seed).choice(d, size=coords, replace=False))
        base, own = inp.base[idx], inp.own[idx]
        updates = np.stack([r[idx] for r in inp.rows]) - base
    else:
        base, own = inp.base, inp.own
        updates = inp.matrix - base
    centre = np.median(np.vstack([updates, (own - base)[None, :]]), axis=0)
    products = updates.astype(np.float64) @ centre.astype(np.float64)
    lengths = np.linalg.norm(updates.astype(np.float64), axis=1) * float(np.linalg.norm(centre))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lengths > 0.0, products / lengths, 0.0)
