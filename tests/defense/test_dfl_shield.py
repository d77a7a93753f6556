"""dfl_shield: update-norm bounds from the median norm, the median-direction test, reputation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dfl_ray.defense import AggregationInput, get_rule, rule_uses_base, rule_uses_probe
from dfl_ray.defense.guard import probe_rises
from dfl_ray.defense.shield import dfl_shield, median_update_cosines, update_norms

D = 4000


def make_input(honest: int = 6, attackers: list[np.ndarray] | None = None, seed: int = 0,
               reputations: dict[str, float] | None = None, probe: Any = None,
               head: slice | None = None,
               ) -> tuple[AggregationInput, np.ndarray, np.ndarray]:
    """Honest updates = a common direction + noise; attackers given as updates from base."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(D).astype(np.float32)
    common = 0.05 * rng.standard_normal(D)
    rows = [base + common + 0.05 * rng.standard_normal(D) for _ in range(honest)]
    rows += [base + a for a in (attackers or [])]
    own = (base + common + 0.05 * rng.standard_normal(D)).astype(np.float32)
    k = len(rows)
    inp = AggregationInput(own=own, own_score=0.9, models=np.stack(rows).astype(np.float32),
                           senders=tuple(f"s{i}" for i in range(k)), scores=np.full(k, 0.5),
                           reputations=reputations or {}, base=base, probe=probe, head=head)
    return inp, base, common


def test_shield_needs_the_round_start_model() -> None:
    assert rule_uses_base("dfl_shield", {})
    inp, _, _ = make_input()
    bare = AggregationInput(own=inp.own, own_score=0.9, models=inp.models, senders=inp.senders,
                            scores=inp.scores, reputations={})
    with pytest.raises(ValueError, match="needs AggregationInput.base"):
        dfl_shield(bare)


def test_shield_averages_honest_models_like_a_plain_mean() -> None:
    inp, _, _ = make_input()
    result = dfl_shield(inp)
    mean = np.vstack([inp.matrix, inp.own[None]]).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(result.model, mean, atol=1e-5)
    np.testing.assert_allclose(result.weights, 1 / 7)


def test_shield_median_direction_test_rejects_opposed_updates_whatever_their_size() -> None:
    _, _, common = make_input()
    for size in (0.5, 1.0, 3.0):  # half, at, and beyond the honest norm
        against = -size * common / np.linalg.norm(common) * 0.05 * np.sqrt(2 * D)
        inp, _, _ = make_input(attackers=[against] * 3)
        result = dfl_shield(inp, oppose=0.1)
        np.testing.assert_array_equal(result.weights[-3:], 0.0)
        assert all(result.reputations[f"s{i}"] == pytest.approx(0.7) for i in (6, 7, 8))
        assert all(result.reputations[f"s{i}"] == 1.0 for i in range(6))


def test_shield_radius_cannot_be_widened_by_attackers() -> None:
    """Huge aligned updates from three of ten candidates: the median norm stays honest, the
    gate removes them, and the model moves no farther than without them."""
    inp_clean, base, common = make_input()
    huge = [50.0 * common] * 3
    inp, _, _ = make_input(attackers=huge)
    assert np.median(np.append(update_norms(inp), 1.0)) < 2 * np.median(update_norms(inp_clean))
    result = dfl_shield(inp)
    np.testing.assert_array_equal(result.weights[-3:], 0.0)
    step = np.linalg.norm(result.model.astype(np.float64) - base)
    assert step < 1.5 * np.linalg.norm(dfl_shield(inp_clean).model.astype(np.float64) - base)


def test_shield_clips_accepted_updates_to_clip_times_the_median_norm() -> None:
    _, _, common = make_input()
    long = 3.0 * common + 0.0  # aligned, 3x an honest norm: passes the gate (4), clipped at 2
    inp, base, _ = make_input(attackers=[long])
    result = dfl_shield(inp)
    r = float(np.median(np.append(update_norms(inp),
                                  np.linalg.norm(inp.own.astype(np.float64) - base))))
    assert result.weights[-1] > 0
    unclipped = dfl_shield(inp, clip=np.inf).model.astype(np.float64)
    clipped = result.model.astype(np.float64)
    share = result.weights[-1]
    # the difference is the share of the part of the long update beyond the radius
    excess = np.linalg.norm(long) - 2.0 * r
    assert np.linalg.norm(unclipped - clipped) == pytest.approx(share * excess, rel=1e-3)


def test_median_update_cosines_use_the_median_not_the_mean() -> None:
    _, _, common = make_input()
    inp, _, _ = make_input(attackers=[-40 * common] * 3)
    cos = median_update_cosines(inp, 0)
    assert (cos[:6] > 0.2).all() and (cos[6:] < -0.5).all()
    sampled = median_update_cosines(inp, 1000)
    assert (sampled[:6] > 0.1).all() and (sampled[6:] < -0.4).all()


def test_shield_reputation_recovers_and_floor_excludes() -> None:
    _, _, common = make_input()
    inp, _, _ = make_input(attackers=[-common], reputations={"s6": 0.2})
    result = dfl_shield(inp, oppose=0.1)
    assert result.reputations["s6"] == pytest.approx(0.14)
    inp2, _, _ = make_input(reputations={"s0": 0.2})
    result2 = dfl_shield(inp2)
    assert result2.reputations["s0"] == pytest.approx(0.44)
    assert result2.weights[0] > 0  # 0.44 >= floor 0.3


