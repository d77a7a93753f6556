"""DFLNode handlers without Ray: the receive checks, receipts, aggregation and block sealing."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dfl_ray.attacks.adaptive import ProbeEdge
from dfl_ray.ledger import (
    Receipt,
    Transaction,
    check_payload,
    transaction,
    verify_chain,
)
from dfl_ray.ledger import signed as signed_module
from dfl_ray.messages import ReceiptMessage, TxMessage
from dfl_ray.models.flat import vector_to_model
from dfl_ray.node import NodeGroup
from dfl_ray.node.aggregator import Buffered
from tests.helpers import capture_aggregations, forge, local_host, small_config, state


@pytest.fixture
def host(tmp_path: Path) -> NodeGroup:
    return local_host(small_config(), tmp_path)


def published(host: NodeGroup, node_id: int = 0) -> list[tuple[int, Any]]:
    node = host.nodes[node_id]
    node.train()
    node.publish()
    return host.transport.take_inbox()


def test_round_delivers_scores_and_receipts(host: NodeGroup) -> None:
    host.begin_round(0)
    for node in host.nodes.values():
        assert len(node.buffer) == 3  # ring of 4, gossip reaches everyone
        assert all(0.0 <= b.score <= 1.0 for b in node.buffer.values())
        assert node.store is not None
        (tx, receipts), = node.store.pending_transactions()
        assert {r.receiver for r in receipts} == {
            other.identity.public_key for other in host.nodes.values() if other is not node
        }
        assert node.counters["duplicates"] > 0  # the ring delivers some twice; dropped first
        assert not node.rejected


def test_aggregation_and_blocks_with_endorsements(host: NodeGroup, tmp_path: Path) -> None:
    for r in range(2):
        assert host.begin_round(r) == []
        host.end_round(r)
        host.finish_round()
    for n, node in host.nodes.items():
        assert node.counters["aggregations"] == 2
        assert node.store is not None and node.store.height == 0
        block = node.store.tip()
        assert block is not None and len(block.entries) == 2
        assert len(block.endorsements) == 3
        summary = verify_chain(tmp_path / "chains" / f"node_{n}")
        assert summary.height == 0


def test_training_changes_the_model_and_aggregation_moves_it(host: NodeGroup) -> None:
    node = host.nodes[0]
    before = node.get_vector()
    host.begin_round(0)
    trained = node.get_vector()
    assert not np.array_equal(before, trained)
    host.end_round(0)
    assert not np.array_equal(trained, node.get_vector())


def test_a_rule_reading_the_round_start_gets_the_model_before_training(tmp_path: Path) -> None:
    config = small_config(defense={"rule": "dfl_guard", "buffer_size": 2,
                                   "params": {"oppose": 0.4}})
    host = local_host(config, tmp_path)
    node = host.nodes[0]
    before = node.get_vector()
    host.begin_round(0)
    assert node.aggregator.round_base is not None and np.array_equal(node.aggregator.round_base, before)
    host.end_round(0)
    assert node.counters["aggregations"] == 1
    # without the opposition test an honest node keeps no second copy of its model, only
    # the round-start output layer that the reversal test reads (LeNet: 500 x 10 weights, 10 biases)
    plain = local_host(small_config(defense={"rule": "dfl_guard"}), tmp_path / "plain")
    node = plain.nodes[0]
    start = node.get_vector()
    plain.begin_round(0)
    assert node.aggregator.round_base is None
    assert node.aggregator.head == slice(node.spec.size - 5010, node.spec.size) and node.aggregator.head_classes == 10
    assert node.aggregator.round_head is not None and np.array_equal(node.aggregator.round_head, start[node.aggregator.head])
    assert not np.array_equal(node.get_vector()[node.aggregator.head], node.aggregator.round_head)  # training moved it
    plain.end_round(0)
    assert node.counters["aggregations"] == 1
    off = local_host(small_config(defense={"rule": "dfl_guard", "params": {"reversal": 1.0}}),
                     tmp_path / "off")
    off.begin_round(0)
    assert off.nodes[0].aggregator.round_head is None and off.nodes[0].aggregator.round_base is None


def test_invalid_duplicate_is_dropped_silently(host: NodeGroup) -> None:
    msgs = published(host)
    target = host.nodes[1]
    (dest, msg), = [(d, m) for d, m in msgs if d == 1]
    target.on_transaction(msg)
    after_first = state(target)
    target.on_transaction(msg)
    assert state(target) == after_first
    assert target.counters["duplicates"] == 1 and not target.rejected


@pytest.mark.parametrize(
    "case, reason",
    [
        ("tampered", "bad_signature"),
        ("wrong_genesis", "wrong_genesis"),
        ("expired", "expired"),
        ("future", "from_future"),
        ("digest", "digest_mismatch"),
        ("shape", "bad_shape"),
        ("non_finite", "non_finite"),
        ("malformed", "malformed"),
    ],
)
def test_invalid_transaction_is_rejected_and_changes_nothing(
    host: NodeGroup, case: str, reason: str
) -> None:
    sender, target = host.nodes[0], host.nodes[1]
    vec = sender.get_vector()
    now = time.time()
    if case == "tampered":
        good = forge(sender, vec)
        header = bytearray(good.header)
        header[-1] ^= 0x01
        msg = TxMessage(bytes(header), good.payload, 1, 0)
    elif case == "wrong_genesis":
        msg = forge(sender, vec, genesis_hash=b"\x07" * 32)
    elif case == "expired":
        msg = forge(sender, vec, created_at=now - 120, expires_at=now - 60)
    elif case == "future":
        msg = forge(sender, vec, created_at=now + 600, expires_at=now + 660)
    elif case == "digest":
        good = forge(sender, vec)
        other = vec.copy()
        other[0] += 1.0
        msg = TxMessage(good.header, sender.transport.share(other), 1, 0)
    elif case == "shape":
        msg = forge(sender, vec[:-1].copy())
    elif case == "non_finite":
        bad = vec.copy()
        bad[5] = np.nan
        msg = forge(sender, bad)
    else:
        msg = TxMessage(b"\x00garbage", sender.transport.share(vec), 1, 0)
    before = state(target)
    target.on_transaction(msg)
    assert target.rejected == {reason: 1}
    assert state(target) == before
    assert host.transport.inbox == []  # no receipt, no forward


def test_invalid_replayed_seq(host: NodeGroup) -> None:
    sender, target = host.nodes[0], host.nodes[1]
    vec = sender.get_vector()
    target.on_transaction(forge(sender, vec, seq=5))
    host.transport.take_inbox()
    before = state(target)
    target.on_transaction(forge(sender, vec, seq=5, created_at=time.time() + 1))
    assert target.rejected == {"replayed_seq": 1}
    assert state(target) == before


def test_receipt_for_unknown_transaction_is_rejected(host: NodeGroup) -> None:
    msgs = published(host, 0)
    host.nodes[1].on_transaction(next(m for d, m in msgs if d == 1))
    receipt_msg = next(m for d, m in host.transport.take_inbox() if d == 0)
    host.nodes[2].on_receipt(receipt_msg)  # node 2 never published that transaction
    assert host.nodes[2].rejected == {"unknown_tx": 1}


def test_receipts_are_stored_once_and_a_self_signed_one_is_rejected(host: NodeGroup) -> None:
    msgs = published(host, 0)
    host.nodes[1].on_transaction(next(m for d, m in msgs if d == 1))
    receipt_msg = next(m for d, m in host.transport.take_inbox() if d == 0)
    owner = host.nodes[0]
    assert owner.store is not None
    owner.on_receipt(receipt_msg)
    owner.on_receipt(receipt_msg)  # a second copy is counted, not stored twice
    assert owner.counters["receipts"] == 2 and owner.rejected == {}
    (_, receipts), = owner.store.pending_transactions()
    assert len(receipts) == 1
    tx_id = Transaction.id_of(next(m for _, m in msgs).header)
    own = Receipt.create(owner.identity, tx_id=tx_id, score=0.5, received_at=time.time(), hop=1)
    owner.on_receipt(ReceiptMessage(own.encode()))  # a node does not receipt its own transaction
    assert owner.rejected == {"bad_receipt": 1}


def test_nodes_of_one_process_verify_a_signature_and_a_payload_once(
    host: NodeGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"verify": 0, "payload": 0}
    real_verify, real_payload = signed_module.verify_signature, check_payload

    def counting_verify(*args: Any) -> bool:
        calls["verify"] += 1
        return real_verify(*args)

    def counting_payload(*args: Any, **kwargs: Any) -> None:
        calls["payload"] += 1
        real_payload(*args, **kwargs)

    monkeypatch.setattr(signed_module, "verify_signature", counting_verify)
    monkeypatch.setattr("dfl_ray.node.memo.check_payload", counting_payload)
    sender = host.nodes[0]
    msg = forge(sender, sender.get_vector())
    for node_id in (1, 2, 3):
        host.nodes[node_id].on_transaction(msg)
        assert host.nodes[node_id].counters["accepted"] == 1
    assert calls == {"verify": 1, "payload": 1}
    # each node still runs its own state checks: a replay is caught by every node
    host.memo.forget()
    again = forge(sender, sender.get_vector(), seq=0, self_score=0.4)  # a new tx, the same seq
    for node_id in (1, 2):
        host.nodes[node_id].on_transaction(again)
        assert host.nodes[node_id].rejected == {"replayed_seq": 1}


def test_a_cached_payload_verdict_is_per_claimed_digest(host: NodeGroup) -> None:
    sender = host.nodes[0]
    vec = sender.get_vector()
    good = forge(sender, vec)
    host.nodes[1].on_transaction(good)
    assert host.nodes[1].counters["accepted"] == 1
    # the same payload handle under a transaction claiming another digest is checked anew
    lying = forge(sender, vec, seq=sender.seq + 2, model_digest=b"\x05" * 32)
    lying = TxMessage(lying.header, good.payload, 1, 0)
    for node_id in (2, 3):
        host.nodes[node_id].on_transaction(lying)
        assert host.nodes[node_id].rejected == {"digest_mismatch": 1}
    bad = vec.copy()
    bad[3] = np.inf
    for node_id in (2, 3):  # a failing verdict is shared too, with its reason
        host.nodes[node_id].on_transaction(forge(sender, bad, seq=sender.seq + 3))
    assert host.nodes[2].rejected["non_finite"] == 1 and host.nodes[3].rejected["non_finite"] == 1


def test_peers_in_the_process_do_not_hash_a_published_model_again(
    host: NodeGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[int] = []
    real_digest = transaction.payload_digest

    def counting_digest(*args: Any) -> bytes:
        hashed.append(1)
        return real_digest(*args)

    monkeypatch.setattr(transaction, "payload_digest", counting_digest)
    deliveries = published(host, 0)
    assert deliveries
    for dest, message in deliveries:
        host.nodes[dest].on_message(message)
        assert host.nodes[dest].counters["accepted"] == 1
    assert hashed == []  # the publisher's own digest stood for the payload check


def test_a_published_non_finite_model_is_still_rejected_by_peers(host: NodeGroup) -> None:
    sender = host.nodes[0]
    bad = sender.get_vector()
    bad[7] = np.nan
    vector_to_model(bad, sender.learner.model)
    sender.publish()
    deliveries = host.transport.take_inbox()
    assert deliveries
    for dest, message in deliveries:
        before = state(host.nodes[dest])
        host.nodes[dest].on_message(message)
        assert host.nodes[dest].rejected == {"non_finite": 1}
        assert state(host.nodes[dest]) == before


def test_a_receipt_signed_in_the_process_is_not_verified_again(
    host: NodeGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    msgs = published(host, 0)
    host.nodes[1].on_transaction(next(m for d, m in msgs if d == 1))
    receipt_msg = next(m for d, m in host.transport.take_inbox() if d == 0)
    verified: list[bytes] = []
    real_verify = signed_module.verify_signature

    def counting_verify(*args: Any) -> bool:
        verified.append(args[0])
        return real_verify(*args)

    monkeypatch.setattr(signed_module, "verify_signature", counting_verify)
    # a copy with one byte of its score changed has another id, so its signature is checked
    tampered = bytearray(receipt_msg.receipt)
    tampered[90] ^= 1
    host.nodes[0].on_receipt(ReceiptMessage(bytes(tampered)))
    assert host.nodes[0].rejected == {"bad_signature": 1} and len(verified) == 1
    host.nodes[0].on_receipt(receipt_msg)
    assert host.nodes[0].counters["receipts"] == 1 and len(verified) == 1
    host.memo.forget()  # a memo that no longer holds it verifies the signature again
    host.nodes[0].on_receipt(receipt_msg)
    assert len(verified) == 2 and host.nodes[0].counters["receipts"] == 2


def test_an_observing_attacker_keeps_the_honest_updates_of_its_buffer(tmp_path: Path) -> None:
    # nodes 2 and 3 collude (ALIE); ring of 4: node 3 receives 0, 1 and its colluder 2
    config = small_config(attack={"kind": "alie", "malicious": 2, "nodes": (2, 3)})
    host = local_host(config, tmp_path)
    attacker = host.nodes[3]
    assert attacker.params.colluders == frozenset({2})
    assert host.nodes[0].params.colluders == frozenset()
    assert attacker.observed is None
    host.begin_round(0)
    base = attacker.aggregator.round_base
    assert base is not None
    buffered = {attacker.directory[c]: b.vec for c, b in attacker.buffer.items()}
    assert set(buffered) == {0, 1, 2}
    host.end_round(0)
    observed = attacker.observed
    assert observed is not None and observed.shape == (2, attacker.spec.size)
    np.testing.assert_array_equal(observed, np.stack([buffered[0] - base, buffered[1] - base]))
    # the next publication is built from them: base + mean - z * std over them and its own update
    host.finish_round()
    start = attacker.get_vector()
    attacker.train()
    own = attacker.get_vector() - start
    attacker.publish()
    (_, message), *_ = host.transport.take_inbox()
    sent = attacker.transport.fetch(message.payload)
    u = np.vstack([observed, own[None, :]]).astype(np.float64)
    np.testing.assert_allclose(sent, start + u.mean(axis=0) - u.std(axis=0), rtol=0, atol=1e-5)
    assert host.nodes[0].observed is None  # honest nodes keep nothing of the kind


def test_an_attacker_that_reads_its_loss_is_handed_its_own_validation_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # probe_edge plays the receiver's validation probe on the attacker's own split
    config = small_config(attack={"kind": "probe_edge", "malicious": 2, "nodes": (2, 3)})
    host = local_host(config, tmp_path)
    handed: list[tuple[int, Any, np.ndarray]] = []
    real = ProbeEdge._publish_with_loss

    def spy(self: ProbeEdge, trained: np.ndarray, base: np.ndarray, rng: Any, turn: int,
            observed: Any, loss: Any) -> np.ndarray:
        out = real(self, trained, base, rng, turn, observed, loss)
        handed.append((turn, loss, out))
        return out

    monkeypatch.setattr(ProbeEdge, "_publish_with_loss", spy)
    host.begin_round(0)
    host.end_round(0)
    host.finish_round()
    attacker = host.nodes[3]
    attacker.train()
    trained = attacker.get_vector()
    attacker.publish()
    turn, loss, out = handed[-1]
    assert turn == 1 and loss == attacker.learner.loss  # its own learner's, bound to its split
    assert loss(trained) == pytest.approx(attacker.learner.loss(trained))
    assert not np.array_equal(out, trained)  # it attacked


def test_an_adaptive_attacker_trains_and_publishes_honestly_before_its_attack(tmp_path: Path) -> None:
    honest = local_host(small_config(), tmp_path / "honest")
    adaptive = local_host(
        small_config(attack={"kind": "label_shift", "malicious": 1,
                             "params": {"honest_turns": 1}}),
        tmp_path / "adaptive",
    )
    a, b = honest.nodes[3], adaptive.nodes[3]
    assert b.is_attacker
    for node in (a, b):
        node.train()
        node.publish()
    np.testing.assert_array_equal(a.get_vector(), b.get_vector())  # turn 0: honest
    for node in (a, b):
        node.train()
    assert not np.array_equal(a.get_vector(), b.get_vector())  # turn 1: labels shifted


def test_training_that_diverges_is_undone_and_counted(tmp_path: Path) -> None:
    host = local_host(small_config(training={"lr": 1e30}), tmp_path)  # SGD overflows at once
    node = host.nodes[0]
    start = node.get_vector()
    node.train()
    assert node.counters["diverged"] == 1
    np.testing.assert_array_equal(node.get_vector(), start)  # back at the round start
    # the round goes on: it publishes a finite model and aggregates without raising
    host.begin_round(0)
    host.end_round(0)
    assert node.counters["diverged"] == 2 and node.counters["aggregations"] == 1
    assert not any(other.rejected for other in host.nodes.values())


def test_training_that_explodes_without_overflow_is_undone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights blown up a million times are finite but diverged: undone like an overflow."""
    import dfl_ray.node.learner as learner_module

    real = learner_module.train_steps

    def exploding(model: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(model, *args, **kwargs)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1e6)
        return out

    host = local_host(small_config(), tmp_path)
    node = host.nodes[0]
    start = node.get_vector()
    monkeypatch.setattr(learner_module, "train_steps", exploding)
    node.train()
    assert node.counters["diverged"] == 1
    np.testing.assert_array_equal(node.get_vector(), start)
    monkeypatch.setattr(learner_module, "train_steps", real)
    node.train()  # ordinary training moves the model and is kept
    assert node.counters["diverged"] == 1 and not np.array_equal(node.get_vector(), start)


