"""Partitioners: each node gets a disjoint shard of the training set plus a validation split of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NodeShard:
    """Indices into the training set: `train` for local SGD, `val` for scoring received models."""

    train: np.ndarray
    val: np.ndarray

    @property
    def all(self) -> np.ndarray:
        return np.concatenate([self.train, self.val])



NAMED_PARTITIONS: dict[str, dict[str, object]] = {
    "iid": {"partition": "iid"},
    "dirichlet0.1": {"partition": "dirichlet", "alpha": 0.1},
    "labels2": {"partition": "labels_per_node", "labels_per_node": 2},
}
"""The experiment scripts' partitions by name, as config `data` sections."""

def label_histogram(labels: np.ndarray, indices: np.ndarray, num_classes: int) -> np.ndarray:
    """Count of each label among `labels[indices]` (for logging the non-IID skew)."""
    return np.bincount(labels[indices], minlength=num_classes)


def split_iid(labels: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), n)]


def split_dirichlet(
    labels: np.ndarray, n: int, rng: np.random.Generator, *, alpha: float, min_size: int = 10
) -> list[np.ndarray]:
    """Per-class Dirichlet(alpha) proportions over nodes (Hsu et al. 2019, arXiv 1909.06335).

    Resampled (bounded) until every node holds at least `min_size` samples, as is common practice.
    """
    if alpha <= 0:
        raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    min_size = min(min_size, len(labels) // n)
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(n)]
        for idx in by_class:
            props = rng.dirichlet(np.full(n, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for node, chunk in enumerate(np.split(idx, cuts)):
                parts[node].append(chunk)
        shards = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(s) for s in shards) >= min_size:
            return shards
    raise ValueError(
        f"dirichlet alpha={alpha} could not give each of {n} nodes {min_size} samples in 1000 tries; "
        "use more data, fewer nodes or a larger alpha"
    )


def split_labels_per_node(
    labels: np.ndarray, n: int, rng: np.random.Generator, *, k: int
) -> list[np.ndarray]:
    """Node i holds labels perm[(i*k + j) mod C] for j < k (the original's "1node2label" is k = 2).

    Each label's samples are split evenly among the nodes holding it. Needs n*k >= C so that every
    label (hence every sample) is assigned.
    """
    classes = np.unique(labels)
    c = len(classes)
    if not 1 <= k <= c:
        raise ValueError(f"labels_per_node must be in [1, {c}], got {k}")
    if n * k < c:
        raise ValueError(
            f"labels_per_node={k} with {n} nodes covers only {n * k} of {c} labels; need nodes*k >= {c}"
        )
    perm = rng.permutation(classes)
    holders: dict[int, list[int]] = {int(cl): [] for cl in classes}
    for node in range(n):
        for j in range(k):
            holders[int(perm[(node * k + j) % c])].append(node)
    parts: list[list[np.ndarray]] = [[] for _ in range(n)]
    for cl, nodes in holders.items():
        idx = rng.permutation(np.flatnonzero(labels == cl))
        for node, chunk in zip(nodes, np.array_split(idx, len(nodes)), strict=True):
            parts[node].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.empty(0, dtype=np.int64) for p in parts]


PARTITIONERS: dict[str, Callable[..., list[np.ndarray]]] = {
    "iid": split_iid,
    "dirichlet": split_dirichlet,
    "labels_per_node": split_labels_per_node,
}


def partition(
    labels: np.ndarray,
    n: int,
    *,
    kind: str,
    seed: int,
    val_fraction: float = 0.1,
    alpha: float = 0.1,
    labels_per_node: int = 2,
) -> list[NodeShard]:
    """Split the training labels into n disjoint, complete shards, each with a validation split."""
    if kind not in PARTITIONERS:
        raise ValueError(f"unknown partition {kind!r}; choose one of {sorted(PARTITIONERS)}")
    if n < 1 or n > len(labels):
        raise ValueError(f"cannot split {len(labels)} samples over {n} nodes")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if kind == "dirichlet":
        parts = split_dirichlet(labels, n, rng, alpha=alpha)
    elif kind == "labels_per_node":
        parts = split_labels_per_node(labels, n, rng, k=labels_per_node)
    else:
        parts = split_iid(labels, n, rng)
    shards = []
    for part in parts:
        shuffled = rng.permutation(part)
        n_val = int(round(val_fraction * len(part))) if len(part) > 1 else 0
        n_val = max(n_val, 1) if val_fraction > 0 and len(part) > 1 else n_val
        shards.append(NodeShard(train=np.sort(shuffled[n_val:]), val=np.sort(shuffled[:n_val])))
    return shards
