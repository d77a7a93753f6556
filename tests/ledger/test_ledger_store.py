"""The chain store: creation, reopening, appends, records, batches, payloads, rejections."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ledger_factories import Net

from dfl_ray.ledger import (
    Block,
    BlockEntry,
    ChainStore,
    Endorsement,
    Receipt,
    StoreError,
    ValidationError,
    endorsement_message,
    model_digest,
)

State = Callable[[ChainStore], tuple[object, ...]]


@pytest.fixture
def filled(store: ChainStore, net: Net) -> ChainStore:
    """Block 0 (seqs 0, 1), pending seq 2 with one receipt, an issued receipt, a payload."""
    store.append_block(net.chain(1)[0])
    tx = net.tx(2)
    store.add_own_transaction(tx)
    store.add_receipt(net.receipts(tx)[0])
    peer_tx = net.tx(0, creator=net.peers[0])
    store.add_issued_receipt(net.receipts(peer_tx, [net.owner])[0])
    store.put_payload(tx.model_digest, net.vector(2))
    return store


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


def _rejected(store: ChainStore, state: State, call: Callable[[], object]) -> str:
    """Run a call that must be rejected; check the store did not change; return the reason."""
    before = state(store)
    with pytest.raises(ValidationError) as err:
        call()
    assert state(store) == before
    return err.value.reason


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
    assert _rejected(filled, state, lambda: filled.add_receipt(net.receipts(stranger_tx)[0])) \
        == "bad_receipt"
    own_tx = net.tx(2)
    forged = replace(net.receipts(own_tx)[1], score=0.0)
    assert _rejected(filled, state, lambda: filled.add_receipt(forged)) == "bad_signature"
    self_receipt = net.receipts(own_tx, [net.owner])[0]
    assert _rejected(filled, state, lambda: filled.add_receipt(self_receipt)) == "bad_receipt"


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
    assert _rejected(filled, state, lambda: filled.add_issued_receipt(not_mine)) == "bad_receipt"
    forged = replace(net.receipts(peer_tx, [net.owner])[0], hop=7)
    assert _rejected(filled, state, lambda: filled.add_issued_receipt(forged)) == "bad_signature"


def test_invalid_own_transactions(filled: ChainStore, net: Net, state: State) -> None:
    cases = {
        "wrong_genesis": net.tx(3, genesis_hash=b"\x09" * 32),
        "wrong_creator": net.tx(3, creator=net.peers[0]),
        "bad_signature": replace(net.tx(3), n_samples=1),
        "replayed_seq": net.tx(2, vec_seed=77),
    }
    for reason, tx in cases.items():
        assert _rejected(filled, state, lambda tx=tx: filled.add_own_transaction(tx)) == reason
    assert _rejected(filled, state, lambda: filled.add_own_transaction(net.tx(1))) \
        == "replayed_seq"


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
        reason = _rejected(filled, state, lambda block=block: filled.append_block(block))
        assert reason == expected.strip(), expected
    filled.append_block(good)  # and the store still accepts the right block afterwards
    assert filled.height == 1


def test_invalid_blocks_with_trusted_signatures_still_checked(filled: ChainStore, net: Net,
                                                            state: State) -> None:
    # verified=True spares only the Ed25519 checks: every other rejection still happens.
    good = _next_block(net, filled)
    cases = _structural_block_cases(net, filled, good)
    for expected, block in cases.items():
        reason = _rejected(
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


def test_payload_put_and_get(store: ChainStore, net: Net) -> None:
    vec = net.vector(1)
    d = model_digest(net.spec_id, vec)
    assert store.get_payload(d) is None
    frozen = np.frombuffer(vec.tobytes(), dtype=np.float32)
    store.put_payload(d, frozen)
    assert store.get_payload(d) == vec.tobytes()
    store.put_payload(d, vec.tobytes())  # same content again: harmless
    assert np.array_equal(np.frombuffer(store.get_payload(d) or b"", np.float32), vec)
    assert [p.name for p in (store.path / "payloads").iterdir()] == [d.hex()]


def test_invalid_payload_digest_mismatch(filled: ChainStore, net: Net, state: State) -> None:
    vec = net.vector(1)
    wrong = model_digest(net.spec_id, net.vector(2))
    assert _rejected(filled, state, lambda: filled.put_payload(wrong, vec)) == "digest_mismatch"


def test_invalid_payload_file_corrupted_on_disk(store: ChainStore, net: Net) -> None:
    vec = net.vector(1)
    d = model_digest(net.spec_id, vec)
    store.put_payload(d, vec)
    path = store.path / "payloads" / d.hex()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt"):
        store.get_payload(d)
    store.put_payload(d, vec)  # putting it again repairs the file
    assert store.get_payload(d) == vec.tobytes()


def test_retention_keeps_the_last_k_payloads(tmp_path: Path, net: Net) -> None:
    with ChainStore.create(tmp_path / "n", net.genesis, net.owner.public_key,
                           keep_payloads=2) as s:
        digests = []
        for seed in range(5):
            vec = net.vector(seed)
            digests.append(model_digest(net.spec_id, vec))
            with s.batch():
                s.put_payload(digests[-1], vec)
        s.put_payload(digests[3], net.vector(3))  # re-putting refreshes, so 4 is now oldest
        s.put_payload(model_digest(net.spec_id, net.vector(9)), net.vector(9))
        kept = sorted(p.name for p in (s.path / "payloads").iterdir())
        # One dropped payload's file stays as the unlisted spare the next payload overwrites.
        assert kept == sorted([".spare", digests[3].hex(),
                               model_digest(net.spec_id, net.vector(9)).hex()])
        assert s.get_payload(digests[0]) is None and s.get_payload(digests[3]) is not None
