"""ByzFL's attacks as attack kinds: each publishes base + what ByzFL's attack gives for the
honest updates the attacker saw, checked against the attack's formula computed here."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import byzfl
import numpy as np
import pytest

from dfl_ray.attacks import Attack, attack_params, make_attack
from dfl_ray.attacks.byzfl_attacks import RULES

D = 400
KINDS = ("byzfl_sign_flip", "byzfl_ipm", "byzfl_alie", "byzfl_opt_ipm", "byzfl_opt_alie",
         "byzfl_mimic", "byzfl_inf", "byzfl_gaussian")


def models(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(D).astype(np.float32)
    trained = (base + 0.01 * rng.standard_normal(D)).astype(np.float32)
    return trained, base


def observations(k: int = 6, seed: int = 9) -> np.ndarray:
    """k honest updates around a common direction, as label-skewed peers send."""
    rng = np.random.default_rng(seed)
    direction = 0.01 * rng.standard_normal(D)
    return (direction + 0.01 * rng.standard_normal((k, D))).astype(np.float32)


def publish(attack: Attack, observed: np.ndarray | None, seed: int = 5) -> tuple[
        np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The published update (float64, out - base), the published model, and the honest rows
    (float64 [k + 1, D]: observed, then the attacker's own) it was made from."""
    trained, base = models()
    out = attack.poison_model(trained, base, np.random.default_rng(seed), 0, observed=observed)
    own = (trained - base)[None, :]
    rows = own if observed is None else np.vstack([observed, own])
    return out.astype(np.float64) - base, out, rows.astype(np.float32), base


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("observed", [None, observations()])
def test_kind_builds_and_publishes_a_fresh_float32_model(kind: str,
                                                         observed: np.ndarray | None) -> None:
    attack = make_attack(kind)
    assert attack.name == kind
    trained, base = models()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # byzfl_inf's infinities included
        out = attack.poison_model(trained, base, np.random.default_rng(1), 0, observed=observed)
    assert out.dtype == np.float32 and out.shape == (D,)
    assert not np.shares_memory(out, trained) and not np.shares_memory(out, base)
    np.testing.assert_array_equal((trained, base), models())
    if kind != "byzfl_inf":
        assert np.all(np.isfinite(out))
        assert not np.array_equal(out, trained) or observed is None


def test_only_the_attacks_of_the_honest_updates_observe() -> None:
    assert {kind for kind in KINDS if make_attack(kind).observes} == set(KINDS) - {
        "byzfl_inf", "byzfl_gaussian"}


def test_sign_flip_publishes_minus_the_honest_mean() -> None:
    update, _, rows, _ = publish(make_attack("byzfl_sign_flip"), observations())
    np.testing.assert_allclose(update, -rows.astype(np.float64).mean(axis=0), rtol=0, atol=1e-6)


