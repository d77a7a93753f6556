"""The trigger scan: it finds a planted backdoor patch, finds none in a clean model, unlearns
with the patches it found, and a node refuses models that carry one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dfl_ray.config import ConfigError
from dfl_ray.defense.base import AggregationInput, AggregationResult
from dfl_ray.models.flat import vector_to_model
from dfl_ray.models.training import to_input
from dfl_ray.node.aggregator import Buffered
from dfl_ray.node.triggers import TriggerScan, TriggerSettings
from dfl_ray.timing import CATEGORIES
from tests.helpers import local_host, small_config

SIDE, CLASSES, TARGET = 12, 4, 2


def templates() -> torch.Tensor:
    """One smooth blob per class, away from the bottom-right corner."""
    yy, xx = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    centres = [(2, 2), (2, 8), (8, 2), (5, 5)]
    return torch.stack([torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
                        for cy, cx in centres]).float()


def linear_model(backdoor: bool) -> nn.Module:
    """A linear classifier matching each class's template; with `backdoor` a bright 2 x 2
    corner sends any image to TARGET."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, CLASSES))
    with torch.no_grad():
        weight = templates().reshape(CLASSES, -1) * 4.0
        model[1].weight.copy_(weight)
        model[1].bias.zero_()
        if backdoor:
            corner = torch.zeros(SIDE, SIDE)
            corner[-3:-1, -3:-1] = 1.0
            model[1].weight[TARGET] += corner.reshape(-1) * 20.0
    return model


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [n, SIDE, SIDE] noisy templates and their labels."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    x = templates()[labels] * 200.0 + torch.rand(n, SIDE, SIDE, generator=gen) * 40.0
    return x.clamp(0, 255).to(torch.uint8), labels


def scan(steps: int = 150) -> TriggerScan:
    return TriggerScan(TriggerSettings(budget=6.0, steps=steps), shape=(SIDE, SIDE),
                       classes=CLASSES, seed=0)


def test_the_scan_finds_a_planted_trigger_and_its_carriers() -> None:
    train_x, train_y = images(64, seed=1)
    val_x, val_y = images(40, seed=2)
    backdoored, clean = linear_model(True), linear_model(False)
    found = scan()
    rates = found.search(backdoored, train_x, train_y, val_x, val_y)
    assert rates[TARGET] >= 0.9
    assert sorted(found.found) == [TARGET]
    mask, _ = found.found[TARGET]
    assert float(mask.sum()) <= 6.0 + 1e-4  # the budget holds
    assert found.carried(backdoored, val_x, val_y).tolist() >= [0.9]
    assert found.carried(clean, val_x, val_y).tolist() < [0.5]


def test_a_clean_model_yields_no_trigger() -> None:
    train_x, train_y = images(64, seed=1)
    val_x, val_y = images(40, seed=2)
    clean_scan = scan()
    rates = clean_scan.search(linear_model(False), train_x, train_y, val_x, val_y)
    assert rates.max() < 0.9 and not clean_scan.found
    assert clean_scan.carried(linear_model(True), val_x, val_y).size == 0  # nothing to check
    x, y = images(8, seed=3)
    same_x, same_y = clean_scan.unlearn(x, y, np.random.default_rng(0))
    assert same_x is x and same_y is y  # nothing found: the batch is left as it is


def test_the_scan_leaves_the_model_trainable() -> None:
    model = linear_model(True)
    train_x, train_y = images(32, seed=1)
    scan(steps=3).search(model, train_x, train_y, *images(8, seed=2))
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_unlearning_stamps_the_found_patch_and_keeps_the_labels() -> None:
    train_x, train_y = images(64, seed=1)
    found = scan()
    found.search(linear_model(True), train_x, train_y, *images(40, seed=2))
    x, y = images(200, seed=4)
    out_x, out_y = found.unlearn(x, y, np.random.default_rng(0))
    assert out_y is y and out_x.dtype == torch.uint8 and out_x.shape == x.shape
    changed = (out_x != x).flatten(1).any(dim=1)
    assert 0.3 < float(changed.float().mean()) < 0.7  # about `share` (0.5) of the batch
    assert torch.equal(x, images(200, seed=4)[0])  # the input batch is not written to
    # the stamped images now carry the trigger: the backdoored model sends them to TARGET
    sent = linear_model(True)(out_x[changed].float() / 256.0).argmax(dim=1)
    assert float((sent == TARGET).float().mean()) >= 0.9


