"""dfl_sentinel: own-norm bounds, the marginal validation test, reputation, noise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dfl_ray.defense import AggregationInput, rule_uses_base, rule_uses_probe
from dfl_ray.defense.sentinel import dfl_sentinel, marginal_effects

D = 4000


def make_input(honest: int = 6, attackers: list[np.ndarray] | None = None, seed: int = 0,
               reputations: dict[str, float] | None = None, probe: Any = None,
               head: slice | None = None, own_scale: float = 1.0,
               ) -> tuple[AggregationInput, np.ndarray, np.ndarray]:
    """Honest updates = a common direction + noise; attackers given as updates from base."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(D).astype(np.float32)
    common = 0.05 * rng.standard_normal(D)
    rows = [base + common + 0.05 * rng.standard_normal(D) for _ in range(honest)]
    rows += [base + a for a in (attackers or [])]
    own = (base + own_scale * (common + 0.05 * rng.standard_normal(D))).astype(np.float32)
    k = len(rows)
    inp = AggregationInput(own=own, own_score=0.9, models=np.stack(rows).astype(np.float32),
                           senders=tuple(f"s{i}" for i in range(k)), scores=np.full(k, 0.5),
                           reputations=reputations or {}, base=base, probe=probe, head=head)
    return inp, base, common


def toward(target: np.ndarray) -> Any:
    """A validation loss: squared distance to `target` (lower when a model moves toward it)."""
    return lambda vec: float(np.sum((vec.astype(np.float64) - target) ** 2))


def test_sentinel_needs_the_round_start_model() -> None:
    assert rule_uses_base("dfl_sentinel", {})
    inp, _, _ = make_input()
    bare = AggregationInput(own=inp.own, own_score=0.9, models=inp.models, senders=inp.senders,
                            scores=inp.scores, reputations={})
    with pytest.raises(ValueError, match="needs AggregationInput.base"):
        dfl_sentinel(bare)


def test_sentinel_without_probe_averages_honest_models_like_a_plain_mean() -> None:
    inp, _, _ = make_input()
    result = dfl_sentinel(inp, trim=0.0)
    mean = np.vstack([inp.matrix, inp.own[None]]).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(result.model, mean, atol=1e-5)
    np.testing.assert_allclose(result.weights, 1 / 7)


def test_sentinel_radius_is_the_own_update_norm_whatever_the_others_send() -> None:
    """A received update 3x the own update's length, along it, is clipped to clip x own norm;
    more, longer updates from others leave that radius where it was."""
    inp, base, common = make_input(honest=0, attackers=[np.zeros(D)])
    own_norm = float(np.linalg.norm(inp.own.astype(np.float64) - base))
    long = (3.0 * own_norm / np.linalg.norm(common)) * common
    for extra in (0, 3):
        inp, base, _ = make_input(honest=0, attackers=[long] + [5.0 * long] * extra)
        result = dfl_sentinel(inp, clip=1.5, gate=np.inf, tolerance=np.inf, trim=0.0)
        expected = (inp.own.astype(np.float64) + base + 1.5 * own_norm * long
                    / np.linalg.norm(long) + extra * (base + 1.5 * own_norm * long
                                                       / np.linalg.norm(long))) / (2 + extra)
        np.testing.assert_allclose(result.model, expected, atol=1e-4)


def test_sentinel_gate_drops_updates_far_beyond_the_own_norm() -> None:
    _, _, common = make_input()
    inp, _, _ = make_input(attackers=[40.0 * common] * 3)
    result = dfl_sentinel(inp)
    np.testing.assert_array_equal(result.weights[-3:], 0.0)
    assert result.reputations["s6"] == pytest.approx(0.7)


def test_sentinel_drops_a_model_whose_inclusion_raises_the_validation_loss() -> None:
    """The validation data favour the honest direction; a push against it earns quality 0, and
    a sender whose reputation that takes below the floor gets no weight."""
    _, base, common = make_input()
    inp, base, common = make_input(attackers=[-1.5 * common], probe=toward(base + 2.0 * common),
                                   reputations={"s6": 0.4})
    result = dfl_sentinel(inp, tolerance=0.2, trim=0.0)
    assert result.weights[-1] == 0.0
    assert np.all(result.weights[:-1] > 0.0)
    assert result.reputations["s6"] == pytest.approx(0.7 * 0.4)
    effects = marginal_effects(inp, np.ones(7), np.ones(7), np.ones(7, dtype=bool), floor=0.3,
                               own_weight=1.0)
    assert effects[-1] > 0.2 > effects[:-1].max()


def test_sentinel_reputation_follows_the_quality_the_loss_leaves() -> None:
    _, base, common = make_input()
    inp, _, _ = make_input(attackers=[-1.5 * common], probe=toward(base + 2.0 * common))
    effect = marginal_effects(inp, np.ones(7), np.ones(7), np.ones(7, dtype=bool), floor=0.3,
                               own_weight=1.0)[-1]
    tolerance = 4.0 * effect
    result = dfl_sentinel(inp, tolerance=tolerance, trim=0.0)
    reputation = 0.7 + 0.3 * (1.0 - effect / tolerance)
    assert result.reputations["s6"] == pytest.approx(reputation, rel=1e-6)
    weight = reputation * (1.0 - effect / tolerance)
    assert result.weights[-1] == pytest.approx(weight / (7.0 + weight), rel=1e-6)


