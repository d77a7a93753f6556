"""dfl_guard on small hand-made vectors: gating, clipping, recovering reputations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dfl_ray.defense import (
    AggregationInput,
    AggregationResult,
    get_rule,
    rule_uses_base,
    rule_uses_head,
    rule_uses_probe,
)
from dfl_ray.defense.guard import (
    dfl_guard,
    head_imbalance,
    head_skew,
    head_skews,
    kin_counts,
    own_update_cosines,
    passes_reversal,
    probe_verdict,
    reversal_readings,
    sign_skews,
)
from dfl_ray.defense.shield import dfl_shield

RNG = np.random.default_rng(7)
D = 40


def make_input(models: np.ndarray, scores: list[float], reps: dict[str, float] | None = None,
               own: np.ndarray | None = None, base: np.ndarray | None = None) -> AggregationInput:
    k = len(models)
    return AggregationInput(
        own=(own if own is not None else np.zeros(D, dtype=np.float32)),
        own_score=0.9,
        models=models.astype(np.float32),
        senders=tuple(f"n{i}" for i in range(k)),
        scores=np.array(scores, dtype=np.float64),
        reputations=reps or {},
        base=base,
    )


def honest(k: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal((k, D)) * scale).astype(np.float32)


def test_without_attackers_it_is_the_mean_of_own_and_received() -> None:
    models = honest(4)
    result = dfl_guard(make_input(models, [0.5] * 4), clip=np.inf, gate=np.inf)
    expected = np.vstack([np.zeros((1, D)), models]).mean(axis=0)
    np.testing.assert_allclose(result.model, expected, rtol=1e-5, atol=1e-6)
    assert result.model.dtype == np.float32


def test_rejects_a_random_model_and_a_boosted_one() -> None:
    models = np.vstack([honest(6), RNG.random((1, D)) * 50, honest(1) * 10])
    result = dfl_guard(make_input(models, [0.5] * 6 + [0.9, 0.9]))
    assert np.all(result.weights[:6] > 0)
    assert result.weights[6] == 0 and result.weights[7] == 0
    assert result.reputations["n6"] < 1.0 and result.reputations["n0"] == 1.0
    # the accepted honest models bound the result
    assert np.linalg.norm(result.model) < 2 * np.linalg.norm(models[:6], axis=1).max()


def test_gating_holds_when_attackers_are_a_large_minority_of_the_buffer() -> None:
    models = np.vstack([honest(3), np.full((2, D), 30.0, dtype=np.float32)])
    result = dfl_guard(make_input(models, [0.3, 0.2, 0.25, 0.9, 0.9]))
    assert result.weights[3] == 0 and result.weights[4] == 0
    assert np.all(result.weights[:3] > 0)


def test_clipping_bounds_the_pull_of_an_accepted_model() -> None:
    models = np.vstack([honest(4), honest(1) * 2.5])
    clipped = dfl_guard(make_input(models, [0.5] * 5), gate=np.inf, clip=1.0)
    free = dfl_guard(make_input(models, [0.5] * 5), gate=np.inf, clip=np.inf)
    assert np.linalg.norm(clipped.model) < np.linalg.norm(free.model) + 1e-6
    assert not np.allclose(clipped.model, free.model)


def test_with_the_score_test_on_a_persistent_low_scorer_sinks_and_honest_ones_recover() -> None:
    reps: dict[str, float] = {}
    weights = []
    for step in range(30):
        models = honest(5)
        # n0 scores far below the rest once (a bad round); n4 always does (label flipping)
        scores = [0.8, 0.7, 0.75, 0.72, 0.05]
        if step == 3:
            scores[0] = 0.0
        result = dfl_guard(make_input(models, scores, reps), margin=0.4)
        reps = result.reputations
        weights.append(result.weights)
    assert reps["n0"] > 0.99 and min(reps[f"n{i}"] for i in range(4)) > 0.99
    assert reps["n4"] < 0.01 and weights[-1][4] == 0.0


def test_the_score_test_is_off_by_default() -> None:
    result = dfl_guard(make_input(honest(5), [0.8, 0.7, 0.75, 0.72, 0.05]))
    assert all(v == 1.0 for v in result.reputations.values())
    assert np.all(result.weights > 0)


def opposing_round(scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """base, own model, received models: 5 updates along the own one, the last 2 reversed."""
    base = honest(1)[0]
    step = honest(1)[0] * 0.1
    # noise as large as the step keeps every model at a similar distance: gating passes them all
    own = base + step + honest(1)[0] * 0.1
    along = base + step + honest(4) * 0.1
    reversed_ = base - scale * (step + honest(2) * 0.1)
    return base, own, np.vstack([along, reversed_]).astype(np.float32)


def test_rejects_updates_that_oppose_the_own_update() -> None:
    base, own, models = opposing_round()
    result = dfl_guard(make_input(models, [0.5] * 6, own=own, base=base), oppose=0.4)
    assert np.all(result.weights[:4] > 0)
    assert result.weights[4] == 0 and result.weights[5] == 0
    assert result.reputations["n4"] < 1.0 and result.reputations["n0"] == 1.0


def test_without_a_base_or_by_default_there_is_no_direction_test() -> None:
    base, own, models = opposing_round()
    assert np.all(dfl_guard(make_input(models, [0.5] * 6, own=own), oppose=0.4).weights > 0)
    assert np.all(dfl_guard(make_input(models, [0.5] * 6, own=own, base=base)).weights > 0)


def test_only_the_opposition_test_makes_a_node_keep_its_round_start() -> None:
    assert rule_uses_base("dfl_guard", {"oppose": 0.4})
    assert not rule_uses_base("dfl_guard", {})
    assert not rule_uses_base("fedavg", {})
    with pytest.raises(ValueError, match="unknown aggregation rule"):
        rule_uses_base("nope", {})


def test_sampled_cosines_track_the_exact_ones() -> None:
    d = 20_000
    rng = np.random.default_rng(3)
    base = rng.standard_normal(d).astype(np.float32)
    step = rng.standard_normal(d).astype(np.float32) * 0.1
    own = base + step
    mix = np.array([1.0, 0.5, 0.0, -0.5, -1.0], dtype=np.float32)[:, None]
    noise = rng.standard_normal((5, d)).astype(np.float32) * 0.1
    models = (base + mix * step + noise).astype(np.float32)
    inp = AggregationInput(own=own, own_score=0.5, models=models,
                           senders=tuple(f"n{i}" for i in range(5)), scores=np.full(5, 0.5),
                           reputations={}, base=base)
    exact = own_update_cosines(inp, 0)
    sampled = own_update_cosines(inp, 4_000)
    assert exact[0] > 0.6 and exact[-1] < -0.6  # the cases differ clearly
    np.testing.assert_allclose(sampled, exact, atol=0.05)
    assert np.array_equal(sampled, own_update_cosines(inp, 4_000))  # same input, same sample


def test_label_skewed_peers_scoring_low_together_are_not_penalised() -> None:
    # Early non-IID rounds: every peer scores low on my data; nobody should lose reputation.
    result = dfl_guard(make_input(honest(5), [0.0, 0.1, 0.05, 0.2, 0.0]))
    assert all(v == 1.0 for v in result.reputations.values())


def test_never_aliases_or_writes_its_inputs() -> None:
    models = honest(3)
    models.setflags(write=False)
    own = honest(1)[0]
    before = own.copy()
    result = dfl_guard(make_input(models, [0.5] * 3, own=own))
    assert not np.shares_memory(result.model, own) and not np.shares_memory(result.model, models)
    assert np.array_equal(own, before)


def test_invalid_parameter_is_named() -> None:
    rule = get_rule("dfl_guard")
    inp = make_input(honest(2), [0.5, 0.5])
    with pytest.raises(ValueError, match="beta"):
        rule(inp, {"beta": 0.0})
    with pytest.raises(ValueError, match="coords"):
        rule(inp, {"coords": 2.5})
    with pytest.raises(ValueError, match="oppose"):
        rule(inp, {"oppose": 1.5})
    with pytest.raises(ValueError, match="reversal"):
        rule(inp, {"reversal": -0.1})
    with pytest.raises(ValueError, match="kin"):
        rule(inp, {"kin": 1.5})
    with pytest.raises(ValueError, match="parameter sign must be in"):
        rule(inp, {"sign": -0.5})
    with pytest.raises(ValueError, match="no parameter 'radius'"):
        rule(inp, {"radius": 1.0})


def test_probe_rejects_a_model_that_raises_the_own_validation_loss() -> None:
    """Three colluders sit at an ordinary distance, so the gate passes them, on the side of
    the own model that the node's validation loss (a quadratic around `goal`) punishes."""
    own = np.zeros(D, dtype=np.float32)
    goal = np.ones(D, dtype=np.float32)
    peers = np.random.default_rng(11).standard_normal((6, D)) * 0.2
    models = np.vstack([peers, np.tile(-goal * 0.2, (3, 1))]).astype(np.float32)
    calls: list[np.ndarray] = []

    def probe(vec: np.ndarray) -> float:
        calls.append(vec.copy())
        return float(((vec - goal) ** 2).mean())

    inp = make_input(models, [0.5] * 9, own=own)
    inp = AggregationInput(own=inp.own, own_score=0.9, models=inp.matrix, senders=inp.senders,
                           scores=inp.scores, reputations={}, probe=probe)
    assert np.all(dfl_guard(inp, probe=np.inf).weights > 0)  # off
    assert not calls
    result = dfl_guard(inp)  # on by default, probe=2
    assert np.all(result.weights[:6] > 0) and np.all(result.weights[6:] == 0)
    assert result.reputations["n6"] < 1.0 and result.reputations["n0"] == 1.0
    assert len(calls) == 1 + 9  # the own model, then one probe per accepted model
    # the probe moves half way towards each model, centred on the own model
    np.testing.assert_allclose(calls[-1], own + 0.5 * (models[-1] - own), rtol=1e-6)


