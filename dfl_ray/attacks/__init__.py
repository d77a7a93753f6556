"""Attacker behaviours: how a malicious node changes its training data or the model it publishes.

One module per family: `base` (the `Attack` interface and what attackers observe), `original`
(the DFL paper's set), `model` (sign flip, scaling, noise), `omniscient` (ALIE, IPM, min-max,
min-sum, mimic), `adaptive` (white-box attacks on this project's defenses: gate edge and kin
edge, probe edge, reversal edge and reversal fit against dfl_guard, shield edge against
dfl_shield, sentinel edge against dfl_sentinel), `backdoor` and `byzfl_attacks` (ByzFL's
published attacks: sign flip, IPM, ALIE, their optimised variants, mimic, inf, Gaussian).
`make_attack(kind, **params)` builds one by its configuration name.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from dfl_ray.attacks.adaptive import (
    GateEdge,
    KinEdge,
    ProbeEdge,
    ReversalEdge,
    ReversalFit,
    SentinelEdge,
    ShieldEdge,
)
from dfl_ray.attacks.backdoor import Backdoor, stamp_trigger
from dfl_ray.attacks.base import Attack
from dfl_ray.attacks.byzfl_attacks import (
    ByzflALIE,
    ByzflGaussian,
    ByzflInf,
    ByzflIPM,
    ByzflMimic,
    ByzflOptALIE,
    ByzflOptIPM,
    ByzflSignFlip,
)
from dfl_ray.attacks.model import GaussianNoise, ScaledUpdate, SignFlip
from dfl_ray.attacks.omniscient import ALIE, IPM, Mimic, MinMax, MinSum
from dfl_ray.attacks.original import (
    BlankImages,
    FreeRider,
    LabelShift,
    LabelShuffle,
    LabelSwap,
    MinusUniform,
    RandomModel,
    RandomModelByTurn,
)

_ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (Attack, RandomModel, RandomModelByTurn, MinusUniform, FreeRider, LabelShuffle,
                LabelShift, LabelSwap, BlankImages, SignFlip, ScaledUpdate, GaussianNoise, ALIE, IPM,
                MinMax, MinSum, Mimic, GateEdge, KinEdge, ProbeEdge, ReversalEdge, ReversalFit,
                ShieldEdge, SentinelEdge, Backdoor,
                ByzflSignFlip, ByzflIPM, ByzflALIE, ByzflOptIPM, ByzflOptALIE, ByzflMimic,
                ByzflInf, ByzflGaussian)
}

ATTACK_KINDS: tuple[str, ...] = tuple(_ATTACKS)


def _get(kind: str) -> type[Attack]:
    if kind not in _ATTACKS:
        raise ValueError(f"unknown attack kind {kind!r}; valid kinds: {list(ATTACK_KINDS)}")
    return _ATTACKS[kind]


def attack_params(kind: str) -> dict[str, Any]:
    """The parameters attack `kind` takes, each with its default value."""
    return {f.name: f.default for f in fields(_get(kind))}


def make_attack(kind: str, **params: Any) -> Attack:
    """The attack `kind` with `params`; raises ValueError naming an unknown kind or parameter.

    Configuration files and flags give every parameter as a number: a whole float (10.0) is
    taken for an integer parameter, any other value is checked by the attack itself.
    """
    allowed = attack_params(kind)
    for key, value in params.items():
        if key not in allowed:
            raise ValueError(f"attack {kind!r} has no parameter {key!r}; "
                             f"its parameters are {sorted(allowed)}")
        if (type(allowed[key]) is int and isinstance(value, float) and value.is_integer()):
            params[key] = int(value)
    return _get(kind)(**params)


__all__ = [
    "ALIE",
    "ATTACK_KINDS",
    "IPM",
    "Attack",
    "Backdoor",
    "BlankImages",
    "ByzflALIE",
    "ByzflGaussian",
    "ByzflIPM",
    "ByzflInf",
    "ByzflMimic",
    "ByzflOptALIE",
    "ByzflOptIPM",
    "ByzflSignFlip",
    "FreeRider",
    "GateEdge",
    "GaussianNoise",
    "KinEdge",
    "LabelShift",
    "LabelShuffle",
    "LabelSwap",
    "MinMax",
    "MinSum",
    "Mimic",
    "MinusUniform",
    "RandomModel",
    "RandomModelByTurn",
    "ReversalEdge",
    "ReversalFit",
    "ScaledUpdate",
    "SentinelEdge",
    "ShieldEdge",
    "SignFlip",
    "attack_params",
    "make_attack",
    "stamp_trigger",
]