def test_sentinel_judges_feature_layers_with_the_aggregate_output_layer() -> None:
    """A model that differs from an honest one only on the output layer adds nothing to the
    loss measured, however that layer moves the loss."""
    inp0, base, common = make_input()
    head = slice(D - 10, D)
    odd = common.copy()
    odd[head] += 5.0
    inp, _, _ = make_input(attackers=[odd], probe=toward(base + common), head=head)
    effects = marginal_effects(inp, np.ones(7), np.ones(7), np.ones(7, dtype=bool), floor=0.3,
                               own_weight=1.0)
    plain = marginal_effects(make_input(attackers=[common], probe=toward(base + common),
                                        head=head)[0],
                             np.ones(7), np.ones(7), np.ones(7, dtype=bool), floor=0.3,
                             own_weight=1.0)
    assert effects[-1] == pytest.approx(plain[-1], abs=1e-6)


def test_sentinel_lets_a_sender_below_the_floor_earn_its_way_back() -> None:
    _, base, common = make_input()
    inp, _, _ = make_input(reputations={"s5": 0.1}, probe=toward(base + common))
    result = dfl_sentinel(inp, floor=0.5)
    assert result.weights[5] == 0.0
    assert result.reputations["s5"] == pytest.approx(0.7 * 0.1 + 0.3)


def test_sentinel_noise_is_scaled_by_the_own_update_and_repeatable() -> None:
    inp, base, _ = make_input()
    quiet = dfl_sentinel(inp)
    a, b = dfl_sentinel(inp, noise=1.0), dfl_sentinel(inp, noise=1.0)
    np.testing.assert_array_equal(a.model, b.model)
    own_norm = float(np.linalg.norm(inp.own.astype(np.float64) - base))
    added = np.linalg.norm(a.model.astype(np.float64) - quiet.model)
    assert added == pytest.approx(own_norm, rel=0.05)


def test_sentinel_asks_for_the_probe_only_when_its_test_is_on() -> None:
    assert not rule_uses_probe("dfl_sentinel", {})
    assert rule_uses_probe("dfl_sentinel", {"tolerance": 0.2})


def test_sentinel_trims_each_feature_coordinate_and_averages_the_output_layer() -> None:
    """Three colluders on one side of every coordinate are cut out of the feature layers (the
    own model and six honest ones leave 10 values, three cut from each end); the output layer
    is the weighted mean."""
    _, _, common = make_input()
    head = slice(D - 10, D)
    inp, base, _ = make_input(attackers=[np.full(D, 0.3)] * 3, head=head)
    result = dfl_sentinel(inp, gate=np.inf, clip=np.inf, tolerance=np.inf, reversal=1.0, mix=0)
    rows = np.vstack([inp.matrix, inp.own[None]]).astype(np.float64)
    ordered = np.sort(rows[:, :D - 10], axis=0)
    np.testing.assert_allclose(result.model[:D - 10], ordered[3:7].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(result.model[D - 10:], rows[:, D - 10:].mean(axis=0), atol=1e-5)
    assert np.all(result.model[:D - 10] - base[:D - 10] < 0.3)


def test_sentinel_counts_a_non_finite_validation_loss_as_a_failure() -> None:
    inp, base, common = make_input()
    target = base + common

    def probe(vec: np.ndarray) -> float:
        return float("nan") if vec[0] > 10.0 else toward(target)(vec)

    odd = common.copy()
    odd[0] = 1000.0
    inp, _, _ = make_input(attackers=[odd], probe=probe)
    result = dfl_sentinel(inp, clip=np.inf, gate=np.inf, tolerance=0.2, trim=0.0)
    assert all(np.isfinite(v) for v in result.reputations.values())
    assert result.reputations["s6"] == pytest.approx(0.7)


def test_sentinel_leaves_near_copies_out_together_so_colluders_cannot_hide_behind_each_other() -> None:
    """Three copies of one harmful update inside a trimmed window: leaving one out changes
    little while the other two stay; leaving out every update similar to it shows the harm."""
    _, base, common = make_input()
    harmful = -1.0 * common
    inp, _, _ = make_input(attackers=[harmful] * 3, probe=toward(base + 2.0 * common))
    ones, which = np.ones(9), np.ones(9, dtype=bool)
    alone = marginal_effects(inp, ones, ones, which, floor=0.3, own_weight=1.0, trim=0.3)
    grouped = marginal_effects(inp, ones, ones, which, floor=0.3, own_weight=1.0, trim=0.3,
                               similar=0.9)
    assert grouped[-3:].min() > 2.0 * alone[-3:].max()
    np.testing.assert_allclose(grouped[:6], alone[:6])


def test_sentinel_trims_over_every_model_that_passed_whatever_its_weight() -> None:
    """A validation test that zeroes honest weights cannot hand colluders the trimmed set: the
    feature layers are trimmed over all models that passed the norm and reversal tests."""
    _, _, common = make_input()
    inp, _, _ = make_input(attackers=[np.full(D, 0.3)] * 3,
                           reputations={f"s{i}": 0.0 for i in range(6)})
    result = dfl_sentinel(inp, gate=np.inf, clip=np.inf, reversal=1.0, floor=0.5, mix=0)
    np.testing.assert_array_equal(result.weights[:6], 0.0)
    rows = np.vstack([inp.matrix, inp.own[None]]).astype(np.float64)
    np.testing.assert_allclose(result.model, np.sort(rows, axis=0)[3:7].mean(axis=0), atol=1e-5)


def test_sentinel_mixes_nearest_neighbours_so_far_colluders_leave_the_honest_mean() -> None:
    """With mixing, each honest model becomes the mean of its seven nearest (the seven honest
    ones), the colluders' means stay at the top of every coordinate and are trimmed: the
    feature layers are the honest mean exactly."""
    inp, base, _ = make_input(attackers=[np.full(D, 0.3)] * 3)
    result = dfl_sentinel(inp, gate=np.inf, clip=np.inf, reversal=1.0)
    honest = np.vstack([inp.matrix[:6], inp.own[None]]).astype(np.float64)
    np.testing.assert_allclose(result.model, honest.mean(axis=0), atol=1e-5)
