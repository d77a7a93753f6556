"""A node's checkpoint: written with its ledger writes, read back when its process restarts.

The chain is the truth for what the node published and sealed (its seq and last model digest
come from the store); the signed checkpoint carries the local state no block records. A node
restored from it continues its chain with no gap: the next transaction takes the seq after the
last stored one, and a block it had proposed is proposed again for endorsement.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dfl_ray.ledger import Checkpoint, decode_state
from dfl_ray.ledger.checkpoint import parts_digest, state_parts

if TYPE_CHECKING:
    from dfl_ray.node.node import DFLNode


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return dict(rng.bit_generator.state)


def _set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


def node_state(node: DFLNode) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON values, arrays) of everything a restarted node needs besides its chain."""
    meta: dict[str, Any] = {
        "turn": node.turn,
        "own_score": float(node.own_score),
        "reputations": dict(node.reputations),
        "last_seq": {k.hex(): int(v) for k, v in node.last_seq.items()},
        "counters": dict(node.counters),
        "rejected": dict(node.rejected),
        "staleness": {str(k): int(v) for k, v in node.staleness.items()},
        "seconds": node.timer.snapshot(),
        "learner_rng": _rng_state(node.learner.rng),
        "attack_rng": _rng_state(node.attack_rng),
        "train_moves": list(node.learner.moves),
    }
    model = node.learner.vector()
    arrays: dict[str, np.ndarray] = {"model": model}
    agg = node.aggregator
    if agg.anchor is not None and agg.velocity is not None:
        arrays["velocity"] = agg.velocity
        # After an aggregation the anchor is the model itself: kept once.
        meta["anchor_is_model"] = bool(np.array_equal(agg.anchor, model))
        if not meta["anchor_is_model"]:
            arrays["anchor"] = agg.anchor
    optimizer = node.learner.optimizer
    for i, p in enumerate(node.learner.model.parameters()):
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            arrays[f"sgd_{i:03d}"] = buf.detach().cpu().numpy().astype(np.float32, copy=False)
    if node.learner.triggers is not None:
        scan_meta, scan_arrays = node.learner.triggers.state()
        meta["triggers"] = scan_meta
        arrays.update(scan_arrays)
    return meta, arrays


def save_checkpoint(node: DFLNode) -> None:
    """Sign and store the node's state (inside the caller's ledger batch, if any)."""
    store = node.store
    if store is None:
        return
    parts = state_parts(*node_state(node))
    cp = Checkpoint.create(node.identity, genesis_hash=node.genesis_hash, turn=node.turn,
                           published=node.seq + 1, state_digest=parts_digest(parts),
                           created_at=node.clock())
    store.save_checkpoint(cp, parts, verified=True)  # signed over these parts just above


def restore(node: DFLNode) -> bool:
    """Bring a freshly built node back to where its store says it was; False for a new store."""
    store = node.store
    if store is None:
        return False
    found = store.checkpoint()
    last = store.last_own_transaction()
    if found is None and last is None:
        return False
    if found is not None:
        meta, arrays = decode_state(found[1])
        _apply(node, meta, arrays)
    if last is not None:
        node.seq = last.seq
        node.last_digest = last.model_digest
    node.turn = max(node.turn, node.seq + 1)
    candidate = store.candidate()
    if candidate is not None:
        node.candidate = candidate
        node.awaiting = {r.receiver for e in candidate.entries for r in e.receipts}
        node.endorsements = []
        node.resend_candidate = True
    node.counters["restored"] += 1
    return True


def _apply(node: DFLNode, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    node.turn = int(meta["turn"])
    node.own_score = float(meta["own_score"])
    node.reputations = {str(k): float(v) for k, v in meta["reputations"].items()}
    node.last_seq = {bytes.fromhex(k): int(v) for k, v in meta["last_seq"].items()}
    node.counters = Counter({str(k): int(v) for k, v in meta["counters"].items()})
    node.rejected = Counter({str(k): int(v) for k, v in meta["rejected"].items()})
    node.staleness = Counter({int(k): int(v) for k, v in meta["staleness"].items()})
    for cat, sec in meta["seconds"].items():
        node.timer.seconds[str(cat)] = float(sec)
    _set_rng_state(node.learner.rng, meta["learner_rng"])
    _set_rng_state(node.attack_rng, meta["attack_rng"])
    # Checkpoints written before the divergence tests carry no history: the tests wait for it.
    node.learner.moves.clear()
    node.learner.moves.extend(float(m) for m in meta.get("train_moves", ()))
    node.learner.load(np.array(arrays["model"], dtype=np.float32))
    agg = node.aggregator
    if "velocity" in arrays and agg.anchor is not None:
        anchor = arrays["model"] if meta.get("anchor_is_model") else arrays["anchor"]
        agg.anchor = np.array(anchor, dtype=np.float32)
        agg.velocity = np.array(arrays["velocity"], dtype=np.float32)
    if node.learner.triggers is not None and "triggers" in meta:
        node.learner.triggers.load_state(meta["triggers"], arrays)
    optimizer = node.learner.optimizer
    for i, p in enumerate(node.learner.model.parameters()):
        buf = arrays.get(f"sgd_{i:03d}")
        if buf is not None:
            optimizer.state[p]["momentum_buffer"] = torch.tensor(buf, device=p.device)
