"""Random-patch augmentation: what it pastes, where, and that honest nodes train on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfl_ray.config import ConfigError, config_from_dict
from dfl_ray.models.augment import paste_patches, patch_augmenter
from dfl_ray.node import learner as learner_module
from dfl_ray.node.build import sgd_settings
from tests.helpers import local_host, small_config


def test_patches_land_on_about_the_share_and_stay_within_the_size() -> None:
    images = np.zeros((2000, 28, 28), dtype=np.uint8)
    out = paste_patches(images, np.random.default_rng(0), 0.5, 4)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert not images.any()  # the input is left as it was
    changed = out.reshape(len(out), -1).any(axis=1)
    # a patch can be all zeros (a solid 0 or an empty binary pattern): a few are unseen
    assert 0.40 < changed.mean() <= 0.5 + 0.05
    for img in out[changed]:
        rows, cols = np.nonzero(img)
        assert rows.max() - rows.min() < 4 and cols.max() - cols.min() < 4
    # patches reach every part of the image, the corners where digits never are included
    reached = out.astype(bool).any(axis=0)
    assert reached[0, 0] and reached[-1, -1] and reached[0, -1] and reached[-1, 0]


def test_no_share_changes_nothing_and_channels_are_patched_alike() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 3, 10, 10), dtype=np.uint8)
    np.testing.assert_array_equal(paste_patches(images, rng, 0.0, 8), images)
    out = paste_patches(images, rng, 1.0, 30)  # sides capped at the image's
    assert (out != images).any(axis=(1, 2, 3)).sum() >= 6
    assert patch_augmenter(0.0, 8, rng) is None


@pytest.mark.parametrize(("share", "size", "message"), [
    (1.5, 8, "patch_share must be a number in \\[0, 1\\]"),
    (-0.1, 8, "patch_share"),
    (0.5, 0, "patch_size must be an integer >= 1"),
    (0.5, 2.5, "patch_size"),
])
def test_invalid_patch_settings_are_named(share: float, size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paste_patches(np.zeros((1, 4, 4), np.uint8), np.random.default_rng(0), share, size)


def test_patch_settings_are_checked_and_reach_the_nodes() -> None:
    with pytest.raises(ConfigError, match=r"training\.patch_share must be <= 1.0"):
        config_from_dict({"training": {"patch_share": 2.0}})
    with pytest.raises(ConfigError, match=r"training\.patch_size must be >= 1"):
        config_from_dict({"training": {"patch_size": 0}})
    sgd = sgd_settings(config_from_dict({"training": {"patch_share": 0.25, "patch_size": 5}}))
    assert (sgd.patch_share, sgd.patch_size) == (0.25, 5)


def test_an_honest_node_trains_on_patched_batches_and_a_poisoner_on_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = local_host(small_config(), tmp_path / "plain").nodes[0]
    patched = local_host(small_config(training={"patch_share": 1.0, "patch_size": 8}),
                         tmp_path / "patched").nodes[0]
    again = local_host(small_config(training={"patch_share": 1.0, "patch_size": 8}),
                       tmp_path / "again").nodes[0]
    np.testing.assert_array_equal(plain.get_vector(), patched.get_vector())
    for node in (plain, patched, again):
        node.train()
    assert not np.array_equal(plain.get_vector(), patched.get_vector())
    np.testing.assert_array_equal(patched.get_vector(), again.get_vector())  # seeded

    hooks: list[object] = []
    real = learner_module.train_steps

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        hooks.append(kwargs["poison"])
        return real(*args, **kwargs)

    monkeypatch.setattr(learner_module, "train_steps", spy)
    data = patched.learner.data
    images, labels = data.images[data.train_idx[:16]], data.labels[data.train_idx[:16]]
    plain.train()
    patched.train()
    assert hooks[0] is None  # patch_share 0: batches as they are
    px, py = hooks[1](images, labels)  # type: ignore[operator]
    assert (px != images).any(dim=(1, 2)).sum() >= 12 and (py == labels).all()

    seen: list[np.ndarray] = []

    def poison(x, y):  # type: ignore[no-untyped-def]
        seen.append(x.numpy().copy())
        return x, y

    monkeypatch.setattr(learner_module, "train_steps", real)
    patched.learner.train(patched.learner.vector(), poison)
    originals = data.images[data.train_idx].numpy().reshape(len(data.train_idx), -1)
    # a data poisoner's batches reach it unpatched: every one is an image of the shard
    for batch in seen:
        for img in batch.reshape(len(batch), -1):
            assert (originals == img).all(axis=1).any()