@pytest.mark.parametrize("limit", [0.5, math.inf])
def test_training_that_raises_the_validation_loss_is_undone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: float) -> None:
    """Training (from the node's fourth epoch on) whose weights stay finite and near the start
    but whose model got worse on the node's own validation split (here: the steps end with the output bias of the class rarest in
    that split raised by 20) has diverged
    when it raised the loss by more than training.max_loss_rise; inf keeps it."""
    import dfl_ray.node.learner as learner_module

    real = learner_module.train_steps

    host = local_host(small_config(training={"max_loss_rise": limit, "max_move": "inf"}),
                      tmp_path)
    node = host.nodes[0]
    counts = torch.bincount(node.learner.data.val_labels.long(), minlength=10)
    rarest = int(torch.argmin(counts))

    def worsening(model: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(model, *args, **kwargs)
        with torch.no_grad():
            *_, bias = model.parameters()
            bias[rarest] += 20.0
        return out

    assert node.learner.params.max_loss_rise == limit
    monkeypatch.setattr(learner_module, "train_steps", worsening)
    node.train()  # a node's first epochs are not read: it has no kept update yet
    assert node.counters["retrained"] == 0
    monkeypatch.setattr(learner_module, "train_steps", real)
    for _ in range(2):
        node.train()
    start = node.get_vector()
    monkeypatch.setattr(learner_module, "train_steps", worsening)
    node.train()
    worse = node.get_vector()
    rise = node.learner.loss(worse) - node.learner.loss(start)
    if math.isfinite(limit):
        assert node.counters["retrained"] == 1 and node.counters["diverged"] == 1  # twice
        np.testing.assert_array_equal(worse, start)
        monkeypatch.setattr(learner_module, "train_steps", real)
        node.train()  # ordinary training lowers the loss and is kept
        assert node.counters["diverged"] == 1 and not np.array_equal(node.get_vector(), start)
    else:
        assert rise > 0.5  # what the finite limit undid
        assert node.counters["diverged"] == 0


def test_a_diverged_try_is_tried_again_with_fresh_optimizer_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One bad try (the validation loss raised by 20 nats' worth of bias) is followed by a
    second from the round start with a fresh optimizer; a good second try is kept."""
    import dfl_ray.node.learner as learner_module

    real = learner_module.train_steps
    optimizers: list[Any] = []

    def first_bad(model: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        optimizers.append(optimizer)
        out = real(model, optimizer, *args, **kwargs)
        if len(optimizers) == 1:
            with torch.no_grad():
                *_, bias = model.parameters()
                bias[int(torch.argmin(counts))] += 20.0
        return out

    host = local_host(small_config(training={"max_move": "inf"}), tmp_path)
    node = host.nodes[0]
    counts = torch.bincount(node.learner.data.val_labels.long(), minlength=10)
    for _ in range(3):
        node.train()
    start = node.get_vector()
    monkeypatch.setattr(learner_module, "train_steps", first_bad)
    node.train()
    assert len(optimizers) == 2 and optimizers[1] is not optimizers[0]
    assert node.counters["retrained"] == 1 and node.counters["diverged"] == 0
    kept = node.get_vector()
    assert not np.array_equal(kept, start)
    assert node.learner.loss(kept) <= node.learner.loss(start) + 0.5


def stretch_training(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Patch local training so each update is `factor` x what SGD made (the returned dict's
    "factor", 1 to start): updates as long as the test needs."""
    import dfl_ray.node.learner as learner_module

    real = learner_module.train_steps
    stretch = {"factor": 1.0}

    def stretched(model: Any, *args: Any, **kwargs: Any) -> Any:
        before = [p.detach().clone() for p in model.parameters()]
        out = real(model, *args, **kwargs)
        with torch.no_grad():
            for p, b in zip(model.parameters(), before, strict=True):
                p.copy_(b + stretch["factor"] * (p - b))
        return out

    monkeypatch.setattr(learner_module, "train_steps", stretched)
    return stretch


def test_an_update_far_longer_than_the_nodes_recent_ones_has_diverged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With training.max_move 4, an update 10 x the median of the node's kept ones is tried
    again and undone; before the node has kept three updates the test does not apply."""
    host = local_host(small_config(training={"max_loss_rise": "inf", "max_move": 4.0}),
                      tmp_path)
    node = host.nodes[0]
    stretch = stretch_training(monkeypatch)
    stretch["factor"] = 10.0
    node.train()  # no history yet: kept
    assert node.counters["retrained"] == 0 and len(node.learner.moves) == 1
    stretch["factor"] = 1.0
    for _ in range(3):
        node.train()
    assert node.counters["retrained"] == 0 and len(node.learner.moves) == 4
    typical = float(np.median(node.learner.moves))
    start = node.get_vector()
    stretch["factor"] = 40.0
    node.train()
    assert node.counters["retrained"] == 1 and node.counters["diverged"] == 1
    np.testing.assert_array_equal(node.get_vector(), start)
    assert len(node.learner.moves) == 4  # an undone update is not remembered
    stretch["factor"] = 1.0
    node.train()
    assert node.counters["diverged"] == 1
    assert float(np.linalg.norm(node.get_vector() - start)) <= 4.0 * typical


def test_a_long_update_that_lowers_the_validation_loss_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The move test undoes a long update only when the node's validation loss did not fall:
    a node whose aggregate lies far from its own data moves far to recover, and undoing that
    would hold it at the aggregate round after round."""
    host = local_host(small_config(training={"max_loss_rise": "inf", "max_move": 4.0}),
                      tmp_path)
    node = host.nodes[0]
    stretch = stretch_training(monkeypatch)
    for _ in range(4):
        node.train()
    assert len(node.learner.moves) == 4
    typical = float(np.median(node.learner.moves))
    start = node.get_vector()
    change = {"after": -0.1}  # the trained model's loss minus the round start's

    def loss(vec: np.ndarray) -> float:
        return 2.0 if np.array_equal(vec, start) else 2.0 + change["after"]

    monkeypatch.setattr(node.learner, "loss", loss)
    stretch["factor"] = 12.0
    node.train()
    assert node.counters["retrained"] == 0 and len(node.learner.moves) == 5
    assert node.learner.moves[-1] > 4.0 * typical  # long, and kept since the loss fell
    start = node.get_vector()
    change["after"] = 0.01
    node.train()
    assert node.counters["retrained"] == 1 and node.counters["diverged"] == 1
    np.testing.assert_array_equal(node.get_vector(), start)


def test_a_model_of_a_later_round_waits_for_the_next_aggregation(tmp_path: Path) -> None:
    """Async: a creator a round ahead publishes its next model before this node aggregated the
    current round. The node aggregates the creator's model of its own round (built on a base like
    its own round start, which the defense reads updates against) and keeps the newer one for
    the next aggregation."""
    host = local_host(small_config(), tmp_path)
    host.begin_round(0)  # every node published seq 0; node 0 buffered the three others'
    node, fast = host.nodes[0], host.nodes[1]
    key = fast.identity.public_key
    current = node.buffer[key].vec.copy()
    fast.aggregate()
    fast.train()
    fast.publish()  # seq 1, built on fast's newer aggregate
    host.transport.flush()
    host.deliver([])
    assert node.seq == 0 and node.buffer[key].seq == 0 and node.ahead[key].seq == 1
    later = node.ahead[key].vec.copy()
    seen = capture_aggregations(node)
    assert node.aggregate()
    np.testing.assert_array_equal(seen[0][key], current)
    assert set(node.buffer) == {key} and node.buffer[key].seq == 1 and not node.ahead
    node.train()
    node.publish()  # its round 1: the kept model is of that round now
    for other in (2, 3):
        host.nodes[other].aggregate()
        host.nodes[other].train()
        host.nodes[other].publish()
    host.transport.flush()
    host.deliver([])
    assert node.aggregate()
    np.testing.assert_array_equal(seen[1][key], later)


@pytest.mark.parametrize("buffered_seq", [3, 0])
def test_a_node_behind_its_peers_aggregates_their_newest_models(tmp_path: Path,
                                                                buffered_seq: int) -> None:
    """A node behind a creator takes the creator's newest model: with no model of its own round
    from it (3), or with one (0) when the newest is more than a round ahead (bounded staleness
    never lets a peer it waits for get that far)."""
    host = local_host(small_config(), tmp_path)
    host.begin_round(0)
    node = host.nodes[0]
    assert node.seq == 0
    key = next(iter(node.buffer))
    old = node.buffer[key]
    newest = Buffered(old.vec + np.float32(0.01), old.score, 5)
    node.buffer[key] = Buffered(old.vec, old.score, buffered_seq)
    node.ahead[key] = newest
    seen = capture_aggregations(node)
    assert node.aggregate()
    np.testing.assert_array_equal(seen[0][key], newest.vec)
    assert not node.buffer and not node.ahead
