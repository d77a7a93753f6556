"""The chain store's cheap paths: trusted records, existence checks, retention 0."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ledger_factories import Net

from dfl_ray.ledger import ChainStore, Receipt, Transaction, ValidationError, model_digest

State = Callable[[ChainStore], tuple[object, ...]]


def count_verifies(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"tx": 0, "receipt": 0}
    tx_verify, receipt_verify = Transaction.verify, Receipt.verify

    def counted_tx(self: Transaction) -> None:
        calls["tx"] += 1
        tx_verify(self)

    def counted_receipt(self: Receipt) -> None:
        calls["receipt"] += 1
        receipt_verify(self)

    monkeypatch.setattr(Transaction, "verify", counted_tx)
    monkeypatch.setattr(Receipt, "verify", counted_receipt)
    return calls


def test_verified_records_skip_only_the_signature_check(
    store: ChainStore, net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_verifies(monkeypatch)
    tx = net.tx(0)
    store.add_own_transaction(tx, verified=True)
    assert store.add_receipt(net.receipts(tx)[0], verified=True)
    peer_tx = net.tx(0, creator=net.peers[0])
    assert store.add_issued_receipt(net.receipts(peer_tx, [net.owner])[0], verified=True)
    assert calls == {"tx": 0, "receipt": 0}
    store.add_own_transaction(net.tx(1))
    assert store.add_receipt(net.receipts(tx)[1])
    assert store.add_issued_receipt(net.receipts(net.tx(1, creator=net.peers[0]), [net.owner])[0])
    assert calls == {"tx": 1, "receipt": 2}  # unverified callers: each signature checked once
    assert [len(r) for _, r in store.pending_transactions()] == [2, 0]


def test_invalid_verified_receipts_still_checked(
    store: ChainStore, net: Net, state: State
) -> None:
    store.add_own_transaction(net.tx(0))
    before = state(store)
    stranger = net.receipts(net.tx(9), [net.peers[0]])[0]
    with pytest.raises(ValidationError) as err:
        store.add_receipt(stranger, verified=True)
    assert err.value.reason == "bad_receipt"
    own = net.receipts(net.tx(0), [net.owner])[0]
    with pytest.raises(ValidationError) as err:
        store.add_receipt(own, verified=True)
    assert err.value.reason == "bad_receipt"
    not_mine = net.receipts(net.tx(0, creator=net.peers[0]), [net.peers[1]])[0]
    with pytest.raises(ValidationError) as err:
        store.add_issued_receipt(not_mine, verified=True)
    assert err.value.reason == "bad_receipt"
    with pytest.raises(ValidationError) as err:
        store.add_own_transaction(net.tx(1, creator=net.peers[0]), verified=True)
    assert err.value.reason == "wrong_creator"
    assert state(store) == before


def test_has_transaction_and_pending_count(store: ChainStore, net: Net) -> None:
    txs = [net.tx(s) for s in range(3)]
    assert store.pending_count() == 0 and not store.has_transaction(txs[0].tx_id)
    for tx in txs:
        store.add_own_transaction(tx)
    assert store.pending_count() == 3
    assert all(store.has_transaction(tx.tx_id) for tx in txs)
    assert not store.has_transaction(net.tx(0, creator=net.peers[0]).tx_id)
    store.append_block(net.block(0, net.genesis.hash, [net.entry(0), net.entry(1)]))
    assert store.pending_count() == 1 and store.has_transaction(txs[0].tx_id)  # sealed, still own


def test_retention_zero_writes_no_payload_file(tmp_path: Path, net: Net) -> None:
    with ChainStore.create(tmp_path / "n", net.genesis, net.owner.public_key,
                           keep_payloads=0) as s:
        vec = net.vector(1)
        digest = model_digest(net.spec_id, vec)
        with s.batch():
            s.put_payload(digest, vec)
        s.put_payload(digest, vec.tobytes())
        assert s.get_payload(digest) is None
        assert list((s.path / "payloads").iterdir()) == []


def test_invalid_payload_with_retention_zero(tmp_path: Path, net: Net) -> None:
    with ChainStore.create(tmp_path / "n", net.genesis, net.owner.public_key,
                           keep_payloads=0) as s:
        wrong = model_digest(net.spec_id, net.vector(2))
        with pytest.raises(ValidationError) as err:
            s.put_payload(wrong, net.vector(1))
        assert err.value.reason == "digest_mismatch"
