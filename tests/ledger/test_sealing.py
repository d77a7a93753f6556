"""Sealing policy: which own transactions go into the next block."""

from __future__ import annotations

import pytest
from ledger_factories import Net

from dfl_ray.ledger import (
    Block,
    ChainStore,
    Receipt,
    Transaction,
    required_receipts,
    select_block_entries,
)


def test_required_receipts_is_half_the_peers_rounded_up() -> None:
    assert [required_receipts(n) for n in range(6)] == [0, 1, 1, 2, 2, 3]


def _pending(net: Net, receivers_per_tx: list[int]) -> list[tuple[Transaction, tuple[Receipt, ...]]]:
    out = []
    for seq, n in enumerate(receivers_per_tx):
        tx = net.tx(seq)
        out.append((tx, net.receipts(tx, net.peers[:n])))
    return out


def test_selects_the_oldest_qualifying_transactions(net: Net) -> None:
    pending = _pending(net, [3, 2, 3, 2, 3])  # 3 peers: 2 receipts needed
    entries = select_block_entries(pending, n_peers=3, block_size=3)
    assert entries is not None
    assert [e.tx.seq for e in entries] == [0, 1, 2]
    assert [len(e.receipts) for e in entries] == [3, 2, 3]


def test_skips_transactions_without_enough_receipts(net: Net) -> None:
    pending = _pending(net, [1, 3, 0, 2, 2])
    entries = select_block_entries(list(reversed(pending)), n_peers=3, block_size=3)
    assert entries is not None
    assert [e.tx.seq for e in entries] == [1, 3, 4]  # lowest seqs first, whatever the input order


def test_none_when_too_few_qualify(net: Net) -> None:
    pending = _pending(net, [3, 1, 1, 3])
    assert select_block_entries(pending, n_peers=3, block_size=3) is None
    assert select_block_entries([], n_peers=3, block_size=1) is None


def test_duplicate_own_and_foreign_receipts_do_not_count(net: Net) -> None:
    tx, other = net.tx(0), net.tx(1)
    p = net.peers[0]
    receipts = (
        net.receipts(tx, [p], score=0.9)
        + net.receipts(tx, [p], score=0.2)  # same receiver again
        + net.receipts(tx, [net.owner])  # the creator's own
        + net.receipts(other, [net.peers[1]])  # for another transaction
    )
    assert select_block_entries([(tx, receipts)], n_peers=3, block_size=1) is None
    entries = select_block_entries([(tx, receipts)], n_peers=2, block_size=1)
    assert entries is not None and entries[0].receipts == receipts[:1]  # the first one is kept


def test_receipts_are_sorted_by_receiver(net: Net) -> None:
    tx = net.tx(0)
    receipts = net.receipts(tx)
    a = select_block_entries([(tx, receipts)], n_peers=3, block_size=1)
    b = select_block_entries([(tx, tuple(reversed(receipts)))], n_peers=3, block_size=1)
    assert a is not None and a == b
    assert [r.receiver for r in a[0].receipts] == sorted(r.receiver for r in receipts)


def test_selected_entries_make_a_block_the_store_accepts(store: ChainStore, net: Net) -> None:
    for seq in range(4):
        tx = net.tx(seq)
        store.add_own_transaction(tx)
        for r in net.receipts(tx, net.peers[: 1 + seq % 3]):
            store.add_receipt(r)
    entries = select_block_entries(store.pending_transactions(), n_peers=3, block_size=2)
    assert entries is not None and [e.tx.seq for e in entries] == [1, 2]
    block = Block.create(
        net.owner, height=0, prev_hash=store.tip_hash, genesis_hash=net.genesis.hash,
        created_at=net.now, entries=entries, model_digest_after=b"\1" * 32,
        reputation_digest=b"\2" * 32,
    )  # fmt: skip
    store.append_block(block)
    assert [tx.seq for tx, _ in store.pending_transactions()] == [0, 3]


@pytest.mark.parametrize(("n_peers", "block_size"), [(-1, 1), (3, 0), (3, 1.5)])
def test_invalid_parameters(net: Net, n_peers: int, block_size: int) -> None:
    with pytest.raises((ValueError, TypeError)):
        select_block_entries(_pending(net, [3]), n_peers=n_peers, block_size=block_size)
