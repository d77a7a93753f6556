"""The chain store's cheap paths: trusted records, existence checks, retention 0."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ledger_factories import Net

from dfl_ray.ledger import (
    BlockEntry,
    ChainError,
    ChainStore,
    Receipt,
    Transaction,
    ValidationError,
    model_digest,
    verify_chain,
)
from dfl_ray.ledger import block as block_module
from dfl_ray.ledger import store as store_module

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


def test_verified_append_checks_no_signature(
    store: ChainStore, net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_verifies(monkeypatch)
    checked: list[bytes] = []
    real = block_module.verify_signature

    def counted(pubkey: bytes, signature: bytes, message: bytes) -> bool:
        checked.append(pubkey)
        return real(pubkey, signature, message)

    monkeypatch.setattr(block_module, "verify_signature", counted)
    blocks = net.chain(2)
    store.append_block(blocks[0], verified=True)
    assert checked == [] and calls == {"tx": 0, "receipt": 0}
    store.append_block(blocks[1])
    # Without the flag: the creator's, each receipt's and each endorsement's signature, once.
    n_receipts = sum(len(e.receipts) for e in blocks[1].entries)
    assert calls["tx"] == len(blocks[1].entries)
    assert len(checked) == 1 + n_receipts + len(blocks[1].endorsements)


def test_invalid_forged_receipt_in_a_trusted_block_is_caught_by_verify_chain(
    tmp_path: Path, net: Net
) -> None:
    path = tmp_path / "node"
    tx = net.tx(0)
    forged = replace(net.receipts(tx)[0], score=0.01)  # the receiver signed another score
    block = net.block(0, net.genesis.hash, [BlockEntry(tx, (forged,))], endorsed=False)
    with ChainStore.create(path, net.genesis, net.owner.public_key) as s:
        s.add_own_transaction(tx)
        with pytest.raises(ValidationError) as err:
            s.append_block(block)
        assert err.value.reason == "bad_receipt" and s.height == -1
        s.append_block(block, verified=True)  # a caller's false word is taken...
    with pytest.raises(ChainError) as chain_err:
        verify_chain(path)  # ...and the verifier, which trusts nothing, finds it
    assert chain_err.value.reason == "bad_receipt" and chain_err.value.height == 0


def test_verified_payload_is_not_hashed_again(
    tmp_path: Path, net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[int] = []
    real = store_module.payload_digest

    def counted(spec_id: bytes, data: object) -> bytes:
        hashed.append(1)
        return real(spec_id, data)  # type: ignore[arg-type]

    monkeypatch.setattr(store_module, "payload_digest", counted)
    with ChainStore.create(tmp_path / "n", net.genesis, net.owner.public_key,
                           keep_payloads=2) as s:
        vec = net.vector(3)
        digest = model_digest(net.spec_id, vec)
        s.put_payload(digest, vec, verified=True)
        assert hashed == []
        s.put_payload(model_digest(net.spec_id, net.vector(4)), net.vector(4))
        assert len(hashed) == 1
        assert s.get_payload(digest) == vec.tobytes()
        with pytest.raises(ValueError, match="float32"):
            s.put_payload(digest, vec.astype(np.float64), verified=True)


def test_dropped_payload_files_are_recycled(tmp_path: Path, net: Net) -> None:
    with ChainStore.create(tmp_path / "n", net.genesis, net.owner.public_key,
                           keep_payloads=1) as s:
        folder = s.path / "payloads"
        digests = [model_digest(net.spec_id, net.vector(i)) for i in range(3)]
        s.put_payload(digests[0], net.vector(0))
        first = (folder / digests[0].hex()).stat().st_ino
        s.put_payload(digests[1], net.vector(1))
        assert (folder / ".spare").stat().st_ino == first  # the dropped file, kept aside
        s.put_payload(digests[2], net.vector(2))
        assert (folder / digests[2].hex()).stat().st_ino == first  # ...and overwritten
        # A shorter payload in a longer spare: the file is cut to the new length.
        short = b"\7" * 12
        short_digest = store_module.payload_digest(net.spec_id, short)
        s.put_payload(short_digest, short)
        assert s.get_payload(short_digest) == short
        assert sorted(p.name for p in folder.iterdir()) == [".spare", short_digest.hex()]
        assert verify_chain(s.path).n_blocks == 0  # the spare is never read as a payload