def test_shield_is_deterministic() -> None:
    inp, _, _ = make_input(attackers=[np.zeros(D)])
    rule = get_rule("dfl_shield")
    np.testing.assert_array_equal(rule(inp, {}).model, rule(inp, {}).model)


@pytest.mark.parametrize(("param", "value"), [("clip", 0.0), ("gate", -1.0), ("oppose", 1.5),
                                              ("probe_step", 0.0), ("probe_ratio", -1.0),
                                              ("probe_slack", float("nan")),
                                              ("beta", 0.0), ("coords", 2.5),
                                              ("own_weight", 0.0), ("entry", 1.5)])
def test_invalid_shield_params(param: str, value: float) -> None:
    inp, _, _ = make_input()
    with pytest.raises(ValueError, match=param):
        dfl_shield(inp, **{param: value})


def quadratic_probe(target: np.ndarray) -> Any:
    """A stand-in validation loss: squared distance to `target` (the model the node's data
    favours), so moving towards it lowers the loss and away raises it."""
    goal = target.astype(np.float64)

    def probe(vec: np.ndarray) -> float:
        return float(((vec.astype(np.float64) - goal) ** 2).sum())

    return probe


def test_probe_rejects_models_whose_body_raises_the_validation_loss() -> None:
    """Attackers pushing against the direction the node's data favours, at the honest norm,
    pass the norm bound but fail the probe; honest models pass."""
    _, base, common = make_input()
    goal = base + 3.0 * common  # the node's data favours the common direction
    against = -common * 1.5
    inp, _, _ = make_input(attackers=[against] * 3, probe=quadratic_probe(goal))
    result = dfl_shield(inp)
    np.testing.assert_array_equal(result.weights[-3:], 0.0)
    assert (result.weights[:6] > 0).all()


def test_probe_leaves_the_output_layer_as_the_own_model() -> None:
    seen: list[np.ndarray] = []

    def probe(vec: np.ndarray) -> float:
        seen.append(vec.copy())
        return 0.0

    _, _, common = make_input()
    inp, _, _ = make_input(attackers=[common], probe=probe, head=slice(D - 10, D))
    rises = probe_rises(inp, np.ones(inp.k), 0.5, np.ones(inp.k, dtype=bool))
    np.testing.assert_array_equal(rises, 0.0)
    assert len(seen) == inp.k + 1  # the own model, then one probe per model
    for vec in seen:
        np.testing.assert_array_equal(vec[-10:], inp.own[-10:])
    expected = inp.own[:-10] + 0.5 * (inp.rows[0][:-10] - inp.own[:-10])
    np.testing.assert_allclose(seen[1][:-10], expected, atol=1e-6)


def test_probe_off_with_an_infinite_ratio_and_without_a_probe() -> None:
    _, base, common = make_input()
    inp, _, _ = make_input(attackers=[-1.5 * common] * 3,
                           probe=quadratic_probe(base + 3.0 * common))
    assert (dfl_shield(inp, probe_ratio=np.inf).weights[-3:] > 0).all()
    plain, _, _ = make_input(attackers=[-1.5 * common] * 3)
    assert (dfl_shield(plain).weights[-3:] > 0).all()


def test_only_rules_that_call_the_probe_get_it() -> None:
    assert rule_uses_probe("dfl_shield", {})
    assert not rule_uses_probe("dfl_shield", {"probe_ratio": np.inf})
    with pytest.raises(ValueError, match="unknown aggregation rule"):
        rule_uses_probe("nope", {})


def test_invalid_probe_is_refused() -> None:
    inp, _, _ = make_input()
    with pytest.raises(ValueError, match="probe must be callable"):
        AggregationInput(own=inp.own, own_score=0.9, models=inp.models, senders=inp.senders,
                         scores=inp.scores, reputations={}, probe=3)  # type: ignore[arg-type]


def test_shield_penalty_costs_more_than_a_pass_earns() -> None:
    _, base, common = make_input()
    inp, _, _ = make_input(attackers=[-1.5 * common], reputations={"s6": 0.5, "s0": 0.5},
                           probe=quadratic_probe(base + 3.0 * common))
    result = dfl_shield(inp, beta=0.1, penalty=0.5)
    assert result.reputations["s6"] == pytest.approx(0.25)  # failed: halved
    assert result.reputations["s0"] == pytest.approx(0.55)  # passed: 0.9 x 0.5 + 0.1
    assert result.weights[-1] == 0.0 and result.weights[0] > 0.0
    # with penalty = beta it is dfl_guard's symmetric moving average
    same = dfl_shield(inp, beta=0.3, penalty=0.3)
    assert same.reputations["s6"] == pytest.approx(0.35)


def test_shield_entry_withholds_weight_from_a_pass_after_lost_standing() -> None:
    inp, _, _ = make_input(reputations={"s0": 0.2, "s1": 0.5})
    plain = dfl_shield(inp)
    assert plain.reputations["s0"] == pytest.approx(0.44) and plain.weights[0] > 0.0
    strict = dfl_shield(inp, entry=0.3)
    assert strict.reputations["s0"] == pytest.approx(0.44)  # the pass still counts ...
    assert strict.weights[0] == 0.0  # ... but buys no weight this round
    assert strict.weights[1] > 0.0  # s1 kept its standing (0.5 >= 0.3)
    assert dfl_shield(inp, entry=0.0).weights.tolist() == plain.weights.tolist()
