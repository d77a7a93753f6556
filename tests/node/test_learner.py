"""Learner.loss, the validation loss the probe rules read, over every class or the own ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfl_ray.config import ConfigError
from dfl_ray.models.flat import model_to_vector, vector_to_model
from dfl_ray.models.lenet import LeNet
from dfl_ray.models.training import to_input
from dfl_ray.node.build import node_params
from dfl_ray.node.learner import Learner
from dfl_ray.node.params import NodeData, NodeParams
from tests.helpers import small_config

OWN = (3, 5)


def learner(probe_classes: str) -> Learner:
    """A learner whose shard and validation split hold classes 3 and 5 only."""
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 10, size=200))
    train_idx = np.flatnonzero(np.isin(labels.numpy(), OWN))
    data = NodeData(
        images=torch.from_numpy(rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8)),
        labels=labels, train_idx=train_idx,
        val_images=torch.from_numpy(rng.integers(0, 256, size=(24, 28, 28), dtype=np.uint8)),
        val_labels=torch.tensor([OWN[i % 2] for i in range(24)]))
    torch.manual_seed(0)
    model = LeNet()
    params = NodeParams(node_id=0, peers=(1,), local_steps=1, probe_classes=probe_classes)
    return Learner(params, model=model, data=data, initial=model_to_vector(model))


def reference_loss(node: Learner, vec: np.ndarray, classes: list[int]) -> float:
    """Cross-entropy over the logits of `classes` only, computed apart from Learner.loss."""
    model = LeNet()
    vector_to_model(vec, model)
    model.eval()
    with torch.no_grad():
        logits = model(to_input(node.data.val_images))[:, classes]
    target = torch.tensor([classes.index(int(y)) for y in node.data.val_labels])
    return float(nn.functional.cross_entropy(logits, target))


def test_own_classes_loss_reads_only_the_logits_of_the_shards_classes() -> None:
    own, every = learner("own"), learner("all")
    assert own.absent is not None and every.absent is None
    assert sorted(np.flatnonzero(~own.absent.numpy()).tolist()) == list(OWN)
    vec = own.vector()
    assert own.loss(vec) == pytest.approx(reference_loss(own, vec, list(OWN)), rel=1e-5)
    assert every.loss(vec) == pytest.approx(reference_loss(every, vec, list(range(10))),
                                            rel=1e-5)
    assert own.loss(vec) < every.loss(vec)  # eight competing classes fewer


def test_a_model_that_also_favours_other_classes_is_not_read_as_worse() -> None:
    own, every = learner("own"), learner("all")
    vec = own.vector()
    other = vec.copy()
    other[-10 + 7] += 5.0  # the output bias of class 7, which the node does not hold
    assert own.loss(other) == pytest.approx(own.loss(vec), rel=1e-6)
    assert every.loss(other) > every.loss(vec) + 1.0
    confused = vec.copy()
    confused[-10 + OWN[0]] += 5.0  # every image now read as class 3: half of them wrong
    assert own.loss(confused) > own.loss(vec) + 1.0


def test_an_unknown_probe_classes_value_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"defense\.probe_classes must be one of"):
        small_config(defense={"probe_classes": "mine"})


@pytest.mark.parametrize(("defense", "expected"), [
    ({}, "own"),  # dfl_guard, the default rule, reads its own classes
    ({"probe_classes": "all"}, "all"),
    ({"rule": "dfl_shield"}, "all"),
    ({"rule": "dfl_shield", "probe_classes": "own"}, "own"),
])
def test_nodes_read_the_rules_default_probe_classes_unless_one_is_set(
        defense: dict[str, str], expected: str) -> None:
    cfg = small_config(defense=defense)
    assert cfg.defense.effective_probe_classes == expected
    params = node_params(cfg, node_id=0, peers=(1,), n_train=100, device="cpu")
    assert params.probe_classes == expected
