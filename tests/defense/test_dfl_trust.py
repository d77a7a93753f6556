"""dfl_trust: gating of far models, clipping, and a reputation that recovers."""

from __future__ import annotations

import numpy as np
import pytest

from dfl_ray.defense import AggregationInput, dfl_trust

D = 50
HONEST = ("h0", "h1", "h2", "h3", "h4", "h5")


def honest_round(rng: np.random.Generator, base: np.ndarray, count: int = len(HONEST)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Own model and `count` honest models: the same base plus small, independent updates."""
    own = base + 0.01 * rng.standard_normal(D).astype(np.float32)
    models = base + 0.01 * rng.standard_normal((count, D)).astype(np.float32)
    return own.astype(np.float32), models.astype(np.float32)


def with_attackers(rng: np.random.Generator, base: np.ndarray, scores: np.ndarray,
                   reputations: dict[str, float]) -> AggregationInput:
    """Six honest models, a U(0, 0.001) random model and a 10x scaled update."""
    own, honest = honest_round(rng, base)
    random_model = rng.random(D, dtype=np.float32) * np.float32(0.001)
    scaled = base + 10.0 * 0.01 * rng.standard_normal(D).astype(np.float32)
    models = np.vstack([honest, random_model, scaled]).astype(np.float32)
    return AggregationInput(own, 0.9, models, (*HONEST, "rand", "scaled"), scores, reputations)


def base_model(seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(D)).astype(np.float32)


def test_dfl_trust_rejects_random_and_scaled_models_among_honest_ones() -> None:
    rng = np.random.default_rng(1)
    base = base_model()
    # The attackers score high: with label skew a garbage model can; geometry must catch it.
    scores = np.array([0.85, 0.9, 0.88, 0.92, 0.87, 0.9, 0.95, 0.95])
    inp = with_attackers(rng, base, scores, {})
    out = dfl_trust(inp, initial=1.0, beta=0.25, margin=0.25)
    assert out.weights[6] == 0.0 and out.weights[7] == 0.0
    assert np.all(out.weights[:6] > 0.0)
    honest_mean = np.vstack([inp.own, inp.models[:6]]).mean(axis=0)
    assert np.linalg.norm(out.model - honest_mean) < 0.02
    assert out.reputations["rand"] == pytest.approx(0.75)  # (1 - beta) * 1 + beta * 0
    assert out.reputations["scaled"] == pytest.approx(0.75)
    # Median score of own + accepted is 0.9; h0 at 0.85 observes q = 1 - 0.05 / 0.25 = 0.8.
    assert out.reputations["h0"] == pytest.approx(0.95)
    assert out.reputations["h3"] == pytest.approx(1.0)


def test_dfl_trust_survives_a_buffer_filled_mostly_by_new_attackers() -> None:
    # Own model + one honest peer against three random models that agree with each other: a
    # plain median would sit among the attackers. The own vote (1) and the honest newcomer's
    # (0.4) outweigh the three newcomers (1.2).
    rng = np.random.default_rng(12)
    base = base_model()
    own, honest = honest_round(rng, base, count=1)
    randoms = rng.random((3, D), dtype=np.float32) * np.float32(0.001)
    models = np.vstack([honest, randoms]).astype(np.float32)
    inp = AggregationInput(own, 0.9, models, ("h0", "r0", "r1", "r2"), np.full(4, 0.9), {})
    out = dfl_trust(inp, initial=0.4, own_weight=1.0)
    assert out.weights[0] > 0.0 and out.weights[1:].tolist() == [0.0, 0.0, 0.0]
    assert np.linalg.norm(out.model - base) < 0.1
    # Known attackers (reputation 0) have no say even when they are four to two.
    four = np.vstack([honest, randoms, randoms[:1] + np.float32(1e-4)]).astype(np.float32)
    known = {"r0": 0.0, "r1": 0.0, "r2": 0.0, "r3": 0.0}
    inp = AggregationInput(own, 0.9, four, ("h0", "r0", "r1", "r2", "r3"), np.full(5, 0.9), known)
    out = dfl_trust(inp, initial=0.4)
    assert out.weights[0] > 0.0 and not out.weights[1:].any()


def test_dfl_trust_keeps_honest_updates_among_free_riders() -> None:
    # Four untrained copies of the base hold most votes and sit at the centre; the honest
    # update must still pass, because the own (trained) model's distance bounds D from below.
    rng = np.random.default_rng(13)
    base = base_model()
    own, honest = honest_round(rng, base, count=1)
    riders = base + 1e-5 * rng.standard_normal((4, D)).astype(np.float32)
    models = np.vstack([honest, riders]).astype(np.float32)
    senders = ("h0", "f0", "f1", "f2", "f3")
    out = dfl_trust(AggregationInput(own, 0.9, models, senders, np.full(5, 0.9), {}), initial=0.4)
    assert out.weights[0] > 0.0
    assert out.reputations["h0"] == pytest.approx(0.55)  # accepted: q = 1


def test_dfl_trust_reputations_over_fifty_rounds() -> None:
    rng = np.random.default_rng(2)
    base = base_model()
    reputations: dict[str, float] = {}
    after_slip = 1.0
    for round_ in range(50):
        scores = 0.9 + 0.02 * rng.standard_normal(8).clip(-2, 2)
        scores[6:] = 0.1
        if round_ == 10:
            scores[0] = 0.2  # one bad observation of an honest sender
        inp = with_attackers(rng, base, scores, reputations)
        out = dfl_trust(inp)
        reputations = out.reputations
        assert out.weights[6] == 0.0 and out.weights[7] == 0.0
        if round_ == 10:
            after_slip = reputations["h0"]
            assert out.weights[0] > 0.0  # a slip lowers the weight, it does not exclude
        # Honest models keep moving together, as in training.
        base = (out.model + 0.005 * rng.standard_normal(D)).astype(np.float32)
    assert after_slip < 0.8
    assert all(reputations[s] > 0.95 for s in HONEST)
    assert reputations["rand"] < 1e-3 and reputations["scaled"] < 1e-3


def test_dfl_trust_does_not_penalise_equally_low_scores() -> None:
    # Under label skew every model may score low on my data; relative scoring is unaffected.
    rng = np.random.default_rng(4)
    own, models = honest_round(rng, base_model())
    inp = AggregationInput(own, 0.3, models, HONEST, np.full(6, 0.3), {"h0": 0.6})
    out = dfl_trust(inp, initial=0.4, beta=0.25)
    assert out.reputations["h0"] == pytest.approx(0.7)  # 0.75 * 0.6 + 0.25 * 1
    assert all(out.reputations[s] == pytest.approx(0.55) for s in HONEST[1:])  # q = 1


def test_dfl_trust_scores_relative_to_the_median() -> None:
    rng = np.random.default_rng(5)
    own, models = honest_round(rng, base_model())
    scores = np.array([0.9, 0.9, 0.9, 0.9, 0.8, 0.5])
    out = dfl_trust(AggregationInput(own, 0.9, models, HONEST, scores, {}), margin=0.25,
                    initial=1.0, beta=0.25)
    # Median 0.9: q = 1 - 0.1 / 0.25 = 0.6 for h4 and 0 for h5.
    assert out.reputations["h4"] == pytest.approx(0.75 + 0.25 * 0.6)
    assert out.reputations["h5"] == pytest.approx(0.75)


def test_dfl_trust_clipping_keeps_the_result_near_the_centre() -> None:
    rng = np.random.default_rng(6)
    base = base_model()
    own, models = honest_round(rng, base, count=4)
    models[3] = base + 1.0  # far, but let through with gating off
    inp = AggregationInput(own, 0.9, models, HONEST[:4], np.full(4, 0.9), {})
    rows = np.vstack([own, models])
    centre = np.median(rows, axis=0)
    spread = np.median(np.linalg.norm(rows - centre, axis=1))
    out = dfl_trust(inp, gate=float("inf"), clip=1.0, own_weight=0.0)
    # Every model entering the mean lies in the ball of radius `spread`, so the mean does too.
    assert np.linalg.norm(out.model - centre) <= spread * (1 + 1e-5)
    unclipped = dfl_trust(inp, gate=float("inf"), clip=float("inf"), own_weight=0.0)
    assert np.linalg.norm(unclipped.model - centre) > 2 * spread


def test_dfl_trust_floor_excludes_distrusted_senders() -> None:
    rng = np.random.default_rng(7)
    own, models = honest_round(rng, base_model(), count=3)
    inp = AggregationInput(own, 0.9, models, HONEST[:3], np.full(3, 0.9), {"h1": 0.05})
    out = dfl_trust(inp, floor=0.3, initial=1.0, beta=0.25, gate=float("inf"))
    assert out.reputations["h1"] == pytest.approx(0.2875)  # 0.75 * 0.05 + 0.25
    # Weights R_i / (own_weight + sum R) over the counted models: 1 / (1 + 1 + 1).
    np.testing.assert_allclose(out.weights, [1 / 3.0, 0.0, 1 / 3.0])


def test_dfl_trust_keeps_own_model_when_nothing_has_weight() -> None:
    rng = np.random.default_rng(8)
    own, models = honest_round(rng, base_model(), count=2)
    inp = AggregationInput(own, 0.9, models, HONEST[:2], np.full(2, 0.9), {"h0": 0.0, "h1": 0.0})
    out = dfl_trust(inp, own_weight=0.0, floor=0.5)
    np.testing.assert_array_equal(out.model, own)
    assert not np.shares_memory(out.model, own)
    assert out.weights.tolist() == [0.0, 0.0]


def test_dfl_trust_keeps_senders_outside_the_buffer() -> None:
    rng = np.random.default_rng(9)
    own, models = honest_round(rng, base_model(), count=2)
    inp = AggregationInput(own, 0.9, models, HONEST[:2], np.full(2, 0.9), {"old": 0.4})
    assert dfl_trust(inp).reputations["old"] == 0.4


@pytest.mark.parametrize(
    ("params", "name"),
    [({"gate": -1.0}, "gate"), ({"clip": float("nan")}, "clip"), ({"beta": 0.0}, "beta"),
     ({"beta": 1.5}, "beta"), ({"margin": 0.0}, "margin"), ({"initial": 2.0}, "initial"),
     ({"floor": -0.1}, "floor"), ({"own_weight": -1.0}, "own_weight"), ({"gate": True}, "gate")],
)
def test_invalid_dfl_trust_params(params: dict[str, object], name: str) -> None:
    rng = np.random.default_rng(10)
    own, models = honest_round(rng, base_model(), count=2)
    inp = AggregationInput(own, 0.9, models, HONEST[:2], np.full(2, 0.9), {})
    with pytest.raises(ValueError, match=f"parameter {name} "):
        dfl_trust(inp, **params)  # type: ignore[arg-type]
