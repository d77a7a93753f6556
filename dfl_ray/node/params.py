"""What a node is told about its role (`NodeParams`) and what it holds of the data (`NodeData`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from dfl_ray.models.training import SGDSettings
from dfl_ray.node.triggers import TriggerSettings


@dataclass(frozen=True)
class NodeParams:
    """Everything a node needs to know about its role besides its data, model and keys."""

    node_id: int
    peers: tuple[int, ...]
    local_steps: int
    batch_size: int = 64
    sgd: SGDSettings = field(default_factory=SGDSettings)
    rule: str = "dfl_trust"
    rule_params: Mapping[str, float] = field(default_factory=dict)
    buffer_size: int = 4
    momentum: float = 0.0
    """Server momentum applied to the rule's result (dfl_ray.defense.momentum); 0 turns it off."""
    accept: float = math.inf
    """Tolerance of the acceptance test (dfl_ray.defense.accept) in nats; inf turns it off."""
    max_loss_rise: float = math.inf
    """Training that raises the validation loss (`Learner.loss`) by more than this many nats
    has diverged (`Learner.train`); inf turns the test off."""
    max_move: float = math.inf
    """Training whose update is longer than this x the median of the node's recent kept ones,
    and that did not lower the validation loss, has diverged (`Learner.train`); inf: off."""
    probe_classes: str = "all"
    """The classes the validation loss reads (`Learner.loss`): "all", or "own" (the shard's)."""
    trigger: TriggerSettings | None = None
    """The trigger scan (dfl_ray.node.triggers) an honest node runs; None turns it off."""
    max_clock_skew_s: float = 5.0
    seed: int = 0
    device: str = "cpu"
    colluders: frozenset[int] = frozenset()
    """The other attackers, for an attacker: their models are not taken as honest observations."""
    trace: bool = False
    """Keep one row per model aggregated (`Node.trace`; `experiment.trace`)."""


@dataclass(frozen=True)
class NodeData:
    """A node's view of the data: shared training arrays plus its own indices and validation set."""

    images: torch.Tensor
    """uint8 [N, H, W] training images shared by every node of the process (never written)."""
    labels: torch.Tensor
    train_idx: np.ndarray
    val_images: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int = 10
