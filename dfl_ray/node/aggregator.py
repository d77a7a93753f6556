"""A node's aggregation: the defense rule over its buffer, then server momentum (spec section 6)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dfl_ray.defense import (
    AggregationInput,
    AggregationResult,
    get_rule,
    rule_uses_base,
    rule_uses_head,
    rule_uses_probe,
)
from dfl_ray.defense.accept import accept_step, check_tolerance
from dfl_ray.defense.momentum import check_momentum, momentum_step
from dfl_ray.models.flat import ModelSpec
from dfl_ray.node.params import NodeParams


@dataclass
class Buffered:
    """A received model waiting for aggregation, with this node's score of it."""

    vec: np.ndarray
    score: float
    seq: int


@dataclass(frozen=True)
class Aggregated:
    """What one aggregation produced: the new own model and reputations, and the rule's weights."""

    model: np.ndarray
    reputations: dict[str, float]
    weights: np.ndarray
    step: float = 1.0
    """The share of the way to the rule's (and momentum's) model that the acceptance test
    kept: 1 with the test off or passed, 0 when the node kept its own model."""
    details: Mapping[str, np.ndarray] = field(default_factory=dict)
    """What the rule measured of each buffered model as sent (`AggregationResult.details`)."""


def find_head(spec: ModelSpec, classes: int) -> tuple[slice | None, int | None]:
    """Where the output layer lies in the model vector, for rules that read the classifier.

    The model's last tensors are that layer's weights [classes, hidden] and bias [classes]
    (every model in the registry); the bias alone when the weights are not of that shape.
    Returns (slice, classes) for weights and bias, (slice, None) for the bias alone, or
    (None, None) when the last tensor is no output bias.
    """
    shapes = [tuple(shape) for shape in spec.shapes]
    if not shapes or shapes[-1] != (classes,):
        return None, None
    n, head_classes = classes, None
    if len(shapes) >= 2 and len(shapes[-2]) == 2 and shapes[-2][0] == classes:
        n += classes * shapes[-2][1]
        head_classes = classes
    return slice(spec.size - n, spec.size), head_classes


class Aggregator:
    """Runs a node's defense rule and keeps the state it needs between aggregations.

    That state is the round-start model (`round_base`) for rules that compare update
    directions and for attackers (they publish a function of it), the round-start output layer
    (`round_head`) for rules that read only the classifier's update, and the anchor and
    velocity of server momentum. A node that needs none of these keeps no second model copy.
    """

    def __init__(self, params: NodeParams, *, spec: ModelSpec, num_classes: int,
                 initial: np.ndarray, keep_base: bool = False,
                 probe: Callable[[np.ndarray], float] | None = None) -> None:
        self.params = params
        self.accept = check_tolerance(params.accept)
        # The validation-loss probe (Learner.loss), kept only when the rule or the acceptance
        # test calls it.
        wanted = rule_uses_probe(params.rule, params.rule_params) or np.isfinite(self.accept)
        self.probe = probe if wanted else None
        self.rule = get_rule(params.rule)
        self.rule_uses_base = rule_uses_base(params.rule, params.rule_params)
        self.keeps_base = self.rule_uses_base or keep_base
        self.head, self.head_classes = find_head(spec, num_classes)
        self.tensors = tuple(int(n) for n in spec.sizes)
        self.keeps_head = self.head is not None and rule_uses_head(params.rule, params.rule_params)
        self.round_base: np.ndarray | None = None
        self.round_head: np.ndarray | None = None
        self.momentum = check_momentum(params.momentum)
        # With momentum: the model the node left its last aggregation with, and the velocity.
        self.anchor: np.ndarray | None = None
        self.velocity: np.ndarray | None = None
        if self.momentum > 0.0:
            self.anchor = np.array(initial, dtype=np.float32)
            self.velocity = np.zeros_like(self.anchor)

    def start_round(self, start: np.ndarray) -> None:
        """Keep what the rule (or an attacker) needs of the model before local training."""
        if self.keeps_base:
            self.round_base = start
        if self.keeps_head:
            assert self.head is not None  # keeps_head needs it
            self.round_head = start[self.head].copy()  # a few values, not a view of the whole

    def aggregate(self, own: np.ndarray, own_score: float, senders: Sequence[bytes],
                  buffered: Sequence[Buffered], reputations: Mapping[str, float],
                  shrink: Sequence[float] | None = None) -> Aggregated:
        """The rule's new model (after momentum) and reputations for the buffered models.

        `shrink` (one factor in (0, 1] per buffered model; the async schedule's staleness
        weights) moves a model towards the own model, to that share of its distance, after the
        rule has judged it as it was sent: a stale model only loses weight. Moved first, a far
        model (a near-zero one, say) came within the rule's radius and was let in. The rule then
        runs twice: once on the models as sent (its reputations and which models it gave no
        weight are kept), once on the moved ones it did not leave out (the model).
        """
        senders_hex = tuple(s.hex() for s in senders)
        result = self._rule(own, own_score, senders_hex, [b.vec for b in buffered],
                            [b.score for b in buffered], reputations)
        details = result.details  # of the models as sent
        factors = np.ones(len(buffered)) if shrink is None else np.asarray(shrink, np.float64)
        kept = [int(i) for i in np.flatnonzero(result.weights > 0)]
        if np.any(factors[kept] < 1.0):
            moved = [own + np.float32(factors[i]) * (buffered[i].vec - own) for i in kept]
            second = self._rule(own, own_score, tuple(senders_hex[i] for i in kept), moved,
                                [buffered[i].score for i in kept], reputations)
            weights = np.zeros(len(buffered))
            weights[kept] = second.weights
            result = AggregationResult(second.model, result.reputations, weights)
        model = result.model
        if self.anchor is not None and self.velocity is not None:
            model = momentum_step(self.anchor, model, self.velocity, self.momentum)
        step = 1.0
        if self.probe is not None and np.isfinite(self.accept):
            model, step = accept_step(own, model, self.probe, self.accept)
            if step < 1.0 and self.anchor is not None and self.velocity is not None:
                # The velocity carries on the move made, not the one the test cut short.
                np.subtract(self.anchor, model, out=self.velocity)
        if self.anchor is not None:
            self.anchor = model
        return Aggregated(model, dict(result.reputations), result.weights, step, details)

    def _rule(self, own: np.ndarray, own_score: float, senders: Sequence[str],
              models: Sequence[np.ndarray], scores: Sequence[float],
              reputations: Mapping[str, float]) -> AggregationResult:
        inp = AggregationInput(
            own=own,
            own_score=float(own_score),
            models=tuple(models),
            senders=tuple(senders),
            scores=np.array(scores, dtype=np.float64),
            reputations=reputations,
            base=self.round_base if self.rule_uses_base else None,
            head=self.head,
            head_classes=self.head_classes,
            head_base=self.round_head,
            tensors=self.tensors,
            # Every buffered row passed check_payload (finiteness included) on receipt.
            checked_rows=True,
            probe=self.probe,
        )
        return self.rule(inp, self.params.rule_params)
