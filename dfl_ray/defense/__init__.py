"""Aggregation (defense) rules: pure functions from own + received models to a new model.

Every rule is called as `rule(inp, **params)` with an `AggregationInput` and returns an
`AggregationResult`; `RULES` maps the configuration names to them.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from dfl_ray.defense.base import AggregationInput, AggregationResult
from dfl_ray.defense.centered_clipping import centered_clipping, check_centered_clipping_params
from dfl_ray.defense.fedavg import fedavg, half_fedavg
from dfl_ray.defense.guard import check_dfl_guard_params, dfl_guard
from dfl_ray.defense.krum import check_krum_params, check_multi_krum_params, krum, multi_krum
from dfl_ray.defense.median import median
from dfl_ray.defense.reputation import check_dfl_reputation_params, dfl_reputation
from dfl_ray.defense.sentinel import check_dfl_sentinel_params, dfl_sentinel
from dfl_ray.defense.shield import check_dfl_shield_params, dfl_shield
from dfl_ray.defense.trimmed_mean import check_trimmed_mean_params, trimmed_mean
from dfl_ray.defense.trust import check_dfl_trust_params, dfl_trust

RULES: dict[str, Callable[..., AggregationResult]] = {
    "fedavg": fedavg,
    "half_fedavg": half_fedavg,
    "dfl_reputation": dfl_reputation,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "centered_clipping": centered_clipping,
    "dfl_trust": dfl_trust,
    "dfl_guard": dfl_guard,
    "dfl_shield": dfl_shield,
    "dfl_sentinel": dfl_sentinel,
}

# Value checks per rule, so a configuration can be rejected before the first aggregation.
_PARAM_CHECKS: dict[str, Callable[..., None]] = {
    "dfl_reputation": check_dfl_reputation_params,
    "trimmed_mean": check_trimmed_mean_params,
    "krum": check_krum_params,
    "multi_krum": check_multi_krum_params,
    "centered_clipping": check_centered_clipping_params,
    "dfl_trust": check_dfl_trust_params,
    "dfl_guard": check_dfl_guard_params,
    "dfl_shield": check_dfl_shield_params,
    "dfl_sentinel": check_dfl_sentinel_params,
}


def _get(name: str) -> Callable[..., AggregationResult]:
    if name not in RULES:
        raise ValueError(f"unknown aggregation rule {name!r}; valid rules: {sorted(RULES)}")
    return RULES[name]


def rule_params(name: str) -> dict[str, Any]:
    """The parameters rule `name` takes, each with its default value."""
    signature = inspect.signature(_get(name))
    return {p.name: p.default for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_rule_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError if rule `name` is unknown, or a parameter is unknown or out of range."""
    allowed = rule_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"aggregation rule {name!r} has no parameter {unknown[0]!r}; "
                         f"its parameters are {sorted(allowed)}")
    if name in _PARAM_CHECKS:
        _PARAM_CHECKS[name](**params)


def rule_uses_base(name: str, params: Mapping[str, Any]) -> bool:
    """Whether rule `name` with `params` reads `AggregationInput.base` (the round-start model).

    Nodes keep no second copy of their model unless their rule reads it.
    """
    # dfl_shield and dfl_sentinel read every update from it; dfl_guard only for its opposition
    # test, which oppose = 1 turns off.
    if name in ("dfl_shield", "dfl_sentinel"):
        return True
    return _test_on(name, params, "oppose")


def rule_uses_head(name: str, params: Mapping[str, Any]) -> bool:
    """Whether rule `name` with `params` reads the output-layer bias update
    (`AggregationInput.head` with `head_base` or `base`).

    Nodes then keep the round-start bias (one value per class) instead of a whole model.
    """
    return _test_on(name, params, "reversal")


DEFAULT_PROBE_CLASSES: dict[str, str] = {"dfl_guard": "own"}
"""The validation loss (`defense.probe_classes`) a rule's nodes read when none is set; "all"
for rules not named. dfl_guard's probe reads the own classes (docs/results.md, "The default
dfl_guard (validation probe over the own classes) against the suite")."""


def default_probe_classes(name: str) -> str:
    """The `defense.probe_classes` rule `name` runs with when none is set."""
    return DEFAULT_PROBE_CLASSES.get(name, "all")


def rule_uses_probe(name: str, params: Mapping[str, Any]) -> bool:
    """Whether rule `name` with `params` calls `AggregationInput.probe` (the node's validation
    loss), so that nodes hand it only to rules that spend the scoring time."""
    test = {"dfl_guard": "probe", "dfl_shield": "probe_ratio",
            "dfl_sentinel": "tolerance"}.get(name)
    if test is None:
        _get(name)
        return False
    return float(params.get(test, rule_params(name)[test])) < math.inf


def _test_on(name: str, params: Mapping[str, Any], test: str) -> bool:
    """Whether dfl_guard's (or dfl_shield's, dfl_sentinel's) `test`, a threshold that 1 turns
    off, is on; False for other rules (and for a test the rule does not have)."""
    if name not in ("dfl_guard", "dfl_shield", "dfl_sentinel"):
        _get(name)  # unknown names still raise
        return False
    if test not in rule_params(name):
        return False
    return float(params.get(test, rule_params(name)[test])) < 1.0


def get_rule(name: str) -> Callable[[AggregationInput, Mapping[str, Any]], AggregationResult]:
    """Rule `name` as a function of (input, parameter mapping); raises ValueError if unknown."""
    rule = _get(name)

    def apply(inp: AggregationInput, params: Mapping[str, Any]) -> AggregationResult:
        check_rule_params(name, params)
        return rule(inp, **params)

    apply.__name__ = name
    apply.__doc__ = rule.__doc__
    return apply


__all__ = [
    "RULES",
    "AggregationInput",
    "AggregationResult",
    "centered_clipping",
    "check_rule_params",
    "default_probe_classes",
    "dfl_guard",
    "dfl_reputation",
    "dfl_sentinel",
    "dfl_shield",
    "dfl_trust",
    "fedavg",
    "get_rule",
    "half_fedavg",
    "krum",
    "median",
    "multi_krum",
    "rule_params",
    "rule_uses_base",
    "rule_uses_head",
    "rule_uses_probe",
    "trimmed_mean",
]