def test_the_score_test_keeps_its_own_reference_when_the_probe_is_on() -> None:
    """The probe's threshold is no score: with both tests on, a low scorer whose probe rise
    is ordinary still loses reputation to the score test."""
    models = honest(6, scale=0.2)

    def probe(vec: np.ndarray) -> float:
        return float((vec ** 2).mean())

    plain = make_input(models, [0.8, 0.7, 0.75, 0.72, 0.78, 0.05])
    inp = AggregationInput(own=plain.own, own_score=0.9, models=plain.matrix,
                           senders=plain.senders, scores=plain.scores, reputations={},
                           probe=probe)
    result = dfl_guard(inp, probe=100.0, margin=0.4)
    assert np.all(result.weights > 0)  # every model passed the probe
    assert all(result.reputations[f"n{i}"] == 1.0 for i in range(5))
    assert result.reputations["n5"] == pytest.approx(0.7)  # one failed round: 1 - beta


def test_the_probe_test_is_skipped_without_a_probe_and_asked_for_only_when_on() -> None:
    models = np.vstack([honest(6), -np.ones((3, D), dtype=np.float32)])
    assert np.all(dfl_guard(make_input(models, [0.5] * 9), probe=2.0).weights > 0)
    assert rule_uses_probe("dfl_guard", {})  # on by default
    assert not rule_uses_probe("dfl_guard", {"probe": np.inf})
    with pytest.raises(ValueError, match="probe_step"):
        get_rule("dfl_guard")(make_input(models, [0.5] * 9), {"probe_step": 0.0})


def test_forgive_keeps_the_weight_of_a_reputable_sender_that_fails_only_the_probe() -> None:
    """n6-n8 fail the probe; n6 and n7 come with a high reputation, n8 with a low one. With
    `forgive` 0.8 the first two keep weight this round (and still lose reputation), the third
    does not; a model failing another test is never forgiven."""
    goal = np.ones(D, dtype=np.float32)
    peers = np.random.default_rng(11).standard_normal((6, D)) * 0.2
    models = np.vstack([peers, np.tile(-goal * 0.2, (3, 1)),
                        RNG.random((1, D)) * 50]).astype(np.float32)  # n9: fails the gate

    def probe(vec: np.ndarray) -> float:
        return float(((vec - goal) ** 2).mean())

    reps = {"n6": 1.0, "n7": 0.85, "n8": 0.6, "n9": 1.0}
    plain = make_input(models, [0.5] * 10, reps)
    inp = AggregationInput(own=plain.own, own_score=0.9, models=plain.matrix,
                           senders=plain.senders, scores=plain.scores, reputations=reps,
                           probe=probe)
    strict = dfl_guard(inp, probe=2.0)
    lenient = dfl_guard(inp, probe=2.0, forgive=0.8)
    assert np.all(strict.weights[6:] == 0)
    assert np.all(lenient.weights[:8] > 0) and lenient.weights[8] == 0 and lenient.weights[9] == 0
    for name, prior in reps.items():  # a failure costs the same either way
        assert lenient.reputations[name] == strict.reputations[name] == pytest.approx(0.7 * prior)
    # a forgiven sender is weighted by its lowered reputation (n6 and n7 share one voice)
    assert lenient.weights[6] / lenient.weights[7] == pytest.approx(1.0 / 0.85)
    with pytest.raises(ValueError, match="forgive"):
        get_rule("dfl_guard")(inp, {"forgive": -0.1})


