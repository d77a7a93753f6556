"""When a node seals a block: which own transactions go in, with which receipts."""

from __future__ import annotations

from collections.abc import Sequence

from dfl_ray.ledger.block import BlockEntry
from dfl_ray.ledger.encoding import MAX_COUNT, require_uint
from dfl_ray.ledger.receipt import Receipt
from dfl_ray.ledger.transaction import Transaction


def required_receipts(n_peers: int) -> int:
    """Distinct receivers a transaction needs before it can be sealed: ceil(n_peers / 2)."""
    require_uint("n_peers", n_peers, MAX_COUNT)
    return (n_peers + 1) // 2


def select_block_entries(
    pending: Sequence[tuple[Transaction, Sequence[Receipt]]],
    *,
    n_peers: int,
    block_size: int,
) -> tuple[BlockEntry, ...] | None:
    """The oldest `block_size` pending transactions that have enough receipts, or None.

    The rule is DFL's "partial consensus" (Tian, Guo, Zhang, Al-Ars, "DFL: High-Performance
    Blockchain-Based Federated Learning", arXiv 2110.15457; spec section 4): a block holds
    `block_size` own transactions, each with receipts from at least half of the node's peers.

    A transaction qualifies with receipts from at least `required_receipts(n_peers)` distinct
    receivers; receipts for another transaction and the creator's own are ignored, and of
    several receipts from one receiver the first is kept. Each entry lists its receipts sorted
    by receiver, so the same input always gives the same block. "Oldest" is lowest seq.

    A transaction that does not qualify yet is skipped rather than waited for: its receivers may
    have left or its receipts been lost, and one such transaction must not stop the node from
    ever sealing again. It stays pending and can go into a later block if its receipts arrive.
    Receipts are taken as already verified (the store checks each one when it is added).
    """
    needed = required_receipts(n_peers)
    require_uint("block_size", block_size, MAX_COUNT, minimum=1)
    chosen: list[BlockEntry] = []
    for tx, receipts in sorted(pending, key=lambda item: item[0].seq):
        kept: dict[bytes, Receipt] = {}
        for receipt in receipts:
            if receipt.tx_id == tx.tx_id and receipt.receiver != tx.creator:
                kept.setdefault(receipt.receiver, receipt)
        if len(kept) < needed:
            continue
        chosen.append(BlockEntry(tx, tuple(kept[k] for k in sorted(kept))))
        if len(chosen) == block_size:
            return tuple(chosen)
    return None
