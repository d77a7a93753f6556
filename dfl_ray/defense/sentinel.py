"""dfl_sentinel: no received update may be longer than a multiple of the node's OWN update, and
the feature layers are trimmed coordinate by coordinate, so that colluders who push the same way
are cut however long their push.

Why. dfl_guard and dfl_shield set their radii from what they receive (the median distance, the
median update norm), and test received models against statistics of the received models (the
median probe rise). A white-box attacker sits just inside those bounds: gate_edge and
shield_edge push the feature layers against the honest mean by as much as the radius allows.
On label-skewed shards the honest updates point in different directions, so their mean is much
shorter than any one of them, and three pushes in one direction outweigh it. Two things a
receiver has are out of an attacker's reach: its own update (it trained it) and its own
validation split (no sender sees it). dfl_sentinel takes its bound from the first (the second
is an option, for the reason in 3), and counts coherence rather than length in the feature
layers:

1. own-norm bound: u_i = m_i - b for each received model (b the node's round-start model,
   `AggregationInput.base`), u_0 = w - b its own update. An update longer than `gate` x ||u_0||
   counts for nothing this round; the others are clipped to `clip` x ||u_0|| (norm bounding as
   in Sun et al., "Can You Really Backdoor Federated Learning?", arXiv 1911.07963, with the
   node's own update as the scale: nothing a sender publishes can widen it);
2. dfl_guard's reversal test (`head_skew`) against sign flips of the classifier;
3. optional marginal validation test (`tolerance` < inf; needs `inp.probe`, the node's
   validation loss): A is the aggregate (5) of the models that passed 1-2, with reputation
   weights R_i for those at least `floor`. For each of them its marginal effect e_i is L(A) -
   L(A without it and without every model whose update has cosine above `similar` with its
   own, so that near-copies cannot hide behind each other); for a model below the floor,
   L(A with it at weight `floor`) - L(A). Every candidate is measured with A's output layer,
   so only the feature layers' contribution is compared. Its quality this round is q_i = 1 -
   max(e_i, 0) / `tolerance`, clipped to [0, 1]. The threshold is no statistic of the received
   models (the idea of Zeno, Xie, Koyejo, Gupta, ICML 2019, and FLTrust, Cao et al., NDSS
   2021, with the node's own split as root data). It is off by default: a node's split holds
   only its own labels, and on 2-labels-per-node shards a push against the honest mean often
   costs a receiver less on its own labels (it unlearns the classes the receiver lacks) than an
   honest peer with other labels does, so the test did not separate them;
4. a reputation that recovers: R <- (1 - beta) R + beta q_i (q_i = 1 without the validation
   test, 0 for a model that failed 1-2); senders whose R is below `floor` get weight 0;
5. the output layer of w' is the weighted mean (own_weight w + sum_i R_i q_i (b + clip(u_i)))
   / (own_weight + sum_i R_i q_i), where an honest peer's other labels live and which the
   reversal test guards; the feature layers of w' are the coordinate-wise trimmed mean of the
   own model and every clipped model that passed 1-2 (whatever its weight, so that no test
   can hand colluders the majority of that set): with n of them and f = floor(`trim` n), each
   is first replaced by the mean of its n - f nearest (`mix`; nearest-neighbour mixing,
   Allouah et al., "Fixing by Mixing", AISTATS 2023), then the f largest and smallest values
   of each coordinate are left out (Yin et al., "Byzantine-Robust Distributed Learning",
   ICML 2018). Trimming alone has a bias of about half an honest standard deviation per
   coordinate towards colluders who all sit at one end, and on label-skewed shards the honest
   spread is wider than the honest mean, so that bias outweighs the progress; mixing first
   shrinks the honest spread (honest models far from the colluders average among themselves)
   and with it the bias. Colluders who push every coordinate one way, farther than honest
   models lie from each other, are left out of the honest mixes and cut. What they can still
   do is sit as close to the honest models as these are to each other and shift every
   coordinate inside the honest spread (ALIE; `dfl_ray.attacks.SentinelEdge`);
6. when `noise` > 0, Gaussian noise of standard deviation `noise` x ||u_0|| / sqrt(d) on every
   coordinate (weak differential privacy against backdoors, Sun et al.).

Cost: a (k + 1) x (k + 1) Gram matrix, the mixing and a partition of the k + 1 candidates'
feature layers per aggregation; with the validation test, one validation pass and one
aggregation per received model more.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from dfl_ray.defense.aggregate import distances_to, weighted_sum
from dfl_ray.defense.base import AggregationInput, AggregationResult, check_number
from dfl_ray.defense.guard import passes_reversal


def check_dfl_sentinel_params(*, clip: float = 2.0, gate: float = 6.0, tolerance: float = math.inf,
                              reversal: float = 0.0, beta: float = 0.3,
                              initial: float = 1.0, floor: float = 0.3, own_weight: float = 1.0,
                              noise: float = 0.0, trim: float = 0.3,
                              similar: float = 0.9, mix: float = 1.0) -> None:
    """Raise ValueError naming a parameter outside its range."""
    check_number("clip", clip, 0.0, low_open=True, allow_inf=True)
    check_number("gate", gate, 0.0, low_open=True, allow_inf=True)
    check_number("tolerance", tolerance, 0.0, allow_inf=True)
    check_number("reversal", reversal, 0.0, 1.0)
    check_number("beta", beta, 0.0, 1.0, low_open=True)
    check_number("initial", initial, 0.0, 1.0)
    check_number("floor", floor, 0.0, 1.0)
    check_number("own_weight", own_weight, 0.0, low_open=True)
    check_number("noise", noise, 0.0)
    check_number("trim", trim, 0.0, 0.49)
    check_number("similar", similar, -1.0, 1.0)
    if mix not in (0, 1):
        raise ValueError(f"parameter mix must be 0 (off) or 1 (on), got {mix!r}")


def dfl_sentinel(inp: AggregationInput, *, clip: float = 2.0, gate: float = 6.0,
                 tolerance: float = math.inf, reversal: float = 0.0, beta: float = 0.3,
                 initial: float = 1.0, floor: float = 0.3,
                 own_weight: float = 1.0, noise: float = 0.0,
                 trim: float = 0.3, similar: float = 0.9,
                 mix: float = 1.0) -> AggregationResult:
    """Bound received updates by the own update's norm, average the output layer with
    reputations, trim the feature layers, and optionally weigh senders by whether including them
    raises the node's validation loss (needs `inp.base`; the validation test needs `inp.probe`
    and is skipped without it).

    clip: clip each received update to clip x ||own update||.
    gate: an update longer than gate x ||own update|| counts for nothing this round.
    tolerance: a model whose inclusion raises the aggregate's validation loss by this much
        (nats) or more counts for nothing this round, one that raises it by less is weighed
        down in proportion (math.inf, the default, turns the test off).
    reversal: dfl_guard's output-layer reversal test (1 turns it off).
    beta: R <- (1 - beta) R + beta q, q in [0, 1] the model's quality this round.
    initial, floor, own_weight: reputation and weights as in dfl_guard.
    noise: standard deviation of the Gaussian noise added to the result, in units of
        ||own update|| / sqrt(d) (0: none); drawn with a seed from the own model.
    trim: share of the own and accepted models cut from each end of every feature-layer
        coordinate (0: the weighted mean on every coordinate).
    similar: the validation test leaves a model out together with every model whose update has
        cosine above this with its own (1: alone).
    mix: 1 replaces each of the n trimmed models by the mean of its n - floor(trim n) nearest
        before trimming (nearest-neighbour mixing); 0 trims them as they are.
    """
    check_dfl_sentinel_params(clip=clip, gate=gate, tolerance=tolerance, reversal=reversal,
                              beta=beta, initial=initial, floor=floor,
                              own_weight=own_weight, noise=noise, trim=trim,
                              similar=similar, mix=mix)
    if inp.base is None:
        raise ValueError("dfl_sentinel needs AggregationInput.base (the round-start model)")
    own, base, k = inp.own, inp.base, inp.k
    norms = distances_to(inp.rows, base)
    own_norm = float(np.linalg.norm(own.astype(np.float64) - base))
    passed = norms <= gate * own_norm if np.isfinite(gate) else np.ones(k, dtype=bool)
    if inp.start_head is not None and reversal < 1.0:
        passed &= passes_reversal(inp, reversal, passed)
    radius = float(clip) * own_norm
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = np.where(norms > radius, radius / norms, 1.0) if np.isfinite(radius) else np.ones(k)
    pull = np.where(np.isfinite(pull), pull, 0.0)

    prior = inp.get_reputations(float(initial))
    trusted = passed & (prior >= floor)
    quality = passed.astype(np.float64)
    if inp.probe is not None and np.isfinite(tolerance) and passed.any():
        effects = marginal_effects(inp, pull, np.where(trusted, prior, 0.0), passed,
                                   floor=float(floor), own_weight=float(own_weight),
                                   trim=float(trim), similar=float(similar), mix=bool(mix))
        # A loss that is not finite (a candidate whose outputs overflow) counts as a failure.
        with np.errstate(invalid="ignore"):
            quality = np.where(passed & np.isfinite(effects),
                               np.clip(1.0 - np.maximum(effects, 0.0) / float(tolerance),
                                       0.0, 1.0), 0.0)
    reputation = (1.0 - beta) * prior + beta * quality
    weights = np.where(reputation >= floor, reputation * quality, 0.0)
    # The feature layers are trimmed over every model that passed the norm and reversal tests,
    # whatever the validation test made of it: on label-skewed shards a push against the honest
    # mean can lower a receiver's loss on its own labels, and a membership chosen by that loss
    # could hand colluders the majority of the trimmed set.
    model = aggregate(inp, pull, weights, float(own_weight), float(trim), members=passed,
                      mix=bool(mix))
    if noise > 0.0 and own_norm > 0.0:
        seed = int.from_bytes(hashlib.blake2b(own[:4096].tobytes(), digest_size=8).digest(),
                              "little")
        scale = float(noise) * own_norm / np.sqrt(own.shape[0])
        model += (np.random.default_rng(seed).standard_normal(own.shape[0])
                  * scale).astype(np.float32)
    shares = weights / (float(own_weight) + float(weights.sum()))
    reputations = dict(inp.reputations)
    reputations.update(zip(inp.senders, reputation.tolist(), strict=True))
    return AggregationResult(model, reputations, shares)


def aggregate(inp: AggregationInput, pull: np.ndarray, weights: np.ndarray, own_weight: float,
              trim: float, members: np.ndarray | None = None, mix: bool = True) -> np.ndarray:
    """float32 [d]: the weighted mean of the own model (weight `own_weight`) and the clipped
    models b + pull_i (m_i - b) (weights `weights`); with `trim` > 0 its coordinates outside the
    output layer are the coordinate-wise trimmed mean of the own model and the clipped models of
    `members` (bool [k]; None: those of positive weight) instead: with n of them, the
    floor(trim n) largest and smallest values of each coordinate are left out, after each of
    the n is replaced by the mean of its n - floor(trim n) nearest (`nearest_neighbour_mix`)
    when `mix`."""
    assert inp.base is not None
    model = _mix(inp, pull, weights, own_weight)
    members = np.flatnonzero(weights > 0.0 if members is None else members)
    n = len(members) + 1
    cut = int(np.floor(trim * n))
    if cut == 0:
        return model
    # The output layer is the model's trailing tensors (every model in the registry); a head
    # elsewhere leaves the coordinates before it to be trimmed.
    body = slice(0, inp.own.shape[0] if inp.head is None else inp.head.start)
    b = inp.base[body]
    stack = np.empty((n, b.shape[0]), dtype=np.float32)
    stack[0] = inp.own[body]
    for row, i in zip(stack[1:], members, strict=True):
        np.subtract(inp.rows[i][body], b, out=row)
        row *= np.float32(pull[i])
        row += b
    if mix:
        stack = nearest_neighbour_mix(stack, b, n - cut)
    middle = np.partition(stack, (cut, n - cut - 1), axis=0)[cut:n - cut]
    model[body] = middle.mean(axis=0, dtype=np.float64).astype(np.float32)
    return model


def nearest_neighbour_mix(stack: np.ndarray, base: np.ndarray, keep: int) -> np.ndarray:
    """float32 [n, L]: each row of `stack` replaced by the mean of its `keep` nearest rows
    (itself included; Euclidean, ties to the lower index), the nearest-neighbour mixing of
    Allouah et al., "Fixing by Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity",
    AISTATS 2023. Distances are taken on the rows minus `base`, where float32 keeps them exact
    enough."""
    n = stack.shape[0]
    updates = (stack - base).astype(np.float64)
    gram = updates @ updates.T
    sq = np.diag(gram)
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    out = np.empty_like(stack)
    for i in range(n):
        nearest = np.argsort(dist[i], kind="stable")[:keep]
        out[i] = stack[nearest].mean(axis=0, dtype=np.float64).astype(np.float32)
    return out


def _mix(inp: AggregationInput, pull: np.ndarray, weights: np.ndarray,
         own_weight: float) -> np.ndarray:
    """float32 [d]: (own_weight w + sum_i weights_i (b + pull_i (m_i - b))) / (own_weight +
    sum_i weights_i), as one weighted sum of the rows, the own model and the base."""
    assert inp.base is not None
    shares = weights / (own_weight + float(weights.sum()))
    coeffs = shares * pull
    return weighted_sum((*inp.rows, inp.own, inp.base),
                        np.concatenate([coeffs, [1.0 - float(shares.sum()),
                                                 float((shares - coeffs).sum())]]))


def similar_groups(inp: AggregationInput, similar: float) -> np.ndarray:
    """bool [k, k]: whether the updates m_i - b and m_j - b have cosine above `similar` (True on
    the diagonal). A zero update is similar to nothing but itself."""
    assert inp.base is not None
    k = inp.k
    gram = np.empty((k, k))
    base = inp.base.astype(np.float64)
    updates = [row.astype(np.float64) - base for row in inp.rows]
    for i in range(k):
        for j in range(i, k):
            gram[i, j] = gram[j, i] = float(updates[i] @ updates[j])
    lengths = np.sqrt(np.diag(gram))
    with np.errstate(divide="ignore", invalid="ignore"):
        cosines = np.where(np.outer(lengths, lengths) > 0.0,
                           gram / np.outer(lengths, lengths), 0.0)
    return (cosines > similar) | np.eye(k, dtype=bool)


def marginal_effects(inp: AggregationInput, pull: np.ndarray, weights: np.ndarray,
                     which: np.ndarray, *, floor: float, own_weight: float, trim: float = 0.0,
                     similar: float = 1.0, mix: bool = False) -> np.ndarray:
    """float64 [k]: for each model i with `which[i]`, how much its inclusion raises the
    validation loss (`inp.probe`) of the aggregate (`aggregate` with `weights`, `trim`, the
    feature layers trimmed over the models of `which`); NaN for the others.

    A model with weight > 0 is measured as L(A) - L(A without it and without every model of
    positive weight whose update has cosine above `similar` with its own), so that colluders who
    publish nearly the same update cannot hide behind each other (1: the model alone); one with
    weight 0 as L(A with it at weight max(floor, 0.05)) - L(A). Every candidate gets A's output
    layer (`inp.head`), so only the feature layers' contribution is compared.
    """
    if inp.probe is None or inp.base is None:
        raise ValueError("marginal_effects needs AggregationInput.probe and base")
    head = inp.head
    groups = similar_groups(inp, similar) if similar < 1.0 else np.eye(inp.k, dtype=bool)
    reference = aggregate(inp, pull, weights, own_weight, trim, members=which, mix=mix)
    start = float(inp.probe(reference))
    effects = np.full(inp.k, np.nan)
    for i in np.flatnonzero(which):
        toggled, members = weights.copy(), which.copy()
        if weights[i] > 0.0:
            toggled[groups[i]] = 0.0
            members[groups[i]] = False
        else:
            toggled[i] = max(floor, 0.05)
        candidate = aggregate(inp, pull, toggled, own_weight, trim, members=members, mix=mix)
        if head is not None:
            candidate[head] = reference[head]
        loss = float(inp.probe(candidate))
        effects[i] = start - loss if weights[i] > 0.0 else loss - start
    return effects