def test_probe_scale_grades_the_reputation_of_models_that_pass_the_probe() -> None:
    """A model that passes the probe but raises the loss more than its peers' do observes
    q = 1 - excess / probe_scale: it loses reputation in proportion to its excess, while a
    model at or below the typical rise keeps all of it; without the option every pass
    observes 1."""
    goal = np.ones(D, dtype=np.float32)
    peers = np.random.default_rng(11).standard_normal((8, D)).astype(np.float32) * 0.05
    models = np.vstack([peers, -goal * 0.02]).astype(np.float32)  # n8 raises the loss a little

    def probe(vec: np.ndarray) -> float:
        return float(((vec - goal) ** 2).mean())

    plain = make_input(models, [0.5] * 9)
    inp = AggregationInput(own=plain.own, own_score=0.9, models=plain.matrix,
                           senders=plain.senders, scores=plain.scores, reputations={},
                           probe=probe)
    flat = dfl_guard(inp, probe=2.0, probe_slack=0.05)
    assert np.all(flat.weights > 0) and flat.reputations["n8"] == 1.0  # passes the probe
    _, rises, typical = probe_verdict(inp, np.ones(9), np.ones(9, dtype=bool), ratio=2.0,
                                      step=0.5, slack=0.05, centre=inp.own)
    excess = rises[8] - typical
    assert excess > 0.0
    scale = 2.0 * excess
    graded = dfl_guard(inp, probe=2.0, probe_slack=0.05, probe_scale=scale)
    assert graded.reputations["n8"] == pytest.approx(0.7 + 0.3 * 0.5)  # q = 1 - 1/2
    for i in np.flatnonzero(rises[:8] <= typical):  # at or below the typical rise: q = 1
        assert graded.reputations[f"n{i}"] == 1.0
    assert graded.weights[8] < flat.weights[8]
    with pytest.raises(ValueError, match="probe_scale"):
        get_rule("dfl_guard")(inp, {"probe_scale": 0.0})


def test_penalty_makes_a_failed_round_cost_more_than_a_passed_one_earns() -> None:
    models = np.vstack([honest(6), RNG.random((1, D)) * 50])  # the last one fails the gate
    inp = make_input(models, [0.5] * 7, reps={f"n{i}": 0.8 for i in range(7)})
    plain = dfl_guard(inp)
    harsh = dfl_guard(inp, penalty=0.6)
    assert plain.reputations["n6"] == pytest.approx(0.7 * 0.8)  # the default: beta
    assert harsh.reputations["n6"] == pytest.approx(0.4 * 0.8)
    for i in range(6):  # a pass earns the same either way
        assert harsh.reputations[f"n{i}"] == pytest.approx(0.7 * 0.8 + 0.3)
        assert plain.reputations[f"n{i}"] == harsh.reputations[f"n{i}"]
    with pytest.raises(ValueError, match="penalty"):
        get_rule("dfl_guard")(inp, {"penalty": 1.5})


def test_entry_withholds_weight_from_a_sender_whose_standing_is_low_before_the_round() -> None:
    models = honest(6)
    reps = {"n0": 0.2, **{f"n{i}": 1.0 for i in range(1, 6)}}
    open_door = dfl_guard(make_input(models, [0.5] * 6, reps))
    assert open_door.weights[0] > 0  # a pass lifts 0.2 to 0.44, above the floor
    strict = dfl_guard(make_input(models, [0.5] * 6, reps), entry=0.3)
    assert strict.weights[0] == 0 and np.all(strict.weights[1:] > 0)
    assert strict.reputations["n0"] == pytest.approx(0.7 * 0.2 + 0.3)  # it still recovers


# ------------------------------------------------------------------ reversal test (head skew)

CLASSES = 10
HEAD = slice(D - CLASSES, D)


def skewed_round() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """base, own model, received models: 4 label-skewed updates, the last 2 of them reversed.

    On the head (the last 10 coordinates) each update raises one or two classes a lot and
    lowers the others a little, as cross-entropy training on a few classes does.
    """
    base = honest(1)[0]
    updates = honest(6) * 0.01
    for i, held in enumerate([(0,), (1, 2), (3,), (4, 5), (6,), (7, 8)]):
        bias = np.full(CLASSES, -0.02, dtype=np.float32)
        bias[list(held)] = 0.2 / len(held)
        updates[i, HEAD] = bias
    updates[4:] *= -1.0
    own = base + honest(1)[0] * 0.01
    return base, own.astype(np.float32), (base + updates).astype(np.float32)


def head_input(models: np.ndarray, own: np.ndarray, base: np.ndarray,
               head_base: bool = False,
               reputations: dict[str, float] | None = None) -> AggregationInput:
    k = len(models)
    return AggregationInput(
        own=own, own_score=0.9, models=models, senders=tuple(f"n{i}" for i in range(k)),
        scores=np.full(k, 0.5), reputations=reputations or {}, head=HEAD,
        **({"head_base": base[HEAD].copy()} if head_base else {"base": base}),
    )


def test_head_skew_is_positive_for_learnt_and_negative_for_reversed_updates() -> None:
    base, own, models = skewed_round()
    skew = head_skew(head_input(models, own, base))
    assert np.all(skew[:4] > 0.5) and np.all(skew[4:] < -0.3)
    # Only the head and the round start are read: the same from head_base as from base.
    assert np.array_equal(skew, head_skew(head_input(models, own, base, head_base=True)))
    # A zero update has skew 0.
    assert head_skew(head_input(np.stack([base, base]), own, base)).tolist() == [0.0, 0.0]


