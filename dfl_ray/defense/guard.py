"""dfl_guard: distance gating around the own model, clipped trust-weighted averaging, recovering reputation.

Why this shape. The original DFL reputation (Tian et al., arXiv 2110.15457) failed on non-IID data
for two reasons: every aggregation penalised someone, so honest reputations drained to 0 and the
rule fell back to a plain mean that let attackers in; and absolute scores punish honest peers whose
label mix differs from the receiver's. Under label skew an honest peer's model can score below a
constant-class garbage model on a receiver's validation data, so scores cannot decide membership.
Geometry can: all honest nodes leave each round's aggregation close together, so an honest model
lies within a few update norms of the receiver's own model, whereas a random, noisy or boosted
model lies tens of update norms away. (The measurements behind these choices are in
docs/results.md, "Figures formerly in defense docstrings".)

1. distance gating: d_i = ||m_i - w|| for each received m_i and the own model w; with D the median
   of {0 (the own model), d_1..d_k}, reject m_i when d_i > gate * D. Counting the own model's zero
   keeps D honest while attackers are fewer than half of the buffer (Blanchard et al., "Machine
   Learning with Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017, use the same
   distance-to-majority idea);
2. centered clipping: each accepted model is pulled to within clip * D of w (Karimireddy, He,
   Jaggi, "Learning from History for Byzantine Robust Optimization", ICML 2021), so no single
   accepted model can move the result far; honest models of nodes with large shards are left whole
   because clip is well above the median distance. With `split`, steps 1 and 2 read the output
   layer and the rest of the model apart, each against its own median, so that the output
   layer's honest spread does not widen the feature layers' radius (off by default);
3. opposition (optional, off by default): with the round-start model b
   (`AggregationInput.base`), u_i = m_i - b is the update a sender proposes and u = w - b my own.
   A sign-flipped update lies at an ordinary distance, so gating cannot see it, but it points
   against the updates of honest nodes that hold the same labels. With `oppose` < 1, a model
   whose update has cosine below -oppose with my own update counts for nothing this round.
   On Dirichlet(0.1) shards that separates sign-flippers from honest senders; on shards with
   two labels per node honest updates oppose each other almost as much, and the test splits
   the honest nodes apart, which is why it is off by default. Receivers that hold none of a
   sign-flipper's labels cannot see it this way at all. The cosine is taken on `coords`
   coordinates drawn afresh each aggregation (a seed from the own model, which no sender knows
   before it publishes), so it stays cheap;
4. reversal (on by default): a sign-flipped update also reverses the output layer's bias
   update, and that one has a sign a receiver can read without holding the sender's labels.
   Softmax cross-entropy moves the bias of class c by the mean of y_c - p_c, which sums to
   zero over the classes, so training on a node's shard raises the bias of the classes it
   holds by much and lowers every other class by little: on the head coordinates
   (`AggregationInput.head`, one per class) the update m_i - b has skew
   (max + min) / (max - min) above 0 when its data held a few classes, and a reversed update
   the mirror image, below 0. A model whose skew is below -`reversal` counts for nothing this
   round. On IID shards the skew is noise: there the test drops some honest models at random,
   which IID data can afford, and still removes most flipped ones. The output weights' rows
   move the same way as the bias (their row sums over ReLU features follow its pattern), so
   with `AggregationInput.head_classes` the head is the whole output layer and the lower of the
   two skews counts: an attacker who leaves the bias unflipped and flips the rest is still
   seen. The skew is read from the own round start; only when that would reject most of the
   models the other tests kept (the node's own head has drifted) is the median of their heads
   read as well (`passes_reversal`). The round start is read, class by class, as the lower of
   it and the median of the round start and the heads (`lower`, on by default), so that the
   node's own drift towards its classes is not read against its peers. It reads and keeps the
   output layer (5,010 values for LeNet)
   per model and node. An attacker who leaves the whole output layer unflipped passes it: the
   test answers sign flips of the classifier, not an attacker who poisons the feature layers
   alone;
5. balance (on by default): the same law fixes the class-sum of the output bias. Each
   training step moves the biases by a vector that sums to zero, averaging keeps a sum its
   inputs share, and weight decay only shrinks it, so every honest model's output biases add
   up to about what the genesis model's did, and two honest models' biases differ by a
   vector that sums to about zero. A model whose output-bias difference from the own model
   has |sum| / sum of |entries| above `balance` raised or lowered every class at once, which
   no training does, and counts for nothing this round. ALIE (the honest mean plus tau
   coordinate-wise standard deviations, all of them positive) does exactly that: ByzFL's ALIE
   passed every other test here and drove honest nodes to 0.10 (docs/results.md, "Attack
   matrix"). An attacker who knows the test keeps its bias sum: the test answers one law of
   the classifier, not an attacker who poisons the feature layers alone;
6. sign (on by default): a received model m differs from the own model w, an honest model,
   about as often upwards as downwards on every large tensor: two honest models are two
   draws around one consensus, so on a tensor's n coordinates the share above and the share
   below differ by about 1/sqrt(n) plus what their label mixes make of it (docs/results.md,
   "Sign test"). ALIE (the honest mean plus tau standard deviations on every coordinate) lies
   above any honest model on nearly all of them. A model whose (above - below) / (above +
   below) exceeds `sign` in absolute value, over the whole model or on any tensor of at least
   `SIGN_MIN_TENSOR` coordinates, counts for nothing this round. The reference is the own
   model, which no sender moves; a coordinate-wise median would not do, as colluders on one
   side shift it and honest models then read as skewed the other way. An attacker who knows
   the test shifts at most (1 + sign) / 2 of the coordinates one way, and may concentrate on
   the small tensors (LeNet's first convolution, the biases and the output layer), which the
   distance gate bounds;
7. probe (on by default, needs the node's validation loss): every test above reads what
   senders publish, so an attacker who knows them sits just inside all of them (`gate_edge`
   pushes the feature layers against the honest mean from inside the gate). The node's
   validation split is what no sender sees: the own model is moved `probe_step` of the way
   towards each clipped model on every coordinate but the output layer (where an honest peer's
   other labels live), and a model whose loss rise exceeds `probe` x the median rise of the
   models still accepted plus `probe_slack` counts for nothing this round (Zeno, Xie, Koyejo,
   Gupta, ICML 2019, with the own split as the root data). Read over every class, a peer with
   other labels raises the loss on the own ones too, and the test left out honest models on
   label-skewed shards; nodes running dfl_guard therefore read the loss over the logits of
   their own classes only (`defense.probe_classes`), where that cost went (docs/results.md,
   "Validation probe over the own classes"). With `forgive` a sender whose reputation is still
   high keeps its weight in a round it fails the probe alone, and pays in reputation;
8. a reputation that recovers: R <- (1 - beta) R + beta q (an exponential moving average),
   with q = 1 for a model that passed the distance, opposition, reversal, balance, sign and
   probe tests (and, when `margin` < 1, scores at least s_med - margin, s_med the median
   score of the accepted received models), q = 0 otherwise (with `probe_scale`, a model
   that passes observes less than 1 in proportion to its probe rise above the median).
   Nobody is penalised for merely being the lowest of a good lot, one bad round is
   forgotten, and a sender that keeps failing sinks below `floor` over rounds. The score
   test is off by default: under label skew honest peers' scores on my data spread over
   most of [0, 1], and on Dirichlet(0.1) shards the test cost final accuracy;
9. kin (on by default): models that deviate from the coordinate-wise median of the own and
   received models in the same direction (cosine above `kin`) share one voice (`kin_counts`),
   so colluders who publish one model, or copy one honest node's (mimic, Karimireddy et al.),
   weigh as one sender, not three. It is Sybil-resistance in the spirit of FoolsGold (Fung et
   al., "The Limitations of Federated Learning in Sybil Settings", RAID 2020), read on one
   round's models; colluders who know it spread their models apart (`kin_edge`) and keep part
   of their weight;
10. w' = (own_weight * w + sum R_i clip(m_i)) / (own_weight + sum R_i) over the models that
    pass this round and whose reputation is at least `floor` (trust-weighted averaging as in
    FLTrust, Cao et al., NDSS 2021, with the trust earned over rounds instead of from a root
    data set), each weight (the own one too) divided by the voices its model shares. Each
    received output layer enters scaled towards the own one until no class reading of the
    difference exceeds `head_clip` x the largest of the own update this round (on by
    default): an output layer written to pass the reversal test (`reversal_edge`) then
    carries no larger class boost than `head_clip` times what the node's own round moved.

With no attacker in the buffer this is close to a plain average of the own and received models,
which is what makes it as accurate as FedAvg on non-IID shards.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from dfl_ray.defense.aggregate import distances_to, weighted_sum
from dfl_ray.defense.base import AggregationInput, AggregationResult, check_number


def check_dfl_guard_params(*, gate: float = 3.0, clip: float = 2.0, beta: float = 0.3,
                           margin: float = 1.0, initial: float = 1.0, floor: float = 0.3,
                           own_weight: float = 1.0, oppose: float = 1.0,
                           coords: int = 32768, reversal: float = 0.0,
                           balance: float = 0.5, kin: float = 0.5, sign: float = 0.4,
                           probe: float = 2.0, probe_step: float = 0.5,
                           probe_slack: float = 0.05, penalty: float | None = None,
                           entry: float = 0.0, forgive: float = math.inf,
                           probe_scale: float = math.inf,
                           reversal_drop: float | None = None,
                           reversal_cost: float = 1.0, split: float = 0.0,
                           lower: float = 1.0, probe_head: float = 0.0,
                           head_clip: float = 3.0) -> None:
    """Raise ValueError naming a parameter outside its range."""
    check_number("entry", entry, 0.0, 1.0)
    check_number("head_clip", head_clip, 0.0, low_open=True, allow_inf=True)
    check_number("probe_scale", probe_scale, 0.0, low_open=True, allow_inf=True)
    check_number("forgive", forgive, 0.0, allow_inf=True)
    if penalty is not None:
        check_number("penalty", penalty, 0.0, 1.0)
    check_number("probe", probe, 0.0, allow_inf=True)
    check_number("probe_step", probe_step, 0.0, 1.0, low_open=True)
    check_number("probe_slack", probe_slack, 0.0)
    check_number("gate", gate, 0.0, allow_inf=True)
    check_number("clip", clip, 0.0, allow_inf=True)
    check_number("beta", beta, 0.0, 1.0, low_open=True)
    check_number("margin", margin, 0.0, low_open=True)
    check_number("initial", initial, 0.0, 1.0)
    check_number("floor", floor, 0.0, 1.0)
    check_number("own_weight", own_weight, 0.0, low_open=True)
    check_number("oppose", oppose, 0.0, 1.0)
    check_number("reversal", reversal, 0.0, 1.0)
    if reversal_drop is not None:
        check_number("reversal_drop", reversal_drop, float(reversal), 1.0)
    check_number("reversal_cost", reversal_cost, 0.0, 1.0)
    for name, flag in (("split", split), ("lower", lower), ("probe_head", probe_head)):
        if flag not in (0, 1):
            raise ValueError(f"parameter {name} must be 0 or 1, got {flag!r}")
    check_number("balance", balance, 0.0, 1.0)
    check_number("kin", kin, 0.0, 1.0)
    check_number("sign", sign, 0.0, 1.0)
    if isinstance(coords, bool) or not isinstance(coords, int | float) or coords != int(coords) \
            or coords < 0:
        raise ValueError(f"coords must be a whole number >= 0 (0: all coordinates), got {coords!r}")


def dfl_guard(inp: AggregationInput, *, gate: float = 3.0, clip: float = 2.0, beta: float = 0.3,
              margin: float = 1.0, initial: float = 1.0, floor: float = 0.3,
              own_weight: float = 1.0, oppose: float = 1.0,
              coords: int = 32768, reversal: float = 0.0,
              balance: float = 0.5, kin: float = 0.5, sign: float = 0.4,
              probe: float = 2.0, probe_step: float = 0.5,
              probe_slack: float = 0.05, penalty: float | None = None,
              entry: float = 0.0, forgive: float = math.inf,
              probe_scale: float = math.inf,
              reversal_drop: float | None = None,
              reversal_cost: float = 1.0, split: float = 0.0,
              lower: float = 1.0, probe_head: float = 0.0,
              head_clip: float = 3.0) -> AggregationResult:
    """Gate by distance to the own model, clip, and average with recovering reputations.

    gate: reject a received model farther than gate * D from the own model (D = median distance of
        own (0) and received models); math.inf disables gating.
    clip: pull accepted models to within clip * D of the own model; math.inf disables clipping.
    beta: reputation learning rate in (0, 1]; a single bad round costs beta of the reputation and
        each good round after it recovers the factor (1 - beta) of the loss.
    margin: a model scoring more than `margin` below the round's median score observes q = 0
        (1, the default, turns the score test off: accuracies lie in [0, 1]).
    initial: reputation of a sender seen for the first time.
    floor: accepted models whose updated reputation is below it get weight 0.
    own_weight: weight of the own model (a fully trusted peer has weight 1).
    oppose: a model whose update has cosine below -oppose with the own update counts for nothing
        this round (needs `inp.base`; 1, the default, turns the test off).
    coords: coordinates sampled for that cosine (0: all of them).
    reversal: a model whose output-bias update has head skew below -reversal (see
        `passes_reversal`) counts for nothing this round (needs `inp.head` and `inp.head_base`
        or `inp.base`, skipped without them; 1 turns the test off).
    reversal_drop: with it set (at least `reversal`), a model whose skew is below -reversal
        but not below -reversal_drop keeps its weight this round and observes q = 0: a sender
        whose updates read as reversed round after round sinks below `floor`, while one whose
        skew is near zero and falls below now and then (an honest sender holding several
        classes) loses some reputation instead of its whole weight (None, the default: the
        same as `reversal`, one level).
    reversal_cost: the share of a failed round's reputation cost that a sender pays when the
        reversal test is the only test before the probe its model fails: it observes q =
        (1 - reversal_cost) R instead of 0 (1, the default: the full cost; 0: its reputation
        stays as it was). The model counts for nothing this round either way. With a high
        `floor`, honest senders whose skew dips below zero now and then sank under the floor
        through this test alone (docs/results.md, "Reputation floors traced"); with 0 the
        floor reads the other tests and the probe only.
    lower: 1, the default, reads the reversal test, on each class, against the lower of the
        round start and the median of the round start and the pool's heads (see
        `reversal_readings`), so that the node's own drift towards its classes is not read as
        its peers' reversal (0: the round start).
    split: 1 gates and clips the output layer (`inp.head`) and the rest of the model apart,
        each part against the median of its own distances (0, the default: the whole model
        against one median; without `inp.head`, the whole model either way). The output layer
        carries much of what tells honest models of other labels apart; read together, that
        spread also sets the radius of the feature layers, where an attacker who keeps its
        output layer as trained spends all of it.
    balance: a model whose output-bias difference from the own model has |sum| / sum of
        |entries| above it (see `head_imbalance`) counts for nothing this round (needs
        `inp.head`, skipped without it; 1 turns the test off).
    kin: models (the own one among them) whose deviations from the coordinate-wise median
        have cosine above `kin` count as one voice between them (see `kin_counts`); 1 turns
        it off.
    sign: a model whose difference from the own model is positive on a share p and negative
        on a share q of the coordinates, with |p - q| / (p + q) above `sign` over the whole
        model or on a tensor of at least `SIGN_MIN_TENSOR` coordinates (see `sign_skews`;
        needs `inp.tensors` for the per-tensor reading), counts for nothing this round; 1
        turns the test off.
    probe, probe_step, probe_slack: the validation probe (`probe_rises`, centred on the own
        model): a model whose clipped version, taken `probe_step` of the way on every
        coordinate but the output layer, raises the node's validation loss by more than
        `probe` x the median rise of the models still accepted (floored at 0) + `probe_slack`
        counts for nothing this round (needs `inp.probe`, skipped without it; math.inf turns
        it off).
    head_clip: with it finite, each received output layer's difference from the own one is
        scaled down, whole, until no class reading of it (the bias and, with
        `inp.head_classes`, the weight row's sum, each less its mean over the classes) exceeds
        `head_clip` x the largest class reading of the node's own update this round (see
        `head_factors`): without attack an honest peer's output layer stays inside it, an
        output layer that boosts one class (`reversal_edge`) does not, and the bound is the
        node's own, not set by what it receives. Honest models an attack has split apart are
        scaled too (docs/results.md, "Output-layer bound (head_clip=3) over the suite"). 3 by
        default; math.inf turns it off; skipped without `inp.head` and a round start.
    probe_head: 1 moves the output layer too when probing (0, the default: every coordinate
        but the output layer). Read over the node's own classes (`defense.probe_classes`
        "own"), an honest peer's other labels leave the own classes' logits nearly as they
        were, while an output layer that lowers one of the node's classes against another
        (`reversal_edge`, which passes the reversal test) raises the loss.
    forgive: a sender whose reputation before the round is at least `forgive` keeps its weight
        in a round in which it fails the probe alone (math.inf, the default: never). The failure
        still costs it reputation, so an honest sender's rare failure is forgiven while one
        that fails often sinks below `forgive` and then counts for nothing whenever it fails.
    penalty: share of its reputation a sender loses in a round it fails: R <- (1 - penalty) R
        (None, the default: beta, the moving average above). A larger penalty keeps a sender
        that fails now and then below the floor, while a sender that never fails loses nothing.
    entry: the reputation from the rounds before this one that a sender needs to get weight
        (0, the default: none). A pass lifts any reputation to at least beta, so without it a
        sender that fails every other round is weighted every time it passes.
    probe_scale: with it finite, a model that passes the probe observes q = 1 - e /
        probe_scale (clipped to [0, 1]) instead of 1, e its rise above the typical one (the
        median, floored at 0), so a sender whose models keep raising the node's loss a little
        more than its peers' sinks in reputation over rounds, while one unlucky round costs an
        honest sender little (math.inf, the default: off).
    """
    check_dfl_guard_params(gate=gate, clip=clip, beta=beta, margin=margin, initial=initial,
                           floor=floor, own_weight=own_weight, oppose=oppose, coords=coords,
                           reversal=reversal, balance=balance, kin=kin, sign=sign, probe=probe,
                           probe_step=probe_step, probe_slack=probe_slack, penalty=penalty,
                           entry=entry, forgive=forgive, probe_scale=probe_scale,
                           reversal_drop=reversal_drop, reversal_cost=reversal_cost,
                           split=split, lower=lower, probe_head=probe_head,
                           head_clip=head_clip)
    own, k = inp.own, inp.k
    dist = distances_to(inp.rows, own)
    # Distances gated and clipped: the whole model's, or (split) all but the output layer's,
    # then the output layer's.
    parts = [dist]
    if inp.head is not None:
        head_dist = distances_to([row[inp.head] for row in inp.rows], own[inp.head])
        if split:
            parts = [np.sqrt(np.maximum(dist ** 2 - head_dist ** 2, 0.0)), head_dist]
    spreads = [float(np.median(np.append(d, 0.0))) for d in parts]
    accepted = np.ones(k, dtype=bool)
    if np.isfinite(gate):
        for d, spread in zip(parts, spreads, strict=True):
            accepted &= d <= gate * spread

    prior = inp.get_reputations(float(initial))
    # The own score is left out of the reference: under label skew the own model, trained on the
    # very data it is scored on, scores far above every honest peer.
    reference = float(np.median(inp.scores[accepted])) if accepted.any() else inp.own_score
    # Each test's own verdict (1 pass, 0 fail), for the aggregation trace.
    details = {"distance": dist.astype(np.float64), "gate": accepted.astype(np.float64)}
    if inp.head is not None:
        details["head_distance"] = head_dist

    def test(name: str, passed: np.ndarray) -> None:
        accepted[:] &= passed
        details[name] = passed.astype(np.float64)

    if inp.base is not None and oppose < 1.0:
        test("opposition", own_update_cosines(inp, int(coords)) >= -oppose)
    balanced = head_imbalance(inp) <= balance if inp.head is not None and balance < 1.0 else None
    signed = sign_skews(inp) <= sign if sign < 1.0 else None
    marked = np.zeros(k, dtype=bool)  # failed the reversal test but kept this round's weight
    if inp.start_head is not None and reversal < 1.0:
        # The pool whose failures decide the median reading is what every other test kept: a
        # model that passes this test but fails another (ALIE fails the balance test) must not
        # outvote the honest failures that call for it.
        pool = accepted.copy()
        for verdict in (balanced, signed):
            if verdict is not None:
                pool &= verdict
        skews = reversal_readings(inp, reversal, pool, lower=bool(lower))
        details["reversal_skew"] = skews
        drop = reversal if reversal_drop is None else float(reversal_drop)
        marked = (skews < -reversal) & (skews >= -drop)
        reversed_ = skews < -drop
        details["reversal"] = (~reversed_).astype(np.float64)
    else:
        reversed_ = np.zeros(k, dtype=bool)
    if balanced is not None:
        test("balance", balanced)
    if signed is not None:
        test("sign", signed)
    # Folded in after the other tests, so the models that fail the reversal test alone are known.
    reversed_only = accepted & reversed_
    accepted &= ~reversed_
    # One pull per part: the first (the whole model, or all but the output layer) is the one
    # the probe reads.
    pulls = []
    for d, spread in zip(parts, spreads, strict=True):
        radius = float(clip) * spread
        with np.errstate(divide="ignore", invalid="ignore"):
            pulls.append(np.where(d > radius, radius / d, 1.0) if np.isfinite(radius)
                         else np.ones(k))
    pull = pulls[0]
    weighed = accepted  # what may get weight this round
    grade = np.ones(k)
    details["radius"] = np.full(k, float(clip) * spreads[0])
    details["tests_passed"] = accepted.astype(np.float64)
    if inp.probe is not None and np.isfinite(probe) and accepted.any():
        probed, rises, typical = probe_verdict(inp, pull, accepted, ratio=probe, step=probe_step,
                                               slack=probe_slack, centre=own,
                                               head=bool(probe_head))
        details["probe_rise"] = rises
        details["probe_typical"] = np.full(k, typical)
        details["probe_limit"] = np.full(k, probe_limit(typical, probe, probe_slack))
        weighed = probed | (accepted & (prior >= forgive))
        accepted = probed
        if np.isfinite(probe_scale):
            excess = np.nan_to_num(rises - typical, nan=np.inf)
            grade = np.clip(1.0 - excess / float(probe_scale), 0.0, 1.0)
    observed = (accepted & ~marked & (inp.scores >= reference - margin)) * grade
    observed = np.where(reversed_only, (1.0 - float(reversal_cost)) * prior, observed)
    reputation, weights = reputation_step(prior, observed, weighed, beta=beta, floor=floor,
                                          penalty=penalty, entry=entry)
    own_share = float(own_weight)
    if kin < 1.0:
        counts = kin_counts(inp, kin, weights > 0.0, int(coords))
        details["voices"] = counts[1:]  # how many voices each model shares its own with
        own_share /= counts[0]
        weights = weights / counts[1:]

    total = own_share + float(weights.sum())
    shares = weights / total
    # A clipped model is w + p_i (m_i - w) = p_i m_i + (1 - p_i) w: mix rows and the own model.
    coeffs = shares * pull
    model = weighted_sum((*inp.rows, own), np.append(coeffs, 1.0 - coeffs.sum()))
    factors = head_factors(inp, float(head_clip)) if np.isfinite(head_clip) else None
    if factors is not None:
        details["head_factor"] = factors
    if len(pulls) > 1 or factors is not None:  # the output layer again, its own pull and scale
        head = inp.head
        coeffs = shares * pulls[-1] * (1.0 if factors is None else factors)
        model[head] = weighted_sum((*(row[head] for row in inp.rows), own[head]),
                                   np.append(coeffs, 1.0 - coeffs.sum()))

    reputations = dict(inp.reputations)
    reputations.update(zip(inp.senders, reputation.tolist(), strict=True))
    return AggregationResult(model, reputations, shares, details)


def head_factors(inp: AggregationInput, bound: float) -> np.ndarray | None:
    """float64 [k] in (0, 1]: the share of each received output layer's difference from the
    own one that `head_clip` = `bound` keeps: 1, or `bound` x the largest class reading of the
    own update (own model less round start) over the difference's largest class reading,
    both read per class (`class_readings`, each less its mean over the classes), bias and
    row sums apart. None without `inp.head` or a round start, or when the own head did not
    move this round (nothing to tie the bound to)."""
    if inp.head is None or inp.start_head is None:
        return None
    c = inp.head_classes
    heads = _round_heads(inp)
    own = inp.own[inp.head].astype(np.float64)
    limits = head_limits(own - heads[0], bound, c)
    if min(limits) <= 0.0:
        return None
    return np.array([head_factor(head - own, limits, c) for head in heads[1:]])


def head_limits(update: np.ndarray, bound: float, c: int | None) -> list[float]:
    """`bound` x the largest class reading of an output-layer `update`, one limit per
    reading (`class_readings`): what `head_clip` lets a received difference reach."""
    return [bound * class_peak(p) for p in class_readings(update, c)]


def head_factor(difference: np.ndarray, limits: list[float], c: int | None) -> float:
    """The share of an output-layer `difference` that `head_clip` keeps: 1, or the least
    limit / largest class reading over the readings that exceed their `limits`."""
    out = 1.0
    for part, limit in zip(class_readings(difference, c), limits, strict=True):
        peak = class_peak(part)
        if peak > limit:
            out = min(out, limit / peak)
    return out


def passes_probe(inp: AggregationInput, pull: np.ndarray, candidates: np.ndarray, *,
                 ratio: float, step: float, slack: float,
                 centre: np.ndarray | None = None) -> np.ndarray:
    """bool [k]: the `candidates` whose probe rise (`probe_rises`) is at most `ratio` x the
    median rise of the candidates (floored at 0) + `slack`; False for the others."""
    return probe_verdict(inp, pull, candidates, ratio=ratio, step=step, slack=slack,
                         centre=centre)[0]


def probe_verdict(inp: AggregationInput, pull: np.ndarray, candidates: np.ndarray, *,
                  ratio: float, step: float, slack: float, centre: np.ndarray | None = None,
                  head: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """(`passes_probe`'s verdict, the rises (`probe_rises`, NaN off the candidates), their
    median over the candidates floored at 0: the typical rise the limit is a multiple of)."""
    rises = probe_rises(inp, pull, float(step), candidates, centre=centre, head=head)
    typical = max(float(np.median(rises[candidates])), 0.0)
    return candidates & (rises <= probe_limit(typical, ratio, slack)), rises, typical


def probe_limit(typical: float, ratio: float, slack: float) -> float:
    """The largest probe rise a model may have: `ratio` x the typical rise + `slack`."""
    return float(ratio) * typical + float(slack)


def reputation_step(prior: np.ndarray, observed: np.ndarray, weighed: np.ndarray, *,
                    beta: float, floor: float, penalty: float | None,
                    entry: float) -> tuple[np.ndarray, np.ndarray]:
    """(new reputations, weights before kin counts) of dfl_guard's senders: R <- (1 - beta) R +
    beta q, q the `observed` grade (with `penalty`, R <- (1 - penalty) R where q = 0); a model
    that may get weight (`weighed`) gets its new R if R is at least `floor` and the prior R
    at least `entry`, else 0."""
    reputation = (1.0 - beta) * prior + beta * observed
    if penalty is not None:
        reputation = np.where(observed > 0.0, reputation, (1.0 - float(penalty)) * prior)
    weights = np.where(weighed & (reputation >= floor) & (prior >= entry), reputation, 0.0)
    return reputation, weights


def probe_rises(inp: AggregationInput, pull: np.ndarray, step: float,
                which: np.ndarray, centre: np.ndarray | None = None,
                head: bool = False) -> np.ndarray:
    """float64 [k]: for each received model i with `which[i]`, the rise of the node's validation
    loss (`inp.probe`) when the own model w moves `step` of the way towards b + pull_i (m_i - b)
    on every coordinate outside the output layer (`inp.head`), or with `head` on every
    coordinate; NaN for the others. b is the clipping centre: `centre`, or the round start
    `inp.base` without it."""
    base = inp.base if centre is None else centre
    if inp.probe is None or base is None:
        raise ValueError("probe_rises needs AggregationInput.probe and base (or a centre)")
    own = inp.own
    # The output layer is the model's trailing tensors (every model in the registry), so the
    # body is one leading slice; a head elsewhere is left out by a mask.
    d = own.shape[0]
    if inp.head is None or head:
        body: slice | np.ndarray = slice(0, d)
    elif inp.head.stop == d:
        body = slice(0, inp.head.start)
    else:
        body = np.ones(d, dtype=bool)
        body[inp.head] = False
    start = float(inp.probe(own))
    rises = np.full(inp.k, np.nan)
    w, b = own[body], base[body]
    for i in np.flatnonzero(which):
        # w + step (b + p (m - b) - w) on the body; the head stays w's.
        target = inp.rows[i][body] - b
        target *= np.float32(pull[i])
        target += b
        target -= w
        moved = own.copy()
        moved[body] = w + np.float32(step) * target
        rises[i] = float(inp.probe(moved)) - start
    return rises


SIGN_MIN_TENSOR = 10_000
"""The sign test reads a tensor apart, and the whole model, only from this many coordinates
on: on a few hundred, honest differences are too lopsided to test (docs/results.md, "Sign
test")."""


def sign_skews(inp: AggregationInput) -> np.ndarray:
    """float64 [k]: for each received model, the largest |above - below| / (above + below),
    above (below) the number of coordinates on which it exceeds (falls short of) the own
    model, taken over the whole model and over each tensor of `inp.tensors`, each where it has
    at least `SIGN_MIN_TENSOR` coordinates (0 where none has: too few to read).

    Honest models read near 0 on the large tensors (docs/results.md, "Sign test"); ALIE,
    which adds tau standard deviations to every coordinate of the honest mean, near 1.
    """
    own, d = inp.own, inp.own.shape[0]
    sizes = inp.tensors if inp.tensors is not None else (d,)
    starts = np.cumsum((0, *sizes[:-1]))
    out = np.zeros(inp.k)
    for i, row in enumerate(inp.rows):
        # Counted once per tensor, compared in place (no difference vector); the whole
        # model's counts are their sums.
        above = np.array([np.count_nonzero(row[a:a + n] > own[a:a + n])
                          for a, n in zip(starts, sizes, strict=True)])
        below = np.array([np.count_nonzero(row[a:a + n] < own[a:a + n])
                          for a, n in zip(starts, sizes, strict=True)])
        read = [(above[j], below[j]) for j, n in enumerate(sizes) if n >= SIGN_MIN_TENSOR]
        if d >= SIGN_MIN_TENSOR:
            read.append((above.sum(), below.sum()))
        for up, down in read:
            if up + down:
                out[i] = max(out[i], abs(int(up) - int(down)) / int(up + down))
    return out


def kin_counts(inp: AggregationInput, kin: float, voting: np.ndarray | None = None,
               coords: int = 0) -> np.ndarray:
    """float64 [1 + k]: how many voices the own model and each received model share theirs with.

    Each model's deviation from the coordinate-wise median of the own and received models is
    compared with the others' by cosine c; a pair with c above `kin` counts
    (c - kin) / (1 - kin) of a voice to each other, so identical deviations are one voice
    however many senders publish them. Colluders who publish one model (or copy one honest
    node's, as mimic does) thus weigh as one sender. Honest peers deviate each along their own
    labels, mostly below the threshold (docs/results.md, "Kin test"), and nodes that hold the
    very same labels (2-label shards pair nodes that way) are near-duplicates that lose little
    by counting once. Only `voting` received models (those with weight; all by default)
    count against each other and the own model, so a sender cannot silence an honest peer by
    copying it into a model the rule then rejects. An attacker who knows the test spreads the
    colluders' models apart (each pushing on its own coordinates, or with noise of its own):
    k colluders with pairwise cosine at most `kin` still push up to sqrt(k + k (k - 1) kin)
    times one sender's length together, against k times without the test. Cosines are taken on
    `coords` coordinates (0: all) drawn as in `own_update_cosines`.
    """
    k = inp.k
    voting = np.ones(k, dtype=bool) if voting is None else np.asarray(voting, dtype=bool)
    idx = _sample(inp, coords)
    rows = [inp.own, *inp.rows]
    x = np.stack([r if idx is None else r[idx] for r in rows]).astype(np.float64)
    dev = x - np.median(x, axis=0)
    norms = np.linalg.norm(dev, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(np.outer(norms, norms) > 0.0, (dev @ dev.T) / np.outer(norms, norms), 0.0)
    share = np.clip((cos - kin) / (1.0 - kin), 0.0, 1.0) if kin < 1.0 else np.zeros_like(cos)
    member = np.append(True, voting)
    share *= member[None, :]  # only the own model and models with weight count as kin
    np.fill_diagonal(share, 1.0)
    return share.sum(axis=1)


def passes_reversal(inp: AggregationInput, reversal: float,
                    candidates: np.ndarray | None = None) -> np.ndarray:
    """bool [k]: the received models whose output-layer update is not reversed: whose skew as
    `reversal_readings` reads it is at least -`reversal`."""
    return reversal_readings(inp, reversal, candidates) >= -reversal


def reversal_readings(inp: AggregationInput, reversal: float,
                      candidates: np.ndarray | None = None, *, lower: bool = False) -> np.ndarray:
    """float64 [k]: the head skew of each received model's output-layer update as the reversal
    test reads it.

    A model passes when its head skew against the own round start (`head_skew`) is at least
    -`reversal`. When that test would reject more than half of `candidates` (the models the
    rule's other tests kept; all of them by default), this node is the odd one out: its own
    output layer has drifted (it trained alone a while), and read from its round start every
    honest update looks reversed, so it rejected them all and stayed alone (one node of an
    async run did, docs/results.md "Stragglers"). Then, and only then, the higher of that skew
    and the skew against the coordinate-wise median of the round start and the candidates'
    heads counts. Models the other tests left out take part in neither the count nor the
    median: a model that passes this test and fails another (ByzFL's ALIE fails the balance
    test) kept the median reading off while honest models failed (docs/results.md, "Reversal
    fallback pool"). Reading the median every round let colluders, who are part of it, move
    the reference their own models are read against (three identical heads pull it onto their
    own value), which min-max and mimic took advantage of (docs/results.md, "Reversal test
    reference"). Attackers who fail the test on purpose bring the median reading in only when
    honest models fail with them.

    With `lower`, the start reading takes on each class (its bias and, with
    `inp.head_classes`, its weight row's sum) the lower of the round start and that median. A
    node that aggregates little drifts towards its own classes; read from its start, every
    peer's update then lowers those classes and reads as reversed, so the node aggregates even
    less. Each reading is then taken less its mean over the classes: an honest update's bias
    and weight-row sums add up to zero (cross-entropy's law, see `head_imbalance`), and what
    the lowered own classes leave of the drift is a shift of every other class, which would
    read any model as learnt. The median can only lower the reference, and colluders, fewer
    than half of the pool, cannot lower it below an honest head.
    """
    heads = _round_heads(inp)
    pool = np.ones(inp.k, dtype=bool) if candidates is None else candidates
    # The median of the round start and the pool's heads: models the other tests left out
    # move neither the vote nor the reference.
    median = np.median(heads[np.append(True, pool)], axis=0) if lower else None
    start = _lowered_start(inp, heads[0], median) if median is not None else heads[0]
    against_start = _skews_against(inp, heads, start, center=lower)
    passed = against_start >= -reversal
    if 2 * np.count_nonzero(pool & ~passed) > np.count_nonzero(pool):
        if median is None:
            median = np.median(heads[np.append(True, pool)], axis=0)
        against_median = _skews_against(inp, heads, median)
        return np.maximum(against_start, against_median)
    return against_start


def _lowered_start(inp: AggregationInput, start: np.ndarray, median: np.ndarray) -> np.ndarray:
    """float64 [h]: the round-start head moved, class by class, down to `median` where that is
    lower; the per-class readings of `class_readings` are what is compared."""
    c = inp.head_classes
    if c is None:
        return np.minimum(start, median)
    out = np.minimum(start, median)  # the bias: its last c entries
    rows = start[:-c].reshape(c, -1)
    drop = np.minimum(class_readings(median, c)[1] - class_readings(start, c)[1], 0.0)
    out[:-c] = (rows + drop[:, None] / rows.shape[1]).ravel()
    return out


def class_readings(u: np.ndarray, c: int | None) -> list[np.ndarray]:
    """The per-class readings of a head (difference) `u`: `u` itself, or with `c` classes (the
    output weights, then the bias) the bias and the weight rows' sums."""
    return [u] if c is None else [u[-c:], u[:-c].reshape(c, -1).sum(axis=1)]


def class_peak(reading: np.ndarray) -> float:
    """The largest entry of a per-class reading less its mean over the classes, in absolute
    value: how far `head_clip` reads one class moved against the others."""
    return float(np.abs(reading - reading.mean()).max())


def head_skew(inp: AggregationInput) -> np.ndarray:
    """float64 [k]: (max + min) / (max - min) of each received model's output-layer update
    m_i - r on the `inp.head` coordinates, r the round-start head (`inp.start_head`).

    Softmax cross-entropy moves the bias of class c by the mean of (y_c - p_c), which sums to
    zero over the classes: training raises the bias of the classes a node holds and lowers all
    the others by less, so an update learnt from label-skewed data has one or a few large
    positive entries (skew near +1), and a sign-flipped one the mirror image (skew near -1). A
    zero update has skew 0.

    With `inp.head_classes` the head also holds the output weights, whose row c moves by the
    mean of (y_c - p_c) h over the batch, h the last hidden layer's output. After a ReLU h is
    never negative, so the row sums follow the bias's pattern (on label-skewed shards their skew
    has the bias's sign; on IID shards both are noise). The skew is then the lower of the two,
    so an attacker who flips the weights but leaves the bias as trained still shows a mirror
    image.
    """
    heads = _round_heads(inp)
    return _skews_against(inp, heads, heads[0])


def head_skews(inp: AggregationInput) -> tuple[np.ndarray, np.ndarray]:
    """(against the round start, against the median): `head_skew` read from r, and from the
    coordinate-wise median of the received heads and r (a stand-in for the round start the
    senders share, robust while fewer than half of them are an attacker's)."""
    heads = _round_heads(inp)
    return (_skews_against(inp, heads, heads[0]),
            _skews_against(inp, heads, np.median(heads, axis=0)))


def _round_heads(inp: AggregationInput) -> np.ndarray:
    """float64 [1 + k, h]: the round-start head, then each received model's head."""
    start = inp.start_head
    if start is None:
        raise ValueError("head_skew needs AggregationInput.head and its head_base or base")
    return np.stack([start, *(row[inp.head] for row in inp.rows)]).astype(np.float64)


def _skews_against(inp: AggregationInput, heads: np.ndarray, base: np.ndarray, *,
                   center: bool = False) -> np.ndarray:
    """float64 [k]: the skew of each received head (`heads[1:]`) minus `base` (see `head_skew`);
    with `center`, each per-class reading less its mean over the classes first."""
    c = inp.head_classes
    out = np.zeros(inp.k)
    for i in range(inp.k):
        parts = class_readings(heads[i + 1] - base, c)
        out[i] = min(_skew(p - p.mean() if center else p) for p in parts)
    return out


def head_imbalance(inp: AggregationInput) -> np.ndarray:
    """float64 [k]: |sum| / sum of |entries| of each received model's output-bias difference
    from the own model, in [0, 1] (0 for equal biases).

    Softmax cross-entropy moves the bias of class c by the mean of (y_c - p_c), which sums to
    zero over the classes; averaging keeps a sum its inputs share; weight decay shrinks it
    towards 0. So honest models, all trained and averaged from one genesis, have output biases
    that add up to about the same, and their difference is near 0 here however much their
    label mixes differ, while a model that moved every class's bias one way is near 1. The
    bias is the last `inp.head_classes` coordinates of `inp.head`, or all of them.
    """
    if inp.head is None:
        raise ValueError("head_imbalance needs AggregationInput.head")
    head, c = inp.head, inp.head_classes
    bias = head if c is None else slice(head.stop - c, head.stop)
    own = inp.own[bias].astype(np.float64)
    out = np.zeros(inp.k)
    for i, row in enumerate(inp.rows):
        u = row[bias].astype(np.float64) - own
        total = float(np.abs(u).sum())
        out[i] = abs(float(u.sum())) / total if total > 0.0 else 0.0
    return out


def _skew(u: np.ndarray) -> float:
    top, bottom = float(u.max()), float(u.min())
    return (top + bottom) / (top - bottom) if top > bottom else 0.0


def own_update_cosines(inp: AggregationInput, coords: int) -> np.ndarray:
    """float64 [k]: cosine of each received update m_i - base with the own update own - base.

    Taken on `coords` coordinates (0 or >= d: all of them) drawn with a seed from the own model,
    which no sender knows before it publishes. A zero update has cosine 0.
    """
    if inp.base is None:
        raise ValueError("own_update_cosines needs AggregationInput.base")
    idx = _sample(inp, coords)
    if idx is not None:
        # Gathered row by row: a [k, coords] sample, never the [k, d] matrix.
        base, own, models = inp.base[idx], inp.own[idx], np.stack([r[idx] for r in inp.rows])
    else:
        base, own, models = inp.base, inp.own, inp.matrix
    updates = models - base
    mine = own - base
    products = updates @ mine
    norms = np.linalg.norm(updates, axis=1) * float(np.linalg.norm(mine))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0.0, products / norms, 0.0).astype(np.float64)


def _sample(inp: AggregationInput, coords: int) -> np.ndarray | None:
    """Sorted indices of `coords` coordinates drawn with a seed from the own model, which no
    sender knows before it publishes; None for all of them (coords 0 or >= d)."""
    d = inp.own.shape[0]
    if not 0 < coords < d:
        return None
    seed = int.from_bytes(hashlib.blake2b(inp.own[:4096].tobytes(), digest_size=8).digest(),
                          "little")
    return np.sort(np.random.default_rng(seed).choice(d, size=coords, replace=False))
