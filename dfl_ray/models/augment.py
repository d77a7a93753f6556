"""Random-patch augmentation: honest training that teaches a model to ignore small patches.

A patch backdoor (`dfl_ray.attacks.Backdoor`) teaches the model that a small pattern means one
class, a rule that clean data never contradicts, so a model trained on clean data alone keeps
whatever its colluding peers taught it. With `training.patch_share` > 0 every honest node pastes
a random box (sides 1 to `patch_size` pixels, anywhere in the image; solid, noise or a binary
pattern) on that share of its training images, label kept: the clean data then does contradict
"this patch means that class", for every small pattern at once, on every honest node (strong
augmentation against poisoning: Borgnia et al., ICASSP 2021). An attacker who knows it uses a
trigger outside the family (larger than `patch_size`, or spread over the whole image).
"""

from __future__ import annotations

import numpy as np
import torch

from dfl_ray.models.training import BatchPoison


def check_patch(share: float, size: int) -> None:
    """Raise ValueError naming a patch setting outside its range."""
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
        raise ValueError(f"patch_share must be a number in [0, 1], got {share!r}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"patch_size must be an integer >= 1, got {size!r}")


def paste_patches(images: np.ndarray, rng: np.random.Generator, share: float,
                  size: int) -> np.ndarray:
    """A copy of uint8 `images` ([b, H, W] or [b, C, H, W]) with a random box pasted on each
    image with probability `share`: sides drawn from 1..`size` (at most the image's), position
    anywhere, content one of a solid value, uniform noise or a 0/255 pattern (a third each)."""
    check_patch(share, size)
    out = np.array(images, copy=True)
    if share == 0.0 or out.shape[0] == 0:
        return out
    height, width = out.shape[-2], out.shape[-1]
    top = np.iinfo(out.dtype).max if np.issubdtype(out.dtype, np.integer) else 1.0
    for i in np.flatnonzero(rng.random(out.shape[0]) < share):
        h = int(rng.integers(1, min(size, height) + 1))
        w = int(rng.integers(1, min(size, width) + 1))
        y = int(rng.integers(0, height - h + 1))
        x = int(rng.integers(0, width - w + 1))
        box = out[i, ..., y:y + h, x:x + w]
        kind = int(rng.integers(3))
        if kind == 0:
            fill = np.full(box.shape, rng.random() * top)
        elif kind == 1:
            fill = rng.random(box.shape) * top
        else:
            fill = (rng.random(box.shape) < 0.5) * top
        box[...] = fill.astype(out.dtype) if np.issubdtype(out.dtype, np.integer) else fill
    return out


def patch_augmenter(share: float, size: int, rng: np.random.Generator) -> BatchPoison | None:
    """The batch rewrite `train_steps` takes (its `poison` hook) that pastes patches, labels
    kept; None when `share` is 0."""
    check_patch(share, size)
    if share == 0.0:
        return None

    def augment(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(paste_patches(x.numpy(), rng, share, size)), y

    return augment