def test_a_receiver_whose_head_drifted_still_sees_honest_updates_as_learnt() -> None:
    """A node that trained alone a while has its own classes' biases raised: against its round
    start every honest update lowers them, and read so the reversal test rejected every honest
    model and the node stayed alone. When more than half fail against the round start, the
    median of what it received is read too: the learnt ones pass, the reversed ones do not."""
    base, own, models = skewed_round()
    drifted = base.copy()
    drifted[HEAD] += np.float32(-0.05)
    drifted[HEAD.stop - 1] += np.float32(0.5)  # class 9: the receiver's own, trained alone
    inp = head_input(models, own, drifted)
    against_start, against_median = head_skews(inp)
    assert np.all(against_start < 0)  # read from the round start alone: every model reversed
    assert np.array_equal(against_start, head_skew(inp))
    assert np.all(against_median[:4] > 0.5) and np.all(against_median[4:] < -0.3)
    assert passes_reversal(inp, 0.0).tolist() == [True] * 4 + [False] * 2
    weights = dfl_guard(inp, gate=np.inf).weights
    assert np.all(weights[:4] > 0) and np.all(weights[4:] == 0)


def test_lower_reads_past_the_receivers_own_drift() -> None:
    """With `lower`, a receiver whose own class rose while it trained alone reads its peers'
    updates against the lower of its round start and the median head, centred: learnt updates
    pass and reversed ones fail without the fallback, and the verdict without drift is kept."""
    base, own, models = skewed_round()
    drifted = base.copy()
    drifted[HEAD] += np.float32(-0.05)
    drifted[HEAD.stop - 1] += np.float32(0.5)  # class 9: the receiver's own, trained alone
    # Only the reversed models and one learnt one: the start reading fails 3 of 4, which
    # the median fallback would answer, and 2 of 4 with `lower`, which it need not.
    received = models[[0, 4, 5]]
    lowered = reversal_readings(head_input(received, own, drifted), 0.0, lower=True)
    assert lowered[0] > 0.3 and np.all(lowered[1:] < 0.0)
    assert np.all(reversal_readings(head_input(models, own, drifted), 0.0, lower=True)[:4] > 0.3)
    plain = head_input(models, own, base)
    assert (reversal_readings(plain, 0.0, lower=True) >= 0).tolist() == [True] * 4 + [False] * 2
    weights = dfl_guard(head_input(models, own, drifted), gate=np.inf, lower=1).weights
    assert np.all(weights[:4] > 0) and np.all(weights[4:] == 0)
    with pytest.raises(ValueError, match="lower must be 0 or 1"):
        dfl_guard(plain, lower=0.5)


def test_colluders_cannot_move_the_reversal_reference() -> None:
    """Read against the median of the received heads, colluders are part of the reference
    their own models are read against: three identical heads pull the median onto their own
    value, and an update reversed against the round start reads as learnt against it. While
    most received models pass against the own round start, only that counts."""
    base, own, models = skewed_round()
    colluders = np.repeat(models[4:5], 3, axis=0)
    # Class 6 lowered by twice what the others are raised: reversed against the round start.
    colluders[:, HEAD] = base[HEAD] + np.array([-0.01, 0, 0.01, 0.01, 0, 0.01, -0.02, 0.01,
                                                 0.01, 0.01], dtype=np.float32)
    received = np.concatenate([models[:4], colluders])
    inp = head_input(received, own, base)
    against_start, against_median = head_skews(inp)
    assert np.all(against_start[:4] > 0.5) and np.all(against_start[4:] < -0.3)
    assert np.all(against_median[4:] > 0.9)  # the median reading would let them in
    assert passes_reversal(inp, 0.0).tolist() == [True] * 4 + [False] * 3
    weights = dfl_guard(inp, gate=np.inf, lower=0).weights
    assert np.all(weights[:4] > 0) and np.all(weights[4:] == 0)
    # With `lower` (the default) class 6 is read against the honest models' median, which has
    # it as lowered as theirs: the colluders' head is the consensus's there, not a reversal.
    # Colluders that do reverse it cannot take the reference down with them.
    colluders[:, HEAD.start + 6] = base[HEAD.start + 6] - np.float32(0.5)
    flipped = head_input(np.concatenate([models[:4], colluders]), own, base)
    lowered = reversal_readings(flipped, 0.0, lower=True)
    assert np.all(lowered[:4] > 0.3) and np.all(lowered[4:] < -0.3)
    # The median reading comes in only when more than half of the candidates fail: leaving
    # the honest models out of the candidates makes the colluders that majority.
    only_them = np.array([False] * 4 + [True] * 3)
    assert passes_reversal(inp, 0.0, only_them)[4:].all()


def train_on_two_classes(net: Any) -> tuple[np.ndarray, np.ndarray]:
    """(start, trained) parameter vectors of a torch classifier trained on classes 3 and 4 only."""
    import torch

    def vector() -> np.ndarray:
        return torch.cat([p.detach().flatten() for p in net.parameters()]).numpy().copy()

    start = vector()
    x = torch.randn(256, 8)
    y = torch.randint(3, 5, (256,))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return start, vector()


