"""The chain store: creation, reopening, appends, records, batches, trusted records, rejections."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from ledger_factories import Net, rejected

from dfl_ray.ledger import (
    Block,
    BlockEntry,
    ChainError,
    ChainStore,
    Endorsement,
    Receipt,
    StoreError,
    Transaction,
    ValidationError,
    endorsement_message,
    model_digest,
    verify_chain,
)
from dfl_ray.ledger import block as block_module
from dfl_ray.ledger import signed as signed_module

State = Callable[[ChainStore], tuple[object, ...]]


def _next_block(net: Net, store: ChainStore, entries: list[BlockEntry] | None = None,
                **overrides: object) -> Block:
    """A valid block 1 on `filled` (seqs 2, 3), with fields overridden before signing."""
    fields: dict[str, object] = {
        "height": store.height + 1,
        "prev_hash": store.tip_hash,
        "genesis_hash": net.genesis.hash,
        "created_at": net.now + 10,
        "entries": entries if entries is not None else [net.entry(2), net.entry(3)],
        "model_digest_after": b"\1" * 32,
        "reputation_digest": b"\2" * 32,
    }
    creator = overrides.pop("creator", net.owner)
    fields.update(overrides)
    return Block.create(creator, **fields)  # type: ignore[arg-type]


def test_create_and_reopen(tmp_path: Path, net: Net) -> None:
    path = tmp_path / "node"
    with ChainStore.create(path, net.genesis, net.owner.public_key, keep_payloads=3) as s:
        assert s.height == -1 and s.tip() is None and s.tip_hash == net.genesis.hash
        assert s.last_own_seq is None and s.pending_transactions() == []
        s.append_block(net.chain(1)[0])
    with ChainStore.open(path, expected_genesis=net.genesis) as s:
        assert s.genesis == net.genesis and s.owner == net.owner.public_key
        assert s.keep_payloads == 3 and s.height == 0
    with ChainStore.open(path / "chain.sqlite") as s:  # the database file works as a path too
        assert s.height == 0


def test_invalid_open_of_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=str(tmp_path / "nowhere")):
        ChainStore.open(tmp_path / "nowhere")


def test_invalid_open_with_another_genesis(tmp_path: Path, net: Net) -> None:
    ChainStore.create(tmp_path / "node", net.genesis, net.owner.public_key).close()
    other = net.make_genesis(ttl=3, block_size=7)
    with pytest.raises(StoreError, match="differing fields: ttl, block_size"):
        ChainStore.open(tmp_path / "node", expected_genesis=other)
    with ChainStore.open(tmp_path / "node", expected_genesis=net.genesis) as s:
        assert s.height == -1  # the failed open left the store usable and unlocked


def test_invalid_create_over_an_existing_store(store: ChainStore, net: Net) -> None:
    with pytest.raises(StoreError, match="already exists"):
        ChainStore.create(store.path, net.genesis, net.owner.public_key)


def test_invalid_second_open_while_locked(store: ChainStore) -> None:
    with pytest.raises(StoreError, match="already open"):
        ChainStore.open(store.path)


def test_invalid_use_after_close(tmp_path: Path, net: Net) -> None:
    s = ChainStore.create(tmp_path / "node", net.genesis, net.owner.public_key)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        _ = s.height


def test_invalid_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "chain.sqlite").write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StoreError, match="not a chain store|cannot open"):
        ChainStore.open(tmp_path / "a")
    (tmp_path / "b").mkdir()
    other = sqlite3.connect(tmp_path / "b" / "chain.sqlite")
    other.execute("CREATE TABLE genesis (id INTEGER, data BLOB)")
    other.commit()
    other.close()
    with pytest.raises(StoreError, match="holds no genesis"):
        ChainStore.open(tmp_path / "b")


def test_append_and_read_back(store: ChainStore, net: Net) -> None:
    blocks = net.chain(3)
    for b in blocks:
        store.append_block(b)
    assert store.height == 2 and store.tip() == blocks[-1] and store.tip_hash == blocks[-1].hash
    assert list(store.blocks()) == blocks
    assert store.block_at(1) == blocks[1] and store.block_at(3) is None
    tx = blocks[1].entries[0].tx
    assert store.transaction(tx.tx_id) == tx
    assert store.last_own_seq == 5 and store.pending_transactions() == []


def test_pending_transactions_oldest_first_with_receipts(store: ChainStore, net: Net) -> None:
    txs = [net.tx(s) for s in (0, 1, 2)]
    for tx in txs:
        store.add_own_transaction(tx)
    receipts = net.receipts(txs[1])
    for r in reversed(receipts):
        assert store.add_receipt(r)
    assert not store.add_receipt(receipts[0])  # duplicate ignored
    pending = store.pending_transactions()
    assert [tx for tx, _ in pending] == txs
    assert pending[0][1] == () and pending[1][1] == tuple(reversed(receipts))
    store.append_block(net.block(0, net.genesis.hash, [BlockEntry(txs[0], net.receipts(txs[0]))]))
    assert [tx.seq for tx, _ in store.pending_transactions()] == [1, 2]


def test_receipt_from_the_same_receiver_is_kept_once(store: ChainStore, net: Net) -> None:
    tx = net.tx(0)
    store.add_own_transaction(tx)
    first = net.receipts(tx, [net.peers[0]], score=0.9)[0]
    second = net.receipts(tx, [net.peers[0]], score=0.1)[0]
    assert store.add_receipt(first) and not store.add_receipt(second)
    assert store.pending_transactions()[0][1] == (first,)


def test_invalid_receipts_are_not_stored(filled: ChainStore, net: Net, state: State) -> None:
    stranger_tx = net.tx(99)
    assert rejected(filled, state, lambda: filled.add_receipt(net.receipts(stranger_tx)[0])) \
        == "bad_receipt"
    own_tx = net.tx(2)
    forged = replace(net.receipts(own_tx)[1], score=0.0)
    assert rejected(filled, state, lambda: filled.add_receipt(forged)) == "bad_signature"
    self_receipt = net.receipts(own_tx, [net.owner])[0]
    assert rejected(filled, state, lambda: filled.add_receipt(self_receipt)) == "bad_receipt"


def test_issued_receipts(store: ChainStore, net: Net) -> None:
    peer_tx = net.tx(0, creator=net.peers[0])
    receipt = Receipt.create(net.owner, tx_id=peer_tx.tx_id, score=0.8, received_at=1.0, hop=1)
    ids = store.issued_receipt_ids()
    assert receipt.id not in ids and len(ids) == 0
    assert store.add_issued_receipt(receipt) and not store.add_issued_receipt(receipt)
    assert store.has_issued_receipt(receipt.id) and receipt.id in ids  # a live view
    assert list(ids) == [receipt.id] and len(ids) == 1


def test_invalid_issued_receipt(filled: ChainStore, net: Net, state: State) -> None:
    peer_tx = net.tx(5, creator=net.peers[0])
    not_mine = net.receipts(peer_tx, [net.peers[1]])[0]
    assert rejected(filled, state, lambda: filled.add_issued_receipt(not_mine)) == "bad_receipt"
    forged = replace(net.receipts(peer_tx, [net.owner])[0], hop=7)
    assert rejected(filled, state, lambda: filled.add_issued_receipt(forged)) == "bad_signature"


def test_invalid_own_transactions(filled: ChainStore, net: Net, state: State) -> None:
    cases = {
        "wrong_genesis": net.tx(3, genesis_hash=b"\x09" * 32),
        "wrong_creator": net.tx(3, creator=net.peers[0]),
        "bad_signature": replace(net.tx(3), n_samples=1),
        "replayed_seq": net.tx(2, vec_seed=77),
    }
    for reason, tx in cases.items():
        assert rejected(filled, state, lambda tx=tx: filled.add_own_transaction(tx)) == reason
    assert rejected(filled, state, lambda: filled.add_own_transaction(net.tx(1))) \
        == "replayed_seq"


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


def test_append_a_valid_next_block(filled: ChainStore, net: Net) -> None:
    block = _next_block(net, filled)
    filled.append_block(block)
    assert filled.height == 1 and filled.tip() == block and filled.pending_transactions() == []


def _structural_block_cases(net: Net, filled: ChainStore, good: Block) -> dict[str, Block]:
    """Blocks the store must refuse whatever it trusts about signatures, by expected reason.

    Reasons repeat with trailing spaces to keep the keys distinct.
    """
    tx2 = net.tx(2)
    twice = net.receipts(tx2, [net.peers[0]])[0]
    outsider = net.identity(9)
    return {
        "wrong_genesis": _next_block(net, filled, genesis_hash=b"\x09" * 32),
        "bad_height": _next_block(net, filled, height=2),
        "broken_link": _next_block(net, filled, prev_hash=b"\x07" * 32),
        "wrong_creator": _next_block(net, filled, creator=net.peers[0]),
        "wrong_creator ": _next_block(net, filled, entries=[
            BlockEntry(net.tx(2, creator=net.peers[0]), ())]),
        "bad_receipt": _next_block(net, filled, entries=[
            BlockEntry(tx2, (net.receipts(net.tx(3))[0],))]),
        "bad_receipt ": _next_block(net, filled, entries=[BlockEntry(tx2, (twice, twice))]),
        "replayed_seq": _next_block(net, filled, entries=[net.entry(1)]),
        "replayed_seq ": _next_block(net, filled, entries=[net.entry(3), net.entry(3)]),
        "bad_endorsement": good.with_endorsements([Endorsement(
            outsider.public_key, outsider.sign(endorsement_message(good.hash)))]),
    }


def test_invalid_blocks_are_not_stored(filled: ChainStore, net: Net, state: State) -> None:
    good = _next_block(net, filled)
    forged_tx = BlockEntry(replace(net.tx(3), self_score=0.0), ())
    tx2 = net.tx(2)
    forged_receipt = replace(net.receipts(tx2)[0], score=0.0)
    cases: dict[str, Block] = {
        **_structural_block_cases(net, filled, good),
        "bad_signature": replace(good, created_at=good.created_at + 1),
        "bad_signature ": _next_block(net, filled, entries=[forged_tx]),
        "wrong_genesis ": _next_block(net, filled, entries=[
            BlockEntry(net.tx(3, genesis_hash=b"\x09" * 32), ())]),
        "bad_receipt  ": _next_block(net, filled, entries=[BlockEntry(tx2, (forged_receipt,))]),
        "replayed_seq  ": _next_block(net, filled, entries=[BlockEntry(net.tx(2, vec_seed=5), ())]),
        "bad_endorsement ": good.with_endorsements([Endorsement(
            net.peers[0].public_key, net.peers[0].sign(endorsement_message(b"\0" * 32)))]),
    }
    for expected, block in cases.items():
        reason = rejected(filled, state, lambda block=block: filled.append_block(block))
        assert reason == expected.strip(), expected
    filled.append_block(good)  # and the store still accepts the right block afterwards
    assert filled.height == 1


def test_invalid_blocks_with_trusted_signatures_still_checked(filled: ChainStore, net: Net,
                                                            state: State) -> None:
    # verified=True spares only the Ed25519 checks: every other rejection still happens.
    good = _next_block(net, filled)
    cases = _structural_block_cases(net, filled, good)
    for expected, block in cases.items():
        reason = rejected(
            filled, state, lambda block=block: filled.append_block(block, verified=True)
        )
        assert reason == expected.strip(), expected
    filled.append_block(good, verified=True)
    assert filled.height == 1 and filled.tip() == good


def test_batch_commits_once_and_is_invisible_until_then(filled: ChainStore, net: Net) -> None:
    reader = sqlite3.connect(filled.path / "chain.sqlite")
    count = "SELECT COUNT(*) FROM own_txs"
    before = reader.execute(count).fetchone()[0]
    with filled.batch():
        for seq in range(3, 13):
            filled.add_own_transaction(net.tx(seq))
        assert filled.last_own_seq == 12  # visible to the store itself
        assert reader.execute(count).fetchone()[0] == before  # not yet to anyone else
    assert reader.execute(count).fetchone()[0] == before + 10
    reader.close()


def test_batch_rolls_back_everything_on_error(filled: ChainStore, net: Net,
                                              state: State) -> None:
    before = state(filled)
    vec = net.vector(50)
    with pytest.raises(RuntimeError, match="boom"), filled.batch():
        filled.add_own_transaction(net.tx(3))
        filled.put_payload(model_digest(net.spec_id, vec), vec)
        filled.append_block(_next_block(net, filled))
        raise RuntimeError("boom")
    assert state(filled) == before  # including the payload file written inside the batch


def test_rejected_call_inside_batch_leaves_the_rest(filled: ChainStore, net: Net) -> None:
    with filled.batch():
        filled.add_own_transaction(net.tx(3))
        with pytest.raises(ValidationError):
            filled.add_own_transaction(net.tx(3))
        filled.add_own_transaction(net.tx(4))
    assert [tx.seq for tx, _ in filled.pending_transactions()] == [2, 3, 4]


# -- trusted records: verified=True skips only the signature checks --------------------------------


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


def test_verified_append_checks_no_signature(
    store: ChainStore, net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = net.chain(2)  # built first: endorsing a block checks its creator's signature
    calls = count_verifies(monkeypatch)
    checked: list[bytes] = []
    real = block_module.verify_signature

    def counted(pubkey: bytes, signature: bytes, message: bytes) -> bool:
        checked.append(pubkey)
        return real(pubkey, signature, message)

    monkeypatch.setattr(block_module, "verify_signature", counted)  # endorsements
    monkeypatch.setattr(signed_module, "verify_signature", counted)  # every signed object
    store.append_block(blocks[0], verified=True)
    assert checked == [] and calls == {"tx": 0, "receipt": 0}
    store.append_block(blocks[1])
    # Without the flag: the creator's, each receipt's and each endorsement's signature, once;
    # each transaction's too, through `Transaction.verify` (`calls["tx"]`).
    n_receipts = sum(len(e.receipts) for e in blocks[1].entries)
    assert calls["tx"] == len(blocks[1].entries)
    assert len(checked) - calls["tx"] == 1 + n_receipts + len(blocks[1].endorsements)


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
