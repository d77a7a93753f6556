"""A node's model and its local work: SGD on its own shard, scoring models on its validation split."""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from dfl_ray.models.flat import model_to_vector, vector_to_model
from dfl_ray.models.training import evaluate, make_optimizer, to_input, train_steps
from dfl_ray.node.params import NodeData, NodeParams
from dfl_ray.node.triggers import TriggerScan

EXPLODED = 10.0
"""Training whose update is longer than EXPLODED x the norm of the model it began from has
diverged, though every weight may still be finite (a node's weights blew up that way in a
measured run and never came back: docs/results.md, "Attack matrix"). A local epoch moves a
model by a small share of its norm."""

MOVES_KEPT = 10
"""Kept local updates whose median sets the longest next one (`NodeParams.max_move`)."""

MOVES_NEEDED = 3
"""Kept updates a node must have before `max_move` and `max_loss_rise` apply."""

Poison = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Rewrites a training batch (images, labels) before the step: data-poisoning attacks."""


class Learner:
    """The model a node trains, its optimizer, and a scratch model for scoring received ones.

    Received models are scored in the scratch model so the own model is never disturbed; the
    nodes of one process may share one scratch model, since they score in turn.
    """

    def __init__(self, params: NodeParams, *, model: nn.Module, data: NodeData,
                 initial: np.ndarray, scorer: nn.Module | None = None) -> None:
        self.params = params
        self.device = params.device
        self.model = model.to(params.device)
        vector_to_model(initial, self.model)
        self.optimizer = make_optimizer(self.model, params.sgd)
        self.scorer = (scorer if scorer is not None else copy.deepcopy(model)).to(params.device)
        self.data = data
        self.rng = np.random.default_rng([params.seed, params.node_id])
        self.moves: deque[float] = deque(maxlen=MOVES_KEPT)  # lengths of kept local updates
        self.absent = None if params.probe_classes == "all" else absent_classes(data)
        self.triggers = None if params.trigger is None else TriggerScan(
            params.trigger, shape=tuple(data.images.shape[1:]), classes=data.num_classes,
            seed=params.seed * 1_000_003 + params.node_id)

    def vector(self) -> np.ndarray:
        """The own model as a fresh float32 vector."""
        return model_to_vector(self.model)

    def load(self, vec: np.ndarray) -> None:
        """Make `vec` the own model (optimizer state is kept)."""
        vector_to_model(vec, self.model)

    def train(self, start: np.ndarray, poison: Poison | None = None) -> int:
        """`local_steps` SGD steps on the shard; how many tries it took (1 or 2), 0 when training
        diverged twice and was undone.

        Training diverges when it leaves a NaN or infinite weight (as SGD can reach from a model
        that aggregation has pushed far off), an update longer than `EXPLODED` x the norm of
        `start`, a validation loss more than `max_loss_rise` nats above `start`'s, or an update
        longer than `max_move` x the median of this node's last `MOVES_KEPT` kept ones that did
        not lower that loss (a long update that lowers it is recovery from an aggregate far
        from the own data). These two apply from the node's `MOVES_NEEDED` + 1-th kept epoch
        on: a model near chance on the own classes can rise on them for an epoch and recover. A
        diverged try is tried once more from `start` with fresh optimizer state (momentum
        carried over from the last round can push a model that aggregation moved the wrong
        way); a second divergence is undone: the model goes back to `start`. Honest nodes whose
        local epochs blew up from attacked aggregates, one after another, took every honest
        node down with them (docs/results.md, "Training that diverges").
        """
        params = self.params
        begun = start.astype(np.float64)
        longest = EXPLODED * max(float(np.linalg.norm(begun)), 1.0)
        limit, capped_at = math.inf, math.inf
        if len(self.moves) >= MOVES_NEEDED:  # the first epochs move most and sort classes out
            limit = params.max_loss_rise
            if math.isfinite(params.max_move):
                capped_at = params.max_move * float(np.median(self.moves))
        tested = math.isfinite(limit) or math.isfinite(capped_at)
        before = self.loss(start) if tested else math.nan
        for tries in (1, 2):
            if tries == 2:
                vector_to_model(start, self.model)
                self.optimizer = make_optimizer(self.model, params.sgd)
            train_steps(
                self.model,
                self.optimizer,
                self.data.images,
                self.data.labels,
                indices=self.data.train_idx,
                batch_size=params.batch_size,
                steps=params.local_steps,
                rng=self.rng,
                device=self.device,
                poison=poison,
                grad_clip=params.sgd.grad_clip,
            )
            trained = model_to_vector(self.model)
            moved = float(np.linalg.norm(trained.astype(np.float64) - begun))
            # NaN or inf weights (or logits) fail both comparisons.
            sane = moved <= longest
            if sane and tested:
                after = self.loss(trained)
                # A long update that lowered the loss is recovery from a far-off aggregate.
                sane = after <= before + limit and (moved <= capped_at or after < before)
            if sane:
                self.moves.append(moved)
                return tries
        vector_to_model(start, self.model)
        self.optimizer = make_optimizer(self.model, params.sgd)
        return 0

    def scan(self, vec: np.ndarray | None = None) -> int:
        """One round of the trigger scan on the own model, or on the model `vec` when given
        (a received one, which only moves patches found before); the number of classes
        (re)recorded now."""
        assert self.triggers is not None
        d = self.data
        model = self.model
        if vec is not None:
            vector_to_model(vec, self.scorer)
            model = self.scorer
        before = set(self.triggers.found)
        rates = self.triggers.search(model, d.images, d.labels, d.val_images,
                                     d.val_labels, pool=d.train_idx, track_only=vec is not None)
        hits = np.flatnonzero(rates >= self.triggers.settings.threshold)
        return sum(1 for t in hits if vec is None or int(t) in before)

    def unlearning(self) -> Poison | None:
        """The batch rewrite that stamps found trigger patches (labels kept), or None."""
        triggers = self.triggers
        if triggers is None or not triggers.found:
            return None
        rng = self.rng
        return lambda x, y: triggers.unlearn(x, y, rng)

    def carried(self, vec: np.ndarray) -> np.ndarray:
        """float64 [found]: the share of this node's validation images of other classes the
        model `vec` sends to each found trigger's target (`TriggerScan.carried`; empty without
        a scan or a trigger found)."""
        if self.triggers is None or not self.triggers.found:
            return np.zeros(0)
        vector_to_model(vec, self.scorer)
        return self.triggers.carried(self.scorer, self.data.val_images, self.data.val_labels)

    def trigger_rate(self, attack: Any) -> Callable[[np.ndarray], float]:
        """The success rate of `attack`'s trigger (its `triggered_test_set`) on this node's
        validation split, as a function of a model vector: what an evading backdoor attacker
        reads."""
        images, labels = attack.triggered_test_set(self.data.val_images.numpy(),
                                                   self.data.val_labels.numpy())
        x, y = torch.from_numpy(images), torch.from_numpy(labels)

        def rate(vec: np.ndarray) -> float:
            if len(y) == 0:
                return 0.0
            vector_to_model(vec, self.scorer)
            return evaluate(self.scorer, x, y, batch_size=256, device=self.device)

        return rate

    def score(self, vec: np.ndarray) -> float:
        """Accuracy of the model `vec` on this node's validation split (spec 5.3)."""
        vector_to_model(vec, self.scorer)
        return evaluate(self.scorer, self.data.val_images, self.data.val_labels, batch_size=256,
                        device=self.device)

    def loss(self, vec: np.ndarray) -> float:
        """Mean cross-entropy of the model `vec` on this node's validation split: the probe
        rules call to test a candidate against data no sender has seen (finer than accuracy
        on a split of a few dozen images). With `probe_classes` "own" the softmax runs over
        the classes of the node's shard only: a model that also knows other classes is not
        read as worse for it, one that confuses the own classes still is."""
        vector_to_model(vec, self.scorer)
        self.scorer.eval()
        with torch.no_grad():
            x = to_input(self.data.val_images, self.device)
            y = self.data.val_labels.to(self.device)
            logits = self.scorer(x)
            if self.absent is not None:
                logits = logits.masked_fill(self.absent.to(logits.device), float("-inf"))
            return float(nn.functional.cross_entropy(logits, y))

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Accuracy of the own model on a test set (metrics only, not protocol work)."""
        return evaluate(self.model, images, labels, batch_size=256, device=self.device)


def absent_classes(data: NodeData) -> torch.Tensor:
    """bool [num_classes]: the classes found in neither the node's shard nor its validation
    split (the logits `Learner.loss` leaves out with `probe_classes` "own")."""
    absent = torch.ones(data.num_classes, dtype=torch.bool)
    own = data.labels[torch.as_tensor(np.asarray(data.train_idx), dtype=torch.long)]
    absent[torch.unique(own).long()] = False
    absent[torch.unique(data.val_labels).long()] = False
    return absent