def test_ipm_publishes_minus_tau_times_the_honest_mean() -> None:
    update, _, rows, _ = publish(make_attack("byzfl_ipm", tau=0.7), observations())
    np.testing.assert_allclose(update, -0.7 * rows.astype(np.float64).mean(axis=0),
                               rtol=0, atol=1e-6)
    alone, _, own, _ = publish(make_attack("byzfl_ipm", tau=3), None)  # an int tau is taken
    np.testing.assert_allclose(alone, -3.0 * own[0].astype(np.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("tau", [1.5, -2.0, 0.0])
def test_alie_adds_tau_sample_standard_deviations_to_the_honest_mean(tau: float) -> None:
    update, _, rows, _ = publish(make_attack("byzfl_alie", tau=tau), observations())
    u = rows.astype(np.float64)
    expected = u.mean(axis=0) + tau * u.std(axis=0, ddof=1)
    np.testing.assert_allclose(update, expected, rtol=0, atol=1e-6)


def test_alie_with_up_mirrors_the_shift_on_one_fixed_pattern() -> None:
    """An attacker that knows dfl_guard's sign test: the shift keeps its sign on a share `up`
    of the coordinates and is subtracted on the others, on the same coordinates every time."""
    update, _, rows, _ = publish(make_attack("byzfl_alie", up=0.6), observations())
    u = rows.astype(np.float64)
    mean, shift = u.mean(axis=0), 1.5 * u.std(axis=0, ddof=1)
    kept = np.isclose(update, mean + shift, rtol=0, atol=1e-6)
    mirrored = np.isclose(update, mean - shift, rtol=0, atol=1e-6)
    assert np.all(kept | mirrored)
    assert 0.5 < kept.mean() < 0.7  # about 0.6 of the 400 coordinates
    again, _, _, _ = publish(make_attack("byzfl_alie", up=0.6), observations(seed=3), seed=11)
    u2 = np.vstack([observations(seed=3), rows[-1:]]).astype(np.float64)
    np.testing.assert_array_equal(np.isclose(again, u2.mean(axis=0) - 1.5 * u2.std(axis=0, ddof=1),
                                             rtol=0, atol=1e-6), mirrored)


def test_keep_sum_zeroes_the_sum_of_the_last_coordinates_and_keeps_the_rest() -> None:
    """An attacker that knows dfl_guard's balance test: the last coordinates (the output bias)
    of its update sum to zero, every other coordinate is ByzFL's."""
    plain, _, _, _ = publish(make_attack("byzfl_alie"), observations())
    kept, _, _, _ = publish(make_attack("byzfl_alie", keep_sum=10.0), observations())
    assert abs(plain[-10:].sum()) > 1e-3 and abs(kept[-10:].sum()) < 1e-5
    np.testing.assert_allclose(kept[-10:], plain[-10:] - plain[-10:].mean(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(kept[:-10], plain[:-10])
    with pytest.raises(ValueError, match="keep_sum"):
        make_attack("byzfl_alie", keep_sum=-1)


def test_alie_publishes_the_trained_model_with_only_its_own_update() -> None:
    trained, base = models()
    for kind in ("byzfl_alie", "byzfl_opt_alie", "byzfl_opt_ipm"):
        out = make_attack(kind).poison_model(trained, base, np.random.default_rng(0), 0)
        np.testing.assert_array_equal(out, trained)


@pytest.mark.parametrize("rule", RULES)
def test_optimised_attacks_are_byzfls_against_the_named_rule(rule: str) -> None:
    f = 2
    update_ipm, _, rows, _ = publish(make_attack("byzfl_opt_ipm", rule=rule, f=f), observations())
    update_alie, _, _, _ = publish(make_attack("byzfl_opt_alie", rule=rule, f=f), observations())
    u = rows.astype(np.float64)
    mean, std = u.mean(axis=0), u.std(axis=0, ddof=1)
    # the form of IPM and of ALIE: a multiple of the mean, and the mean shifted by a multiple of
    # the standard deviation, with a factor found by the search (>= 0: it starts at 0, goes up)
    tau_ipm = -float(update_ipm @ mean) / float(mean @ mean)
    tau_alie = float((update_alie - mean) @ std) / float(std @ std)
    assert tau_ipm >= 0 and tau_alie >= 0
    np.testing.assert_allclose(update_ipm, -tau_ipm * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(update_alie, mean + tau_alie * std, rtol=1e-4, atol=1e-6)
    # and the factor ByzFL's own search finds against the same rule
    if rule != "cc":  # cc is this module's wrapper around ByzFL's CenteredClipping
        agg, pre = {
            "median": (byzfl.Median(), []),
            "trmean": (byzfl.TrMean(f=f), []),
            "krum": (byzfl.Krum(f=f), []),
            "multikrum": (byzfl.MultiKrum(f=f), []),
            "nnm_trmean": (byzfl.TrMean(f=f), [byzfl.NNM(f=f)]),
            "nnm_median": (byzfl.Median(), [byzfl.NNM(f=f)]),
        }[rule]
        expected = byzfl.Optimal_ALittleIsEnough(agg, pre_agg_list=pre, f=f)(rows)
        np.testing.assert_allclose(update_alie, expected, rtol=1e-5, atol=1e-6)


def byzfl_trmean_distance(update: np.ndarray, rows: np.ndarray, f: int) -> float:
    """How far ByzFL's TrMean(f) of the honest rows and f copies of `update` lands from the
    honest mean."""
    vectors = np.vstack([rows, np.repeat(update[None, :].astype(np.float32), f, axis=0)])
    return float(np.linalg.norm(byzfl.TrMean(f=f)(vectors) - rows.mean(axis=0)))


def test_optimised_alie_moves_byzfl_trmean_farther_than_tau_zero() -> None:
    f = 3
    update, _, rows, _ = publish(make_attack("byzfl_opt_alie", rule="trmean", f=f),
                                 observations())
    zero, _, _, _ = publish(make_attack("byzfl_alie", tau=0.0), observations())
    np.testing.assert_allclose(zero, rows.astype(np.float64).mean(axis=0), rtol=0, atol=1e-6)
    optimised = byzfl_trmean_distance(update, rows, f)
    assert optimised > 2.0 * byzfl_trmean_distance(zero, rows, f)
    assert optimised > byzfl_trmean_distance(
        publish(make_attack("byzfl_alie", tau=1.5), observations())[0], rows, f)


def test_optimised_attack_with_fewer_honest_rows_than_colluders_uses_one_copy_fewer() -> None:
    seen = observations(k=2)  # three honest rows, f = 5: the surrogate aggregates 2 copies
    update, _, rows, _ = publish(make_attack("byzfl_opt_alie", rule="trmean", f=5), seen)
    expected = byzfl.Optimal_ALittleIsEnough(byzfl.TrMean(f=2), pre_agg_list=[], f=2)(rows)
    np.testing.assert_allclose(update, expected, rtol=1e-5, atol=1e-6)


def test_mimic_copies_the_honest_update_number_epsilon() -> None:
    seen = observations()
    for epsilon in (0, 3, len(seen)):  # len(seen): the attacker's own update, last
        update, _, rows, _ = publish(make_attack("byzfl_mimic", epsilon=epsilon), seen)
        np.testing.assert_allclose(update, rows[epsilon], rtol=0, atol=1e-6)
    trained, base = models()
    out = make_attack("byzfl_mimic", epsilon=len(seen) + 1).poison_model(
        trained, base, np.random.default_rng(0), 0, observed=seen)
    np.testing.assert_array_equal(out, trained)  # no such row: published as trained


def test_inf_publishes_infinity_everywhere() -> None:
    _, out, _, _ = publish(make_attack("byzfl_inf"), observations())
    assert np.all(np.isposinf(out))


def test_gaussian_draws_byzfls_noise_from_the_attackers_generator() -> None:
    np.random.seed(123)
    update, out, _, _ = publish(make_attack("byzfl_gaussian", mu=0.5, sigma=2.0), None, seed=7)
    # numpy's global generator is where it was: its next draws are those of a fresh seed 123
    np.testing.assert_array_equal(np.random.random(4), np.random.RandomState(123).random(4))
    seed = int(np.random.default_rng(7).integers(2**32))
    expected = np.random.RandomState(seed).normal(0.5, 2.0, D)
    np.testing.assert_allclose(update, expected, rtol=1e-5, atol=1e-5)
    assert abs(update.mean() - 0.5) < 0.3 and abs(update.std() - 2.0) < 0.3
    again = publish(make_attack("byzfl_gaussian", mu=0.5, sigma=2.0), observations(), seed=7)[1]
    np.testing.assert_array_equal(again, out)  # the seed fixes it, observations do not matter
    other = publish(make_attack("byzfl_gaussian", mu=0.5, sigma=2.0), None, seed=8)[1]
    assert not np.array_equal(other, out)


def test_parameters_and_their_defaults() -> None:
    assert attack_params("byzfl_sign_flip") == {"honest_turns": 0, "keep_sum": 0}
    assert attack_params("byzfl_ipm") == {"honest_turns": 0, "keep_sum": 0, "tau": 2.0}
    assert attack_params("byzfl_alie") == {"honest_turns": 0, "keep_sum": 0, "tau": 1.5, "up": 1.0}
    for kind in ("byzfl_opt_ipm", "byzfl_opt_alie"):
        assert attack_params(kind) == {"honest_turns": 0, "keep_sum": 0, "rule": "nnm_trmean", "f": 3,
                                       "evals": 20}
    assert attack_params("byzfl_mimic") == {"honest_turns": 0, "keep_sum": 0, "epsilon": 0}
    assert attack_params("byzfl_gaussian") == {"honest_turns": 0, "keep_sum": 0, "mu": 0.0, "sigma": 1.0}


def test_whole_floats_and_rule_names_reach_the_attack() -> None:
    attack = make_attack("byzfl_opt_alie", rule="multikrum", f=2.0, evals=10.0)
    assert (attack.rule, attack.f, attack.evals) == ("multikrum", 2, 10)  # type: ignore[attr-defined]
    assert isinstance(attack.f, int)  # type: ignore[attr-defined]
    assert make_attack("byzfl_mimic", epsilon=2.0).epsilon == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(("kind", "params"), [
    ("byzfl_ipm", {"tau": 0.0}),
    ("byzfl_ipm", {"tau": math.inf}),
    ("byzfl_alie", {"tau": math.nan}),
    ("byzfl_alie", {"tau": "1.5"}),
    ("byzfl_alie", {"up": 0.4}),
    ("byzfl_alie", {"up": 1.1}),
    ("byzfl_alie", {"up": math.nan}),
    ("byzfl_opt_ipm", {"f": 0}),
    ("byzfl_opt_alie", {"f": 2.5}),
    ("byzfl_opt_alie", {"evals": 0}),
    ("byzfl_opt_ipm", {"rule": 1.0}),
    ("byzfl_mimic", {"epsilon": -1}),
    ("byzfl_mimic", {"epsilon": 1.5}),
    ("byzfl_gaussian", {"sigma": -0.1}),
    ("byzfl_gaussian", {"mu": math.inf}),
    ("byzfl_gaussian", {"sigma": True}),
])
def test_invalid_parameter_values_are_named(kind: str, params: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=f"attack parameter {next(iter(params))} "):
        make_attack(kind, **params)


@pytest.mark.parametrize("kind", ["byzfl_opt_ipm", "byzfl_opt_alie"])
def test_unknown_rule_is_named_with_the_valid_ones(kind: str) -> None:
    with pytest.raises(ValueError, match=r"rule must be one of \[.*'nnm_trmean'.*\], "
                                         r"got 'bulyan'"):
        make_attack(kind, rule="bulyan")


def test_importing_the_attacks_loads_neither_byzfl_nor_torch() -> None:
    """ByzFL (and with it torch) is imported on an attacker's first publication only."""
    code = ("import sys, dfl_ray.attacks; "
            "print(sorted(m for m in ('byzfl', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