def test_head_skew_of_real_cross_entropy_training_and_its_sign_flip() -> None:
    """A softmax layer trained on two classes: its bias update has positive skew, the flipped
    update negative skew, which is what the reversal test relies on."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    start, trained = train_on_two_classes(torch.nn.Linear(8, CLASSES))
    flipped = start - (trained - start)
    d = start.shape[0]
    inp = AggregationInput(
        own=start.astype(np.float32), own_score=0.5,
        models=np.stack([trained, flipped]).astype(np.float32), senders=("honest", "flipper"),
        scores=np.full(2, 0.5), reputations={}, base=start.astype(np.float32),
        head=slice(d - CLASSES, d),
    )
    skew = head_skew(inp)
    assert skew[0] > 0.5 and skew[1] < -0.5
    assert dfl_guard(inp, gate=np.inf).weights.tolist()[1] == 0.0


def test_rejects_reversed_updates_by_default() -> None:
    base, own, models = skewed_round()
    result = dfl_guard(head_input(models, own, base, head_base=True))
    assert np.all(result.weights[:4] > 0)
    assert result.weights[4] == 0 and result.weights[5] == 0
    assert result.reputations["n4"] < 1.0 and result.reputations["n0"] == 1.0


def test_reversal_one_or_no_head_turns_the_reversal_test_off() -> None:
    base, own, models = skewed_round()
    assert np.all(dfl_guard(head_input(models, own, base), reversal=1.0).weights > 0)
    assert np.all(dfl_guard(make_input(models, [0.5] * 6, own=own, base=base)).weights > 0)


def test_the_reversal_test_keeps_only_the_round_start_head() -> None:
    assert rule_uses_head("dfl_guard", {}) and not rule_uses_base("dfl_guard", {})
    assert not rule_uses_head("dfl_guard", {"reversal": 1.0})
    assert not rule_uses_head("median", {})
    with pytest.raises(ValueError, match="unknown aggregation rule"):
        rule_uses_head("nope", {})


def test_head_skew_over_the_whole_output_layer_sees_a_flip_that_spares_the_bias() -> None:
    """An attacker that flips its update but leaves the output bias as trained passes a test of
    the bias alone; the output weights' row sums (over ReLU features) still show the mirror."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    start, trained = train_on_two_classes(
        torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, CLASSES)))
    hidden = start - (trained - start)
    hidden[-CLASSES:] = trained[-CLASSES:]  # the bias left as trained
    d = start.shape[0]
    models = np.stack([trained, hidden]).astype(np.float32)

    def inp(head: slice, head_classes: int | None) -> AggregationInput:
        return AggregationInput(
            own=start.astype(np.float32), own_score=0.5, models=models,
            senders=("honest", "hidden"), scores=np.full(2, 0.5), reputations={},
            base=start.astype(np.float32), head=head, head_classes=head_classes,
        )

    bias_only = head_skew(inp(slice(d - CLASSES, d), None))
    assert bias_only[0] > 0.5 and bias_only[1] > 0.5  # the bias alone is fooled
    layer = inp(slice(d - CLASSES * 17, d), CLASSES)
    skew = head_skew(layer)
    assert skew[0] > 0.3 and skew[1] < -0.3
    assert dfl_guard(layer, gate=np.inf).weights.tolist()[1] == 0.0


@pytest.mark.parametrize("head_classes", [3, 1, True])
def test_head_classes_must_split_the_head_into_rows_and_a_bias(head_classes: int) -> None:
    base, own, models = skewed_round()
    with pytest.raises(ValueError, match="head_classes must be an integer >= 2"):
        AggregationInput(own=own, own_score=0.5, models=models,
                         senders=tuple(f"n{i}" for i in range(len(models))),
                         scores=np.full(len(models), 0.5), reputations={}, base=base,
                         head=slice(D - 20, D), head_classes=head_classes)


# ------------------------------------------------------------------ balance test (bias sum)


@pytest.mark.parametrize("rule", [dfl_guard, dfl_shield])
def test_an_alie_model_raises_every_bias_and_fails_the_balance_test(rule: Any) -> None:
    """Real cross-entropy training on different class pairs moves the output biases by vectors
    that sum to about zero, so trained models differ from the own model by near-zero-sum bias
    vectors; ALIE's mean + 1.5 std of their updates raises every class's bias at once. dfl_guard
    and dfl_shield both have the test."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    start = None
    trained = []
    for pair in [(0, 1), (2, 3), (4, 5), (6, 7)]:
        net = torch.nn.Linear(8, CLASSES)
        if start is not None:
            torch.nn.utils.vector_to_parameters(torch.from_numpy(start), net.parameters())
        else:
            start = torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy().copy()
        x = torch.randn(128, 8)
        y = torch.randint(pair[0], pair[1] + 1, (128,))
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        trained.append(torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy())
    assert start is not None
    updates = np.stack(trained) - start
    alie = start + updates.mean(axis=0) + 1.5 * updates.std(axis=0, ddof=1)
    d = start.shape[0]
    inp = AggregationInput(
        own=trained[0].astype(np.float32), own_score=0.5,
        models=np.stack([*trained[1:], alie, alie]).astype(np.float32),
        senders=("a", "b", "c", "x", "y"), scores=np.full(5, 0.5), reputations={},
        base=start.astype(np.float32), head=slice(d - CLASSES, d),
    )
    imbalance = head_imbalance(inp)
    assert np.all(imbalance[:3] < 0.2) and np.all(imbalance[3:] > 0.8), imbalance
    weights = rule(inp, gate=np.inf, reversal=1.0).weights
    assert np.all(weights[:3] > 0) and np.all(weights[3:] == 0)
    # Off at 1, and skipped without a head.
    assert np.all(rule(inp, gate=np.inf, reversal=1.0, balance=1.0).weights > 0)
    headless = AggregationInput(own=inp.own, own_score=0.5, models=inp.models,
                                senders=inp.senders, scores=inp.scores, reputations={},
                                base=inp.base)
    assert np.all(rule(headless, gate=np.inf).weights > 0)


def test_head_imbalance_reads_the_bias_at_the_end_of_the_whole_output_layer() -> None:
    """With `head_classes` the head holds the output weights, then the bias: only the bias's
    class-sum is the law's; the weights may move all one way."""
    own = np.zeros(D, dtype=np.float32)
    moved = own.copy()
    moved[HEAD] = np.array([1, -1] * 5, dtype=np.float32)  # a zero-sum bias change
    weights_and_bias = slice(D - 3 * CLASSES, D)  # a 2 x 10 weight block, then the bias
    moved[D - 3 * CLASSES:D - CLASSES] = 0.5  # every weight up
    raised = moved.copy()
    raised[HEAD] = 0.3  # every class's bias up
    inp = AggregationInput(own=own, own_score=0.5, models=np.stack([moved, raised]),
                           senders=("a", "b"), scores=np.full(2, 0.5), reputations={},
                           head=weights_and_bias, head_classes=CLASSES)
    assert head_imbalance(inp).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="balance"):
        dfl_guard(inp, balance=1.5)


def colluding_round(copies: int, scale: float = 1.0) -> np.ndarray:
    """Six honest models, then `copies` identical ones at distance `scale` from the origin."""
    push = RNG.standard_normal(D)
    push *= scale * np.sqrt(D) / np.linalg.norm(push)
    return np.vstack([honest(6), np.tile(push, (copies, 1))]).astype(np.float32)


