"""The acceptance test: a node keeps no aggregate that costs its own held-out data more than a
fixed tolerance over the model it has just trained.

Why. Every rule here judges received models by what they look like (distances, norms, the
output layer's update); a white-box attacker sits just inside whatever bounds those statistics
set, and on label-skewed shards three colluders of ten drive every honest node to 10 % that way
(docs/results.md, "Attack matrix"). Each node holds one thing no attacker has seen: its own
validation split. So after the rule (and server momentum) has produced the candidate model c,
the node compares its validation loss with that of its own freshly trained model w and keeps
the longest step w + s (c - w), s in {1, 1/2, 1/4, ...}, whose loss is at most L(w) +
`tolerance` (w itself when none is). The idea of validating updates on data the receiver holds
is Zeno's (Xie, Koyejo, Gupta, ICML 2019) and FLTrust's (Cao et al., NDSS 2021); the reference
here is the node's own update, which nothing a sender publishes can move.

What it does not claim. An attacker who knows `tolerance` can still cost each receiver up to
that much loss per round on the classes it holds, and anything on the classes it does not hold:
those only the nodes that hold them can defend. On label-skewed shards honest aggregation
itself costs a node's own split several nats in early rounds (its peers hold other labels),
so a small tolerance also slows honest mixing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

HALVINGS = 4
"""Shorter steps tried after the whole one: 1/2, 1/4, 1/8, 1/16 of the way."""


def check_tolerance(tolerance: object) -> float:
    """`tolerance` as a float >= 0 (math.inf: the test off), or ValueError naming the range."""
    if (isinstance(tolerance, bool) or not isinstance(tolerance, int | float | np.number)
            or not float(tolerance) >= 0.0):  # also false for NaN
        raise ValueError(f"accept must be a number of nats >= 0 (inf: off), got {tolerance!r}")
    return float(tolerance)


def accept_step(own: np.ndarray, candidate: np.ndarray, loss: Callable[[np.ndarray], float],
                tolerance: float) -> tuple[np.ndarray, float]:
    """(model, s): the candidate when loss(candidate) <= loss(own) + tolerance (s = 1), else the
    longest of own + s (candidate - own), s = 1/2 ... 1/2^HALVINGS, that passes, else a copy of
    own (s = 0). A NaN loss fails. `own` and `candidate` are float32 [d]; neither is written."""
    tolerance = check_tolerance(tolerance)
    if not math.isfinite(tolerance):
        return candidate, 1.0
    limit = float(loss(own)) + tolerance
    if float(loss(candidate)) <= limit:  # False for NaN
        return candidate, 1.0
    move = np.subtract(candidate, own, dtype=np.float32)
    step = 1.0
    for _ in range(HALVINGS):
        step /= 2.0
        trial = own + np.float32(step) * move
        if float(loss(trial)) <= limit:
            return trial, step
    return own.copy(), 0.0
