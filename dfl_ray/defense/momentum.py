"""Server momentum on top of any aggregation rule (FedAvgM).

Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification", arXiv 1909.06335, 2019: the server keeps a velocity of the global model's
moves, v <- beta v + (w_prev - w_avg), and steps w_new = w_prev - v. On label-skewed shards
each round's average moves the model only part of the way the honest nodes agree on; momentum
keeps the shared direction and lets the per-node drift, which changes sign from round to round,
cancel.

A DFL node has no server, so every node applies it to its own aggregation: `anchor` is the
model the node left its previous aggregation with (the common initial model before the first),
`result` what the rule returned now. The rule has already decided what to trust; momentum only
carries on the trusted moves, so a model the rule rejected never enters the velocity.

Momentum carries whatever the rule lets through: against attackers that the rule only partly
stops, it carries their moves on as well. The default beta for dfl_guard, 0.5, favours label
skew, the setting DFL is for (the runs behind that choice are in docs/results.md, "Figures
formerly in defense docstrings").
"""

from __future__ import annotations

import numpy as np

# Rules that run with momentum unless the configuration says otherwise. The others (the
# original's rules and the published robust aggregators) run as their sources state them.
DEFAULT_MOMENTUM: dict[str, float] = {"dfl_guard": 0.5, "dfl_shield": 0.5, "dfl_sentinel": 0.5}


def default_momentum(rule: str) -> float:
    """The server momentum rule `rule` runs with when `defense.momentum` is not set."""
    return DEFAULT_MOMENTUM.get(rule, 0.0)


def check_momentum(beta: float) -> float:
    """`beta` as a float in [0, 1), or ValueError naming the range."""
    if isinstance(beta, bool) or not isinstance(beta, int | float | np.floating | np.integer):
        raise ValueError(f"momentum must be a number in [0, 1), got {beta!r}")
    value = float(beta)
    if not 0.0 <= value < 1.0:  # also false for NaN
        raise ValueError(f"momentum must be in [0, 1), got {beta!r}")
    return value


def momentum_step(anchor: np.ndarray, result: np.ndarray, velocity: np.ndarray,
                  beta: float) -> np.ndarray:
    """Update `velocity` in place to beta * velocity + (anchor - result); return anchor - velocity.

    All three are float32 [d]; the returned model is a fresh array. With beta 0 this returns a
    copy of `result` (up to float32 rounding) and leaves velocity = anchor - result.
    """
    beta = check_momentum(beta)
    for name, arr in (("result", result), ("velocity", velocity)):
        if arr.shape != anchor.shape or arr.dtype != np.float32:
            raise ValueError(f"{name} must be float32 shaped like anchor {anchor.shape}, "
                             f"got {arr.dtype} {arr.shape}")
    if anchor.dtype != np.float32:
        raise ValueError(f"anchor must be float32, got {anchor.dtype}")
    velocity *= np.float32(beta)
    velocity += anchor
    velocity -= result
    return anchor - velocity