def test_identical_models_count_as_one_voice() -> None:
    models = colluding_round(3)
    inp = make_input(models, [0.5] * 9)
    counts = kin_counts(inp, 0.5)
    np.testing.assert_allclose(counts[7:], 3.0)  # own, six honest, three copies
    assert np.all(counts[:7] < 1.5)
    result = dfl_guard(inp, gate=np.inf, clip=np.inf)
    shares = result.weights
    np.testing.assert_allclose(shares[6:].sum(), shares[:6].mean(), rtol=0.2)
    np.testing.assert_allclose(result.details["voices"], counts[1:])  # what the trace logs
    off = dfl_guard(inp, gate=np.inf, clip=np.inf, kin=1.0).weights
    np.testing.assert_allclose(off, off[0])  # the test off: every sender one voice
    # colluders cannot shift the result by more than one sender's weight
    one = dfl_guard(make_input(colluding_round(1)[:7], [0.5] * 7), gate=np.inf, clip=np.inf)
    assert np.isclose(shares[6:].sum(), one.weights[6], rtol=0.3)


def test_a_rejected_copy_does_not_silence_the_model_it_copies() -> None:
    d = 4000  # many coordinates: independent deviations have cosines near 0, as real models'
    models = RNG.standard_normal((6, d)).astype(np.float32)
    copies = np.tile(models[0] * 20.0, (3, 1))  # the same deviation, far beyond the gate

    def run(rows: np.ndarray) -> np.ndarray:
        k = len(rows)
        return dfl_guard(AggregationInput(
            own=np.zeros(d, dtype=np.float32), own_score=0.9, models=rows,
            senders=tuple(f"n{i}" for i in range(k)), scores=np.full(k, 0.5), reputations={},
        )).weights

    weights = run(np.vstack([models, copies]))
    assert np.all(weights[6:] == 0.0)
    assert weights[0] == pytest.approx(run(models)[0], rel=1e-6)


def test_peers_that_merely_share_a_direction_keep_their_weight() -> None:
    # cosine about 0.3 between the deviations: below kin = 0.5, every model its own voice
    common = RNG.standard_normal(D)
    models = (0.65 * common + RNG.standard_normal((6, D))).astype(np.float32)
    inp = make_input(models, [0.5] * 6)
    assert np.all(kin_counts(inp, 0.5) < 1.3)
    np.testing.assert_array_equal(kin_counts(inp, 1.0), np.ones(7))


def big_input(rows: np.ndarray, own: np.ndarray, tensors: tuple[int, ...] | None) -> AggregationInput:
    return AggregationInput(
        own=own.astype(np.float32), own_score=0.9, models=rows.astype(np.float32),
        senders=tuple(f"n{i}" for i in range(len(rows))),
        scores=np.full(len(rows), 0.5), reputations={}, tensors=tensors)


def test_sign_test_rejects_a_model_above_the_own_on_most_coordinates() -> None:
    """ALIE's shape: the honest mean plus a positive shift on every coordinate. Honest models
    differ from the own one up and down alike and pass; with sign = 1 the test is off."""
    rng = np.random.default_rng(3)
    n = 30_000
    own = rng.standard_normal(n)
    honest_rows = own + 0.1 * rng.standard_normal((5, n))
    alie = honest_rows.mean(axis=0) + 0.1 * np.abs(rng.standard_normal(n))
    rows = np.vstack([honest_rows, alie])
    inp = big_input(rows, own, None)
    skews = sign_skews(inp)
    assert np.all(skews[:5] < 0.05) and skews[5] > 0.6
    result = dfl_guard(inp)
    assert np.all(result.weights[:5] > 0) and result.weights[5] == 0
    assert result.reputations["n5"] < 1.0
    assert dfl_guard(inp, sign=1.0).weights[5] > 0


def test_sign_test_reads_each_large_tensor_but_no_small_one() -> None:
    """A model balanced over the whole but shifted up on one large tensor is seen through
    `tensors`; a lopsided tensor below SIGN_MIN_TENSOR coordinates is not read apart."""
    rng = np.random.default_rng(4)
    big, small = 12_000, 500
    n = 3 * big + small
    own = rng.standard_normal(n)
    noise = 0.1 * rng.standard_normal(n)
    shifted = own + noise
    shifted[:big] = own[:big] + np.abs(noise[:big])  # up on the first tensor,
    shifted[big:2 * big] = own[big:2 * big] - np.abs(noise[big:2 * big])  # down on the second
    lopsided = own + noise
    lopsided[-small:] = own[-small:] + np.abs(noise[-small:])  # up on the small one only
    rows = np.vstack([shifted, lopsided])
    whole = sign_skews(big_input(rows, own, None))
    assert whole[0] < 0.05 and whole[1] < 0.05  # balanced over all coordinates
    apart = sign_skews(big_input(rows, own, (big, big, big, small)))
    assert apart[0] > 0.95 and apart[1] < 0.05


def test_sign_test_skips_models_too_small_to_read() -> None:
    own = np.zeros(D, dtype=np.float32)
    rows = np.abs(honest(3)) + 1.0  # above the own model everywhere
    assert np.all(sign_skews(make_input(rows, [0.5] * 3, own=own)) == 0.0)
    assert np.all(dfl_guard(make_input(rows, [0.5] * 3, own=own), gate=np.inf).weights > 0)


def test_details_record_what_each_test_measured_of_each_model() -> None:
    """The rule's details say, per received model, its distance, the radius, whether it passed
    the tests before the probe, and its probe rise against the limit it was held to: a model
    that fails the gate is never probed (NaN), one that raises the loss past the limit is
    left out although it passed the tests before the probe."""
    own = np.zeros(D, dtype=np.float32)
    goal = np.ones(D, dtype=np.float32)
    peers = np.random.default_rng(11).standard_normal((6, D)) * 0.2
    models = np.vstack([peers, -goal * 0.2, RNG.random((1, D)) * 50]).astype(np.float32)

    def probe(vec: np.ndarray) -> float:
        return float(((vec - goal) ** 2).mean())

    plain = make_input(models, [0.5] * 8, own=own)
    inp = AggregationInput(own=own, own_score=0.9, models=plain.matrix, senders=plain.senders,
                           scores=plain.scores, reputations={}, probe=probe)
    result = dfl_guard(inp)
    d = result.details
    assert set(d) == {"distance", "gate", "sign", "radius", "tests_passed", "probe_rise",
                      "probe_typical", "probe_limit", "voices"}  # no head: no reversal or balance
    assert d["gate"][7] == 0.0 and np.all(d["gate"][:7] == 1.0)
    for values in d.values():
        assert values.shape == (8,) and values.dtype == np.float64
    np.testing.assert_allclose(d["distance"], np.linalg.norm(models - own, axis=1), rtol=1e-5)
    assert d["tests_passed"][7] == 0.0 and np.isnan(d["probe_rise"][7])  # the far one: gated
    assert d["tests_passed"][6] == 1.0 and d["probe_rise"][6] > d["probe_limit"][6]
    assert result.weights[6] == 0.0 and result.weights[7] == 0.0
    honest_rises = d["probe_rise"][:6]
    assert np.all(honest_rises <= d["probe_limit"][:6]) and np.all(result.weights[:6] > 0)
    typical = max(float(np.median(d["probe_rise"][:7])), 0.0)
    assert d["probe_typical"][0] == pytest.approx(typical)
    assert d["probe_limit"][0] == pytest.approx(2.0 * typical + 0.05)
    assert "probe_rise" not in dfl_guard(inp, probe=np.inf).details  # the probe off