@pytest.mark.parametrize(("field", "value", "message"), [
    ("threshold", 0.0, "trigger_scan must be a share in (0, 1]"),
    ("threshold", 1.5, "trigger_scan must be a share in (0, 1]"),
    ("budget", 0.0, "trigger_budget must be > 0 pixels"),
    ("steps", 0, "trigger_steps must be a whole number >= 1"),
    ("steps", 2.5, "trigger_steps must be a whole number >= 1"),
    ("share", -0.1, "trigger_share must be in [0, 1]"),
])
def test_bad_settings_name_the_setting(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        TriggerSettings(**{field: value})


def test_a_bad_config_value_names_the_config_key() -> None:
    with pytest.raises(ConfigError, match=r"defense\.trigger_budget must be > 0"):
        small_config(defense={"trigger_scan": 0.9, "trigger_budget": -1.0})
    assert small_config().defense.trigger_settings() is None  # off by default
    on = small_config(defense={"trigger_scan": 0.8, "trigger_steps": 3}).defense
    assert on.trigger_settings() == TriggerSettings(threshold=0.8, steps=3)


def test_honest_nodes_scan_and_refuse_models_that_carry_a_found_trigger(
        tmp_path: Path) -> None:
    config = small_config(defense={"rule": "fedavg", "trigger_scan": 0.9, "trigger_steps": 2},
                          attack={"kind": "backdoor", "malicious": 1})
    host = local_host(config, tmp_path)
    attackers = set(config.attackers)
    for node_id, node in host.nodes.items():
        # attackers do not scan their own models
        assert (node.learner.triggers is None) == (node_id in attackers)
    honest = next(n for i, n in host.nodes.items()
                  if i not in attackers and attackers & set(n.params.peers))
    seen: list[int] = []
    rule = honest.aggregator.rule

    def counting(inp: AggregationInput, params: dict[str, float]) -> AggregationResult:
        seen.append(inp.k)
        return rule(inp, params)

    honest.aggregator.rule = counting  # type: ignore[assignment]
    refused = {sender for sender, peer in honest.directory.items() if peer in attackers}
    carriers = []

    def carried(vec: np.ndarray) -> np.ndarray:
        # Stand-in for a found patch: the models of the attacker's key carry it.
        hit = any(np.array_equal(vec, b.vec) for c, b in honest.buffer.items() if c in refused)
        carriers.append(hit)
        return np.array([1.0 if hit else 0.1])

    honest.learner.carried = carried  # type: ignore[method-assign]
    assert honest.learner.triggers is not None
    honest.learner.triggers.found[0] = (torch.zeros(1, 28, 28), torch.zeros(1, 28, 28))
    host.begin_round(0)
    host.end_round(0)
    host.finish_round()
    assert honest.counters["aggregations"] == 1
    offered = len(carriers)
    assert offered >= 2 and sum(carriers) >= 1  # the attacker's model was among them
    assert honest.counters["trigger_refused"] == sum(carriers)
    assert seen == [offered - sum(carriers)]
    # the scan's time is protocol work of its own category, attackers spend none on it
    assert honest.timer.seconds["scan"] > 0.0 and "scan" in CATEGORIES
    assert all(host.nodes[a].timer.seconds.get("scan", 0.0) == 0.0 for a in attackers)


def test_odd_turns_scan_the_received_model_a_found_patch_reads_highest(tmp_path: Path) -> None:
    config = small_config(defense={"rule": "fedavg", "trigger_scan": 0.9, "trigger_steps": 2},
                          attack={"kind": "backdoor", "malicious": 1})
    host = local_host(config, tmp_path)
    attackers = set(config.attackers)
    honest = next(n for i, n in host.nodes.items()
                  if i not in attackers and attackers & set(n.params.peers))
    assert honest.learner.triggers is not None
    scanned: list[np.ndarray | None] = []
    scan = honest.learner.scan

    def recording(vec: np.ndarray | None = None) -> int:
        scanned.append(vec)
        return scan(vec)

    honest.learner.scan = recording  # type: ignore[method-assign]
    refused = {sender for sender, peer in honest.directory.items() if peer in attackers}
    carriers: list[np.ndarray] = []

    def carried(vec: np.ndarray) -> np.ndarray:
        # Stand-in for a found patch: the models of the attacker's key carry it.
        hit = any(np.array_equal(vec, b.vec) for c, b in honest.buffer.items() if c in refused)
        if hit:
            carriers.append(vec)
        return np.array([1.0 if hit else 0.1])

    honest.learner.carried = carried  # type: ignore[method-assign]
    # Nothing found: no received model is kept, and every turn scans the own model.
    for r in range(2):
        host.begin_round(r)
        host.end_round(r)
        host.finish_round()
        assert honest.suspect is None
    assert scanned == [None, None] and not honest.learner.triggers.found
    # Turn 2 (even) scans the own model; then a patch is found, and the model it reads highest
    # (the attacker's) is kept and searched by turn 3 (odd).
    host.begin_round(2)
    honest.learner.triggers.found[0] = (torch.zeros(1, 28, 28), torch.zeros(1, 28, 28))
    host.end_round(2)
    host.finish_round()
    assert carriers and any(honest.suspect is vec for vec in carriers)
    suspect = honest.suspect
    host.begin_round(3)
    assert scanned[2] is None and scanned[3] is suspect
    host.close()


def test_a_received_model_moves_a_found_patch_but_never_adds_one() -> None:
    train_x, train_y = images(64, seed=1)
    val_x, val_y = images(40, seed=2)
    tracking = scan()
    rates = tracking.search(linear_model(True), train_x, train_y, val_x, val_y, track_only=True)
    assert rates[TARGET] >= 0.9 and not tracking.found  # reached, but not recorded
    old = (torch.zeros(1, SIDE, SIDE), torch.zeros(1, SIDE, SIDE))
    tracking.found[TARGET] = old
    tracking.search(linear_model(True), train_x, train_y, val_x, val_y, track_only=True)
    assert sorted(tracking.found) == [TARGET] and tracking.found[TARGET] is not old
    assert tracking.carried(linear_model(True), val_x, val_y).tolist() >= [0.9]


def test_an_evading_backdoor_attacker_reads_its_trigger_success_on_its_own_split(
        tmp_path: Path) -> None:
    config = small_config(attack={"kind": "backdoor", "malicious": 1,
                                  "params": {"evade": 0.5, "target": 1}})
    host = local_host(config, tmp_path)
    attacker = host.nodes[config.attackers[0]]
    rate = attacker._attack_oracle()
    vec = attacker.get_vector()
    images, labels = attacker.attack.triggered_test_set(  # type: ignore[union-attr]
        attacker.data.val_images.numpy(), attacker.data.val_labels.numpy())
    assert len(labels) > 0 and (labels == 1).all()
    model = attacker.learner.scorer
    with torch.no_grad():
        vector_to_model(vec, model)
        model.eval()
        expected = float((model(to_input(torch.from_numpy(images))).argmax(dim=1) == 1)
                         .float().mean())
    assert rate(vec) == pytest.approx(expected)


@pytest.mark.parametrize(("rates", "gap", "refused"), [
    ([0.95, 0.1, 0.1, 0.0], 0.25, [0]),  # one sender follows the patch, the others do not
    ([0.95, 0.9, 0.85, 0.2], 0.25, []),  # most follow it: a feature of the digits
    ([0.95, 0.9, 0.85, 0.2], 0.0, [0, 1]),  # gap 0: above the median
    ([0.95, 0.9, 0.85, 0.2], -1.0, [0, 1, 2]),  # gap -1: the refusal share alone
    ([0.45, 0.0, 0.0, 0.0], 0.25, []),  # under the refusal share
    ([0.6, 0.55, 0.1, 0.0, 0.05], 0.25, [0, 1]),  # two colluders of five: the median is honest
])
def test_a_model_is_refused_when_it_follows_a_found_patch_far_more_than_the_median(
        tmp_path: Path, rates: list[float], gap: float, refused: list[int]) -> None:
    host = local_host(small_config(defense={"trigger_scan": 0.9, "trigger_gap": gap}), tmp_path)
    node = host.nodes[0]
    assert node.learner.triggers is not None
    node.learner.triggers.found[3] = (torch.zeros(1, 28, 28), torch.zeros(1, 28, 28))
    creators = [bytes([i]) * 32 for i in range(len(rates))]
    node.buffer = {c: Buffered(np.full(4, i, dtype=np.float32), 0.0, 0)
                   for i, c in enumerate(creators)}
    node.learner.carried = lambda vec: np.array([rates[int(vec[0])]])  # type: ignore[method-assign]
    kept = node._refuse_triggered(creators)
    assert kept == [c for i, c in enumerate(creators) if i not in refused]
    assert node.counters["trigger_refused"] == len(refused)


def test_a_model_that_calls_everything_the_target_shows_no_trigger() -> None:
    train_x, train_y = images(64, seed=1)
    val_x, val_y = images(40, seed=2)
    found = scan()
    found.search(linear_model(True), train_x, train_y, val_x, val_y)
    assert TARGET in found.found
    constant = linear_model(False)
    with torch.no_grad():
        constant[1].bias[TARGET] = 1e4  # every image, patched or not, is called TARGET
    assert found.carried(constant, val_x, val_y).tolist() == [0.0]
    assert found.carried(linear_model(True), val_x, val_y).tolist() >= [0.9]


def test_a_restarted_node_gets_its_scan_back_from_the_checkpoint(tmp_path: Path) -> None:
    config = small_config(defense={"trigger_scan": 0.9, "trigger_steps": 2})
    first = local_host(config, tmp_path)
    scan = first.nodes[0].learner.triggers
    assert scan is not None
    for r in range(2):
        first.begin_round(r)
        first.end_round(r)
        if r == 0:  # a patch found in round 0; the scan of round 1 moves the logits on
            scan.found[7] = (torch.rand(1, 28, 28), torch.rand(1, 28, 28))
            before = scan.mask_logits.detach().clone()
        first.finish_round()  # checkpoints every node: a restart resumes from here
    meta, arrays = scan.state()
    assert not np.array_equal(arrays["trigger_mask_logits"], before.numpy())
    first.close()
    second = local_host(config, tmp_path)
    restored = second.nodes[0].learner.triggers
    assert restored is not None and second.nodes[0].counters["restored"] == 1
    again_meta, again_arrays = restored.state()
    assert again_meta == meta and sorted(again_arrays) == sorted(arrays)
    for name, value in arrays.items():
        np.testing.assert_array_equal(again_arrays[name], value)
    assert 7 in restored.found
    second.close()
