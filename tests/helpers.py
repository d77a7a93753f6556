"""Builders for small DFL networks on synthetic data, without Ray, and for the messages they get."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from dfl_ray.config import Config, config_from_dict
from dfl_ray.data import partition
from dfl_ray.ledger import Genesis, Transaction, model_digest
from dfl_ray.messages import TxMessage
from dfl_ray.models import LeNet, ModelSpec, model_to_vector
from dfl_ray.node import DFLNode, HostSetup, NodeGroup, make_genesis
from dfl_ray.topology import build_topology, neighbors

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """Import a script of the repository (experiments/, benchmarks/) as a module, by path."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses in the script look their module up here
    spec.loader.exec_module(module)
    return module


def synthetic_arrays(n_train: int = 240, n_test: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    """Learnable toy digits: each class lights up its own horizontal band of pixels."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, size=n)
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 + 2 * y : 4 + 2 * y, 4:24] = 250
        return images, labels.astype(np.int64)

    tr_x, tr_y = make(n_train)
    te_x, te_y = make(n_test)
    return {"train_images": tr_x, "train_labels": tr_y, "test_images": te_x, "test_labels": te_y}


def small_config(**sections: dict[str, Any]) -> Config:
    tree: dict[str, Any] = {
        "topology": {"kind": "ring", "nodes": 4},
        "attack": {"kind": "none", "malicious": 0},
        "defense": {"rule": "dfl_guard", "buffer_size": 2},
        "training": {"local_steps": 2, "batch_size": 16},
        "ledger": {"block_size": 2},
        "experiment": {"rounds": 2},
    }
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return config_from_dict(tree)


def genesis_for(config: Config, initial: np.ndarray, spec: ModelSpec) -> Genesis:
    return make_genesis(config, spec, initial, config.topology.nodes, network_id="test")


def local_host(
    config: Config,
    run_dir: Path | None,
    seed: int = 0,
    *,
    n_train: int = 240,
    val_fraction: float = 0.2,
    clock: Callable[[], float] | None = None,
) -> NodeGroup:
    """All nodes of `config` in one host, connected, with synthetic data."""
    torch.manual_seed(seed)
    model = LeNet()
    spec = ModelSpec.of(model, "lenet")
    initial = model_to_vector(model)
    arrays: dict[str, Any] = synthetic_arrays(n_train=n_train, seed=seed)
    n = config.topology.nodes
    shards = partition(arrays["train_labels"], n, kind="iid", seed=seed, val_fraction=val_fraction)
    graph = build_topology(
        config.topology.kind, n, degree=config.topology.degree, seed=seed
    )
    setup = HostSetup(
        host_index=0,
        node_ids=tuple(range(n)),
        config=config,
        shards=dict(enumerate(shards)),
        neighbors=neighbors(graph),
        genesis=genesis_for(config, initial, spec).encode(),
        spec=spec,
        arrays={**arrays, "initial": initial},
        run_dir=str(run_dir) if run_dir is not None else None,
    )
    host = NodeGroup(setup)
    host.connect({key: node for node, key in host.public_keys().items()})
    if clock is not None:
        for node in host.nodes.values():
            node.clock = clock
    return host


def state(node: DFLNode) -> tuple[Any, ...]:
    assert node.store is not None
    return (
        frozenset(node.seen),
        dict(node.last_seq),
        {k: v.seq for k, v in node.buffer.items()},
        frozenset(node.store.issued_receipt_ids()),
        node.counters["accepted"],
    )


def forge(sender: DFLNode, vec: np.ndarray, **overrides: Any) -> TxMessage:
    """A transaction by `sender` for `vec`, with any field overridden, signed properly."""
    now = time.time()
    fields: dict[str, Any] = {
        "genesis_hash": sender.genesis_hash,
        "seq": sender.seq + 1,
        "created_at": now,
        "expires_at": now + 60.0,
        "ttl": 10,
        "model_digest": model_digest(sender.spec.id, vec),
        "base_digest": b"",
        "self_score": 0.5,
        "n_samples": 10,
    }
    fields.update(overrides)
    tx = Transaction.create(sender.identity, **fields)
    return TxMessage(tx.encode(), sender.transport.share(vec), 1, sender.id)


def own_seqs(run_dir: Path, node: int) -> list[int]:
    """The seqs of every transaction node `node`'s store holds, sealed or pending, in order
    (read-only, so it works beside a running node)."""
    db = run_dir / "chains" / f"node_{node}" / "chain.sqlite"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [seq for (seq,) in conn.execute("SELECT seq FROM own_txs ORDER BY seq")]
    finally:
        conn.close()


def capture_rule_calls(node: DFLNode) -> list[dict[bytes, np.ndarray]]:
    """Record, for each call of `node`'s rule from now on, the models it got by sender: one
    call per aggregation, two when the rule kept stale models (as sent, then moved)."""
    calls: list[dict[bytes, np.ndarray]] = []
    real = node.aggregator._rule

    def rule(own: Any, own_score: float, senders: Any, models: Any, scores: Any,
             reputations: Any) -> Any:
        calls.append({bytes.fromhex(s): np.array(m) for s, m in zip(senders, models, strict=True)})
        return real(own, own_score, senders, models, scores, reputations)

    node.aggregator._rule = rule  # type: ignore[method-assign]
    return calls


def capture_aggregations(node: DFLNode) -> list[dict[bytes, np.ndarray]]:
    """Record, for each aggregation `node` runs from now on, the model each sender counted
    as: the rule's last look at it (moved, when the rule kept a stale model); the list fills
    as the node aggregates."""
    seen: list[dict[bytes, np.ndarray]] = []
    calls = capture_rule_calls(node)
    real = node.aggregator.aggregate

    def capture(*args: Any, **kwargs: Any) -> Any:
        first = len(calls)
        result = real(*args, **kwargs)
        merged: dict[bytes, np.ndarray] = {}
        for call in calls[first:]:
            merged.update(call)
        seen.append(merged)
        return result

    node.aggregator.aggregate = capture  # type: ignore[method-assign]
    return seen