def test_a_result_whose_details_do_not_match_its_weights_is_refused() -> None:
    with pytest.raises(ValueError, match=r"details\['rise'\]"):
        AggregationResult(np.zeros(3, np.float32), {}, np.zeros(2), {"rise": np.zeros(3)})


def test_reversal_drop_keeps_the_weight_of_a_slightly_reversed_reading_for_a_while() -> None:
    """With `reversal_drop` a skew between -reversal_drop and -reversal keeps the model's
    weight this round and costs its sender reputation (q = 0): a sender holding several classes,
    whose skew is near zero, is not left out for one reading below zero, one that reads so
    round after round sinks below the floor, and a clearly reversed update is left out at once."""
    base, own, models = skewed_round()
    several = np.full(CLASSES, 0.02, dtype=np.float32)
    several[5:] = -0.01
    several[-1] = -0.03  # skew (0.02 - 0.03) / (0.02 + 0.03) = -0.2
    wide = base + honest(1)[0] * np.float32(0.01)
    wide[HEAD] = base[HEAD] + several
    received = np.vstack([models[:4], wide, models[4:5]]).astype(np.float32)
    inp = head_input(received, own, base)
    skews = reversal_readings(inp, 0.0)
    assert -0.25 < skews[4] < -0.15 and skews[5] < -0.3
    one_level = dfl_guard(inp, gate=np.inf, lower=0)  # the skews as read above
    assert one_level.weights[4] == 0.0 and one_level.weights[5] == 0.0
    np.testing.assert_allclose(one_level.details["reversal_skew"], skews)
    reps: dict[str, float] = {}
    kept = []
    for _ in range(5):  # the same round again and again
        inp = head_input(received, own, base, reputations=reps)
        two_level = dfl_guard(inp, gate=np.inf, reversal_drop=0.3, lower=0)
        reps = two_level.reputations
        assert two_level.weights[5] == 0.0 and np.all(two_level.weights[:4] > 0)
        kept.append(two_level.weights[4] > 0.0)
    assert kept == [True, True, True, False, False]  # reputation 0.7, 0.49, 0.34, 0.24 < 0.3
    assert reps["n4"] == pytest.approx(0.7 ** 5) and reps["n0"] == 1.0
    with pytest.raises(ValueError, match="reversal_drop"):
        get_rule("dfl_guard")(inp, {"reversal": 0.2, "reversal_drop": 0.1})


def test_reversal_cost_zero_leaves_out_a_reversed_model_and_keeps_its_senders_reputation() -> None:
    """With `reversal_cost=0` a model that fails the reversal test alone counts for nothing this
    round, as by default, but its sender's reputation stays as it was, so a high floor reads the
    other tests and the probe only; a model that also fails another test still pays."""
    base, own, models = skewed_round()
    reps: dict[str, float] = {}
    paid: dict[str, float] = {}
    for _ in range(3):  # the same round again and again
        cheap = dfl_guard(head_input(models, own, base, reputations=reps), gate=np.inf,
                          reversal_cost=0.0)
        full = dfl_guard(head_input(models, own, base, reputations=paid), gate=np.inf)
        reps, paid = cheap.reputations, full.reputations
        for result in (cheap, full):
            assert np.all(result.weights[4:] == 0.0) and np.all(result.weights[:4] > 0.0)
            np.testing.assert_array_equal(result.details["reversal"], [1, 1, 1, 1, 0, 0])
    assert reps["n4"] == reps["n5"] == 1.0 and reps["n0"] == 1.0
    assert paid["n4"] == pytest.approx(0.7 ** 3) and paid["n0"] == 1.0
    # Failing the distance gate as well: the reversal test is not the only one, and it costs.
    far = models.copy()
    far[5, :HEAD.start] += np.float32(100.0)  # the head as it was: still reversed
    both = dfl_guard(head_input(far, own, base), reversal_cost=0.0)
    assert both.details["gate"][5] == 0.0 and both.details["reversal"][5] == 0.0
    assert both.reputations["n5"] == pytest.approx(0.7) and both.reputations["n4"] == 1.0
    # A half cost: q = 0.5 R.
    half = dfl_guard(head_input(models, own, base), gate=np.inf, reversal_cost=0.5)
    assert half.reputations["n4"] == pytest.approx(0.7 + 0.3 * 0.5)
    with pytest.raises(ValueError, match="reversal_cost"):
        get_rule("dfl_guard")(head_input(models, own, base), {"reversal_cost": 1.5})


def test_models_left_out_by_another_test_do_not_keep_the_median_reading_off() -> None:
    """A drifted receiver reads every honest update as reversed; six models that pass the
    reversal test but fail the balance test (every output bias raised, as ALIE's) made the
    failures no majority of what passed the gate, so the median reading stayed off and the
    honest models were left out with them. Only what every other test kept is counted now,
    and only it sets the median."""
    base, own, models = skewed_round()
    drifted = base.copy()
    drifted[HEAD] += np.float32(-0.05)
    drifted[HEAD.stop - 1] += np.float32(0.5)
    raised = np.repeat(models[:1], 6, axis=0)
    raised[:, HEAD] = drifted[HEAD] + np.float32(1.0) + np.arange(6, dtype=np.float32)[:, None] \
        * np.float32(0.1)
    received = np.concatenate([models, raised])
    inp = head_input(received, own, drifted)
    assert np.all(head_imbalance(inp)[6:] > 0.5) and np.all(head_skew(inp)[6:] > 0.0)
    everyone = passes_reversal(inp, 0.0)
    assert not everyone[:4].any()  # counted with them: no majority fails, no median reading
    kept = np.array([True] * 6 + [False] * 6)
    assert passes_reversal(inp, 0.0, kept).tolist() == [True] * 4 + [False] * 2 + [True] * 6
    result = dfl_guard(inp, gate=np.inf)
    assert np.all(result.weights[:4] > 0) and np.all(result.weights[4:] == 0)


