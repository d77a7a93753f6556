"""The rule registry, parameter checking, and properties every rule must have."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dfl_ray.defense import RULES, AggregationInput, check_rule_params, get_rule, rule_params
from dfl_ray.defense.aggregate import stack_candidates

ALL_RULES = sorted(RULES)


def sample_input(k: int, seed: int = 11) -> AggregationInput:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(12).astype(np.float32)
    own = (base + 0.01 * rng.standard_normal(12)).astype(np.float32)
    models = (base + 0.01 * rng.standard_normal((k, 12))).astype(np.float32)
    models[-1] = rng.random(12, dtype=np.float32) * np.float32(0.001)
    models.flags.writeable = False
    senders = tuple(f"{i:040x}" for i in range(k))
    scores = rng.uniform(0.5, 1.0, k)
    # base: the round-start model, for rules that read updates (dfl_shield); the others ignore it.
    return AggregationInput(own, 0.8, models, senders, scores, {senders[0]: 0.5, "gone": 0.2},
                            base=base)


def test_registry_holds_every_rule() -> None:
    # A subset: the registry is open to further rules.
    assert set(RULES) >= {"fedavg", "half_fedavg", "dfl_reputation", "median", "trimmed_mean",
                          "krum", "multi_krum", "centered_clipping", "dfl_trust"}


def test_rule_params_lists_defaults() -> None:
    assert rule_params("fedavg") == {}
    assert rule_params("trimmed_mean") == {"trim": 0.2}
    assert rule_params("dfl_reputation") == {"delta": 0.05, "initial": 1.0}
    assert rule_params("multi_krum") == {"f": None, "m": None}
    assert set(rule_params("dfl_trust")) == {"gate", "clip", "beta", "margin", "initial",
                                             "floor", "own_weight"}


def test_get_rule_applies_parameters() -> None:
    inp = sample_input(4)
    out = get_rule("dfl_reputation")(inp, {"delta": 0.5})
    worst = inp.senders[int(np.argmin(inp.scores))]
    assert out.reputations[worst] == pytest.approx(max(0.0, inp.reputations.get(worst, 1.0) - 0.5))


def test_integral_float_counts_are_accepted() -> None:
    # Configurations parse every parameter as a float.
    inp = sample_input(4)
    a = get_rule("multi_krum")(inp, {"f": 1.0, "m": 2.0})
    b = get_rule("multi_krum")(inp, {"f": 1, "m": 2})
    np.testing.assert_array_equal(a.model, b.model)


def test_invalid_rule_name_lists_valid_names() -> None:
    for call in (lambda: get_rule("fedsgd"), lambda: rule_params("fedsgd"),
                 lambda: check_rule_params("fedsgd", {})):
        with pytest.raises(ValueError, match="unknown aggregation rule 'fedsgd'.*dfl_trust"):
            call()


def test_invalid_rule_param_name_is_named() -> None:
    with pytest.raises(ValueError, match="has no parameter 'gate'.*'trim'"):
        get_rule("trimmed_mean")(sample_input(4), {"gate": 2.0})
    with pytest.raises(ValueError, match="has no parameter 'trim'"):
        check_rule_params("fedavg", {"trim": 0.1})


def test_invalid_rule_param_value_is_caught_before_aggregation() -> None:
    with pytest.raises(ValueError, match="parameter trim"):
        check_rule_params("trimmed_mean", {"trim": 0.7})
    with pytest.raises(ValueError, match="parameter m "):
        check_rule_params("multi_krum", {"m": 1.5})
    check_rule_params("dfl_trust", {"gate": math.inf, "beta": 0.5})


@pytest.mark.parametrize("name", ALL_RULES)
@pytest.mark.parametrize("k", [1, 2, 5])
def test_rule_returns_fresh_well_formed_result(name: str, k: int) -> None:
    inp = sample_input(k)
    own_before, models_before = inp.own.copy(), inp.models.copy()
    reputations_before = dict(inp.reputations)
    out = get_rule(name)(inp, {})
    assert out.model.dtype == np.float32 and out.model.shape == inp.own.shape
    assert np.isfinite(out.model).all()
    assert not np.shares_memory(out.model, inp.own)
    assert not np.shares_memory(out.model, inp.models)
    assert out.weights.shape == (k,) and np.all(out.weights >= 0.0)
    assert out.weights.sum() <= 1.0 + 1e-9
    assert set(reputations_before) <= set(out.reputations)
    assert out.reputations is not inp.reputations
    # Inputs are untouched.
    np.testing.assert_array_equal(inp.own, own_before)
    np.testing.assert_array_equal(inp.models, models_before)
    assert dict(inp.reputations) == reputations_before


@pytest.mark.parametrize("name", ALL_RULES)
def test_rule_keeps_own_model_when_all_agree(name: str) -> None:
    own = np.array([0.5, -1.0, 2.0], np.float32)
    models = np.tile(own, (3, 1))
    inp = AggregationInput(own, 0.9, models, ("a", "b", "c"), np.full(3, 0.9), {},
                           base=own - np.float32(0.1))
    out = get_rule(name)(inp, {})
    np.testing.assert_allclose(out.model, own, rtol=1e-6)


# Each rule with its defaults, plus the settings that take other paths through the code.
RULE_SETTINGS = [(name, {}) for name in ALL_RULES] + [
    ("dfl_guard", {"oppose": 0.4}),
    ("dfl_guard", {"oppose": 0.4, "coords": 100}),
    ("dfl_guard", {"margin": 0.2, "clip": 1.0, "gate": 1.5}),
    ("centered_clipping", {"iters": 3}),
    ("multi_krum", {"f": 1, "m": 2}),
    ("dfl_trust", {"initial": 0.9}),
]


def as_separate_rows(inp: AggregationInput) -> AggregationInput:
    """The same input with each received model in its own read-only array."""
    rows = tuple(np.array(row) for row in inp.matrix)
    for row in rows:
        row.flags.writeable = False
    return AggregationInput(inp.own, inp.own_score, rows, inp.senders, inp.scores,
                            inp.reputations, base=inp.base)


@pytest.mark.parametrize(("name", "params"), RULE_SETTINGS)
@pytest.mark.parametrize("k", [1, 3, 6])
def test_rule_gives_the_same_result_for_rows_and_for_their_matrix(
    name: str, params: dict[str, float], k: int
) -> None:
    rng = np.random.default_rng(k)
    base = rng.standard_normal(1000).astype(np.float32)
    own = (base + 0.05 * rng.standard_normal(1000)).astype(np.float32)
    models = (base + 0.05 * rng.standard_normal((k, 1000))).astype(np.float32)
    models[-1] = 2 * base - models[-1]  # an opposed update, for the rules that look
    senders = tuple(f"s{i}" for i in range(k))
    stacked = AggregationInput(own, 0.8, models, senders, rng.uniform(0.3, 1.0, k),
                               {senders[0]: 0.5, "gone": 0.2}, base=base)
    separate = as_separate_rows(stacked)
    by_matrix = get_rule(name)(stacked, params)
    by_rows = get_rule(name)(separate, params)
    np.testing.assert_array_equal(by_rows.model, by_matrix.model)
    np.testing.assert_array_equal(by_rows.weights, by_matrix.weights)
    assert by_rows.reputations == by_matrix.reputations
    assert not any(np.shares_memory(by_rows.model, row) for row in separate.rows)
    np.testing.assert_array_equal(np.stack(separate.rows), models)  # the rows are untouched


@pytest.mark.parametrize("name", ALL_RULES)
def test_rule_reads_models_from_an_earlier_stack(name: str) -> None:
    # Models a caller stacked with the same kernel the rules stack with stay untouched: no
    # kernel keeps a buffer that a later call could overwrite.
    inp = sample_input(4)
    expected = get_rule(name)(inp, {})
    stacked = stack_candidates(inp.own, inp.rows)
    held = AggregationInput(inp.own, inp.own_score, stacked[1:], inp.senders, inp.scores,
                            inp.reputations, base=inp.base)
    out = get_rule(name)(held, {})
    np.testing.assert_array_equal(out.model, expected.model)
    np.testing.assert_array_equal(stacked[1:], inp.matrix)
    assert not np.shares_memory(out.model, stacked)


@pytest.mark.parametrize("name", ALL_RULES)
def test_rule_results_of_successive_calls_alias_nothing(name: str) -> None:
    # Many nodes may aggregate in turn on one thread; each keeps the model its rule returned.
    inputs = [as_separate_rows(sample_input(4, seed)) for seed in (1, 2, 3)]
    results, kept = [], []
    for inp in inputs:
        results.append(get_rule(name)(inp, {}))
        kept.append(results[-1].model.copy())
    for i, out in enumerate(results):
        others = [r.model for j, r in enumerate(results) if j != i]
        arrays = [*others, *(x for inp in inputs for x in (inp.own, *inp.rows))]
        assert not any(np.shares_memory(out.model, x) for x in arrays)
        np.testing.assert_array_equal(out.model, kept[i])
