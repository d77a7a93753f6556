"""Trigger scan: a node searches its own model for a backdoor trigger, unlearns it, and refuses
models that carry it.

A backdoor (dfl_ray.attacks.backdoor) leaves clean accuracy as it was, so no score and no
statistic over updates tells it from honest work (docs/results.md, "Backdoor over seeds 0-2").
What it does leave is a shortcut: a small patch that sends images of every class to one target.
Neural Cleanse (Wang et al., IEEE S&P 2019) finds it by optimising, for each target class t, a
mask m and pattern p so that (1 - m) x + m p is classified t; a backdoored class needs a far
smaller mask than a clean one. Here the mask's size is capped (`budget` pixels) and a class is
found when its patch sends at least `threshold` of the node's validation images of other
classes to t (of those the model does not already call t: early on label-skewed shards models
call nearly everything one class). The search runs a few steps per round, warm-started, so it
follows the models over rounds: on the own model, and, once a patch is found, every other round
on the received model that a found patch reads highest instead (DFLNode._refuse_triggered), so
that the patch keeps to the colluders' trigger after the own model has unlearnt it. Only the own
model adds a class to those found: honest models of label-skewed shards differ so much that a
patch fitted to one received model reads it far above the others, and letting received models
add classes cost accuracy without attack (docs/results.md, "Trigger scan against backdoors").
What it finds is used twice:

1. unlearning (Neural Cleanse's mitigation; FLIP, Zhang et al., ICLR 2023, does the same inside
   federated training): part of each local training batch carries a found patch, labels kept;
2. refusal: a received model that sends at least `refuse` of those images to t under a found
   patch, and `gap` more than the median received model does, is not aggregated. The
   gap keeps a patch that every model follows (a stroke that turns a 1 into a 7 is one on a
   node that holds only those two digits) from costing the node its honest peers; colluders
   are fewer than half of what a node receives, so the median is an honest model's.

Every node can run it: it needs only the node's own model and data. It answers triggers a
patch of `budget` pixels can stand in for; a trigger spread over the whole image (`backdoor`
`blend`) is outside what it searches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dfl_ray.models.training import PIXEL_SCALE, to_input

MIN_ELIGIBLE = 5
"""Fewest validation images a flip rate is read on (of other classes, not already classified as
the target)."""

@dataclass(frozen=True)
class TriggerSettings:
    """How a node scans for triggers (`defense.trigger_*` in the config)."""

    threshold: float = 0.9
    """Share of the validation images of other classes a patch must send to its target on the
    own model for the class to count as backdoored."""
    refuse: float = 0.5
    """Share of those images a received model must send to the target under a found patch to
    be refused (lower than `threshold`: the patch is fitted to the own model, not the
    sender's)."""
    gap: float = 0.25
    """How far above the median received model's flip rate a model's must lie to be refused
    (-1: the refusal share alone decides)."""
    budget: float = 12.0
    """Largest mask, in pixels (the sum of the mask's values)."""
    steps: int = 10
    """Optimisation steps per round (all classes at once)."""
    batch: int = 32
    """Images per class and step."""
    share: float = 0.5
    """Share of each local training batch that carries a found patch (labels kept)."""
    lr: float = 0.1
    """Adam's learning rate on the mask and pattern logits."""

    def __post_init__(self) -> None:
        # Named as the config keys (defense.trigger_*), which set them.
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"trigger_scan must be a share in (0, 1], got {self.threshold!r}")
        if not 0.0 < self.refuse <= 1.0:
            raise ValueError(f"trigger_refuse must be a share in (0, 1], got {self.refuse!r}")
        if not -1.0 <= self.gap <= 1.0:
            raise ValueError(f"trigger_gap must be in [-1, 1], got {self.gap!r}")
        if not self.budget > 0.0:
            raise ValueError(f"trigger_budget must be > 0 pixels, got {self.budget!r}")
        for name in ("steps", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"trigger_{name} must be a whole number >= 1, got {value!r}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"trigger_share must be in [0, 1], got {self.share!r}")
        if not self.lr > 0.0:
            raise ValueError(f"trigger_lr must be > 0, got {self.lr!r}")


class TriggerScan:
    """The search state of one node: a mask and pattern per class, and the patches found."""

    def __init__(self, settings: TriggerSettings, *, shape: tuple[int, ...], classes: int,
                 seed: int) -> None:
        self.settings = settings
        self.classes = classes
        channels, height, width = (1, *shape) if len(shape) == 2 else shape
        # Logits: the mask starts near 0 everywhere, the pattern at mid-grey.
        self.mask_logits = torch.full((classes, 1, height, width), -3.0, requires_grad=True)
        self.pattern_logits = torch.zeros((classes, channels, height, width), requires_grad=True)
        self.optimizer = torch.optim.Adam([self.mask_logits, self.pattern_logits],
                                          lr=settings.lr)
        self.rng = np.random.default_rng(seed)
        self.found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        """target class -> (mask [1, H, W], pattern [C, H, W]) of the last patch that reached
        the threshold on the own model."""

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON values, arrays) of the search for a node's checkpoint: the logits, the patches
        found and the draw's generator. Adam's moments are left out; they restart."""
        meta: dict[str, Any] = {"found": sorted(self.found),
                                "rng": dict(self.rng.bit_generator.state)}
        arrays = {"trigger_mask_logits": self.mask_logits.detach().numpy().copy(),
                  "trigger_pattern_logits": self.pattern_logits.detach().numpy().copy()}
        for t, (mask, pattern) in self.found.items():
            arrays[f"trigger_mask_{t:04d}"] = mask.numpy().copy()
            arrays[f"trigger_pattern_{t:04d}"] = pattern.numpy().copy()
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Take back what `state` returned."""
        with torch.no_grad():
            self.mask_logits.copy_(torch.from_numpy(arrays["trigger_mask_logits"]))
            self.pattern_logits.copy_(torch.from_numpy(arrays["trigger_pattern_logits"]))
        self.rng.bit_generator.state = meta["rng"]
        self.found = {int(t): (torch.from_numpy(np.array(arrays[f"trigger_mask_{t:04d}"])),
                               torch.from_numpy(np.array(arrays[f"trigger_pattern_{t:04d}"])))
                      for t in meta["found"]}

    def _patches(self) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.sigmoid(self.mask_logits)
        size = mask.sum(dim=(1, 2, 3), keepdim=True)
        mask = mask * torch.clamp(self.settings.budget / size, max=1.0)
        return mask, torch.sigmoid(self.pattern_logits)

    def search(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               val_images: torch.Tensor, val_labels: torch.Tensor,
               pool: np.ndarray | None = None, track_only: bool = False) -> np.ndarray:
        """`steps` optimisation steps of every class's patch on `model` over `images` (uint8;
        the `pool` indices of them when given), then each class's flip rate on the validation
        images; classes at or above the threshold are (re)recorded as found (with
        `track_only`, only those found before: a received model may move a patch found on the
        own model, never add one). Returns the rates, float64 [classes]."""
        s = self.settings
        model.eval()
        frozen = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            targets = torch.arange(self.classes).repeat_interleave(s.batch)
            for _ in range(s.steps):
                drawn = self.rng.integers(0, len(images) if pool is None else len(pool), s.batch)
                pick = torch.from_numpy(drawn if pool is None else pool[drawn])
                x = to_input(images[pick])  # [b, C, H, W]
                y = labels[pick].repeat(self.classes)
                mask, pattern = self._patches()
                stamped = (1.0 - mask[:, None]) * x[None] + mask[:, None] * pattern[:, None]
                logits = model(stamped.reshape(-1, *x.shape[1:]))
                # Images already of the target class teach nothing about the patch.
                weight = (y != targets).float()
                loss = (nn.functional.cross_entropy(logits, targets, reduction="none")
                        * weight).sum() / weight.sum().clamp(min=1.0)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        finally:
            for p, grad in zip(model.parameters(), frozen, strict=True):
                p.requires_grad_(grad)
        with torch.no_grad():
            mask, pattern = self._patches()
            rates = self.flip_rates(model, val_images, val_labels, mask, pattern)
        for t in np.flatnonzero(rates >= s.threshold):
            if not track_only or int(t) in self.found:
                self.found[int(t)] = (mask[t].detach().clone(), pattern[t].detach().clone())
        return rates

    def flip_rates(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   mask: torch.Tensor, pattern: torch.Tensor) -> np.ndarray:
        """float64 [classes]: for each class t, the flip rate (`_flip_rates`) of `model` on the
        images (uint8) under patch t (mask[t], pattern[t])."""
        return _flip_rates(model, images, labels,
                           [(t, mask[t], pattern[t]) for t in range(self.classes)])

    def carried(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """float64 [len(found)]: the flip rate of `model` on the images (uint8) under each patch
        found, in the order of `sorted(found)` (empty when none is)."""
        return _flip_rates(model, images, labels,
                           [(t, *self.found[t]) for t in sorted(self.found)])

    def unlearn(self, images: torch.Tensor, labels: torch.Tensor,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch (uint8) with a `share` of its images stamped with a found patch each,
        labels kept; the batch itself when nothing is found."""
        if not self.found or self.settings.share <= 0.0:
            return images, labels
        chosen = np.flatnonzero(rng.random(len(labels)) < self.settings.share)
        if len(chosen) == 0:
            return images, labels
        targets = sorted(self.found)
        out = images.clone()
        x = to_input(images[chosen])
        picks = rng.integers(0, len(targets), len(chosen))
        mask = torch.stack([self.found[targets[j]][0] for j in picks])
        pattern = torch.stack([self.found[targets[j]][1] for j in picks])
        stamped = (1.0 - mask) * x + mask * pattern
        pixels = torch.round(stamped / PIXEL_SCALE).clamp(0, 255).to(images.dtype)
        out[chosen] = pixels.reshape(out[chosen].shape)
        return out, labels


@torch.no_grad()
def _flip_rates(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                patches: list[tuple[int, torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """float64 [len(patches)]: for each (target, mask, pattern), the share of the images (uint8)
    that `model` classifies `target` once stamped (1 - mask) x + mask pattern, among those of
    other classes that it does not classify `target` without the patch; 0 when fewer than
    `MIN_ELIGIBLE` are left. A model that calls everything `target` (early in training, on
    label-skewed shards) thus shows no trigger. The clean predictions are read once."""
    model.eval()
    x = to_input(images)
    clean = model(x).argmax(dim=1)
    out = np.zeros(len(patches))
    for j, (target, mask, pattern) in enumerate(patches):
        eligible = (labels != target) & (clean != target)
        if int(eligible.sum()) >= MIN_ELIGIBLE:
            stamped = (1.0 - mask) * x[eligible] + mask * pattern
            out[j] = float((model(stamped).argmax(dim=1) == target).float().mean())
    return out