def test_split_gates_and_clips_the_output_layer_apart_from_the_rest() -> None:
    # Six honest peers differ from the own model mostly on the output layer (norm 1.0 there,
    # 0.2 elsewhere); the seventh keeps an honest output layer and moves the rest by 0.9.
    rng = np.random.default_rng(5)
    own = np.zeros(D, dtype=np.float32)

    def direction(n: int) -> np.ndarray:
        v = rng.standard_normal(n)
        return v / np.linalg.norm(v)

    models = np.zeros((7, D), dtype=np.float32)
    for i in range(7):
        models[i, HEAD] = direction(CLASSES)
        models[i, :HEAD.start] = direction(HEAD.start) * (0.9 if i == 6 else 0.2)
    inp = AggregationInput(own=own, own_score=0.9, models=models,
                           senders=tuple(f"n{i}" for i in range(7)), scores=np.full(7, 0.5),
                           reputations={}, head=HEAD)
    params = {"sign": 1.0, "kin": 1.0, "reversal": 1.0, "balance": 1.0}
    whole = dfl_guard(inp, **params)
    parts = dfl_guard(inp, **params, split=1)
    # As one vector every model lies within 1.4 times the median distance: all pass unclipped.
    assert np.all(whole.weights > 0.0) and np.all(whole.details["radius"] > 1.3)
    # Apart, the seventh lies 4.5 median body distances out: gated; the others pass.
    assert parts.weights[6] == 0.0 and np.all(parts.weights[:6] > 0.0)
    assert np.allclose(parts.details["head_distance"], 1.0, atol=1e-6)
    # With the gate open, its body is clipped to 2 x that median, its output layer kept whole.
    opened = dfl_guard(inp, **params, split=1, gate=np.inf)
    share = opened.weights[6]
    body = opened.model[:HEAD.start] - (opened.weights[:6, None] * models[:6, :HEAD.start]).sum(0)
    assert np.linalg.norm(body) == pytest.approx(share * 2 * 0.2, rel=1e-4)
    head = opened.model[HEAD]
    assert np.allclose(head, (opened.weights[:, None] * models[:, HEAD]).sum(0), atol=1e-6)
    with pytest.raises(ValueError, match="parameter split must be 0 or 1"):
        dfl_guard(inp, split=2)


def test_probe_head_reads_what_a_received_output_layer_does_to_the_own_loss() -> None:
    """Colluders whose feature layers are honest and whose output layer (the last 10
    coordinates here) lowers one of the node's classes: the probe that leaves the output
    layer as the own model's sees nothing, the one that moves it too (`probe_head`) rejects
    them, and honest peers pass both."""
    own = np.zeros(D, dtype=np.float32)
    peers = np.random.default_rng(12).standard_normal((6, D)).astype(np.float32) * 0.2
    colluders = peers[:3].copy()
    colluders[:, HEAD] = 0.0
    colluders[:, D - 3] = -2.0  # the node's own class 7 lowered

    def probe(vec: np.ndarray) -> float:  # the loss reads the head's class 7 and the body
        return float(np.exp(-vec[D - 3]) + 0.01 * (vec[:D - CLASSES] ** 2).sum())

    inp = AggregationInput(own=own, own_score=0.9, models=np.vstack([peers, colluders]),
                           senders=tuple(f"n{i}" for i in range(9)), scores=np.full(9, 0.5),
                           reputations={}, head=HEAD, base=own, probe=probe)
    checks = {"reversal": 1.0, "balance": 1.0, "sign": 1.0, "kin": 1.0}
    assert np.all(dfl_guard(inp, **checks).weights > 0)
    weights = dfl_guard(inp, probe_head=1, **checks).weights
    assert np.all(weights[:6] > 0) and np.all(weights[6:] == 0)
    with pytest.raises(ValueError, match="probe_head must be 0 or 1"):
        dfl_guard(inp, probe_head=2)


def test_head_clip_scales_an_output_layer_that_boosts_one_class_to_the_own_bound() -> None:
    """The own update raised class 0 by 0.2 (0.18 above the class mean): an honest peer's head,
    raising its own classes by as much, is kept whole; one that raises a class by 2 is scaled
    until its largest class reading is `head_clip` x the own one; the aggregate's head takes
    that share of it, and without `head_clip` the whole of it."""
    from dfl_ray.defense.guard import head_factors

    base = np.zeros(D, dtype=np.float32)
    own = base.copy()
    own[HEAD] = -0.02
    own[HEAD.start] = 0.18 + 0.02  # class 0
    peers = np.tile(base, (3, 1))
    peers[:, HEAD] = -0.02
    peers[0, HEAD.start + 4] = peers[1, HEAD.start + 5] = 0.2
    peers[2, HEAD] = 2.0 / 9.0 * -1.0
    peers[2, HEAD.start + 3] = 2.0  # class 3 boosted, the class-sum kept at 0
    inp = head_input(peers.astype(np.float32), own, base)
    factors = head_factors(inp, 3.0)
    assert factors is not None and factors[0] == factors[1] == 1.0
    reading = peers[2, HEAD] - own[HEAD]
    peak = np.abs(reading - reading.mean()).max()
    own_peak = np.abs(own[HEAD] - own[HEAD].mean()).max()
    assert factors[2] == pytest.approx(3.0 * own_peak / peak)
    checks = {"reversal": 1.0, "balance": 1.0, "sign": 1.0, "kin": 1.0, "gate": np.inf,
              "clip": np.inf}
    whole = dfl_guard(inp, head_clip=np.inf, **checks)
    clipped = dfl_guard(inp, **checks)  # head_clip 3 by default
    assert clipped.details["head_factor"].tolist() == factors.tolist()
    np.testing.assert_allclose(whole.model[:HEAD.start], clipped.model[:HEAD.start])
    share = whole.weights[2]
    np.testing.assert_allclose(clipped.model[HEAD] - whole.model[HEAD],
                               share * (factors[2] - 1.0) * reading, atol=1e-6)
    assert head_factors(head_input(peers.astype(np.float32), base, base), 3.0) is None
    with pytest.raises(ValueError, match="head_clip"):
        dfl_guard(inp, head_clip=0.0)
