"""Partitioners: disjoint, complete, deterministic shards; real label skew where asked for."""

from __future__ import annotations

import numpy as np
import pytest

from dfl_ray.data import label_histogram, partition

LABELS = np.random.default_rng(0).integers(0, 10, size=4000)


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "labels_per_node"])
def test_shards_are_disjoint_and_complete(kind: str) -> None:
    shards = partition(LABELS, 10, kind=kind, seed=1)
    everything = np.concatenate([s.all for s in shards])
    assert len(everything) == len(LABELS)
    assert len(np.unique(everything)) == len(LABELS)
    for s in shards:
        assert len(np.intersect1d(s.train, s.val)) == 0
        assert len(s.val) >= 1


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "labels_per_node"])
def test_deterministic_for_a_seed(kind: str) -> None:
    a = partition(LABELS, 10, kind=kind, seed=3)
    b = partition(LABELS, 10, kind=kind, seed=3)
    c = partition(LABELS, 10, kind=kind, seed=4)
    assert all(np.array_equal(x.train, y.train) and np.array_equal(x.val, y.val) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.train, y.train) for x, y in zip(a, c, strict=True))


def dominant_share(kind: str, **kw: float) -> float:
    """Mean over nodes of the share of the node's two most common labels."""
    shards = partition(LABELS, 10, kind=kind, seed=0, **kw)
    shares = []
    for s in shards:
        hist = np.sort(label_histogram(LABELS, s.all, 10))[::-1]
        shares.append(hist[:2].sum() / hist.sum())
    return float(np.mean(shares))


def test_label_skew_present_for_noniid() -> None:
    assert dominant_share("iid") < 0.35  # ~0.2 for uniform labels
    assert dominant_share("dirichlet", alpha=0.1) > 0.75
    assert dominant_share("labels_per_node", labels_per_node=2) == 1.0


def test_labels_per_node_holds_exactly_k_labels() -> None:
    for s in partition(LABELS, 10, kind="labels_per_node", seed=0, labels_per_node=3):
        assert np.count_nonzero(label_histogram(LABELS, s.all, 10)) == 3


def test_label_histogram_counts() -> None:
    labels = np.array([0, 1, 1, 3])
    assert label_histogram(labels, np.array([0, 1, 2, 3]), 5).tolist() == [1, 2, 0, 1, 0]


def test_invalid_partition_kind() -> None:
    with pytest.raises(ValueError, match="unknown partition"):
        partition(LABELS, 10, kind="shards", seed=0)


def test_invalid_labels_per_node_cannot_cover_labels() -> None:
    with pytest.raises(ValueError, match="covers only 4 of 10 labels"):
        partition(LABELS, 2, kind="labels_per_node", seed=0, labels_per_node=2)


def test_invalid_alpha() -> None:
    with pytest.raises(ValueError, match="alpha must be > 0"):
        partition(LABELS, 10, kind="dirichlet", seed=0, alpha=0.0)
