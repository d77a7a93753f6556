"""Ledger cost per operation for a LeNet-sized payload: `python benchmarks/ledger_bench.py --repeat 20`.

Every figure is the median over `--repeat` timings (time.perf_counter); fast operations are
timed over a loop of `--number` calls and reported per call. The payload is 431,080 random
float32 values (1.72 MB, fixed seed), the LeNet of the DFL spec; blocks hold 10 transactions
with 9 receipts each (block size 10, 9 peers).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import blake3
import numpy as np

from dfl_ray.ledger import (
    Block,
    BlockEntry,
    ChainStore,
    Genesis,
    Identity,
    Receipt,
    Transaction,
    check_payload,
    check_transaction,
    digest,
    endorse,
    model_digest,
    reputation_digest,
)

N_PARAMS = 431_080
N_PEERS = 9
BLOCK_SIZE = 10
NOW = 1_700_000_000.0


def timed(fn: Callable[[], object], repeat: int, number: int = 1,
          setup: Callable[[], object] | None = None) -> list[float]:
    """Seconds per call of `fn`, one value per repeat (each over `number` calls)."""
    out = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        out.append((time.perf_counter() - t0) / number)
    return out


def fmt_time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.3f} ms"
    return f"{seconds * 1e6:8.1f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timings per figure (median)")
    parser.add_argument("--number", type=int, default=50, help="calls per timing for fast ops")
    args = parser.parse_args()
    repeat, number = args.repeat, args.number
    if repeat < 1 or number < 1:
        parser.error("--repeat and --number must be >= 1")

    rng = np.random.default_rng(0)
    vec = rng.standard_normal(N_PARAMS).astype(np.float32)
    vec.flags.writeable = False  # like a view of the object store
    spec_id = digest(b"lenet-bench")
    genesis = Genesis("bench", 1, spec_id, model_digest(spec_id, vec), 10, 4, BLOCK_SIZE, 60.0)
    owner = Identity.from_seed(b"\x01" * 32)
    peers = [Identity.from_seed(bytes([i + 2]) * 32) for i in range(N_PEERS)]
    d = model_digest(spec_id, vec)

    def make_tx(seq: int, ident: Identity = owner) -> Transaction:
        return Transaction.create(
            ident, genesis_hash=genesis.hash, seq=seq, created_at=NOW, expires_at=NOW + 60,
            ttl=10, model_digest=d, base_digest=genesis.initial_model_digest, self_score=0.9,
            n_samples=6000,
        )  # fmt: skip

    def make_receipts(tx: Transaction) -> tuple[Receipt, ...]:
        return tuple(
            Receipt.create(p, tx_id=tx.tx_id, score=0.9, received_at=NOW + 1, hop=1)
            for p in peers
        )

    rows: list[tuple[str, list[float], str]] = []

    def add(name: str, times: list[float], note: str = "") -> None:
        rows.append((name, times, note))

    # -- hashing ------------------------------------------------------------------------
    mb = vec.nbytes / 1e6
    t_model = timed(lambda: model_digest(spec_id, vec), repeat, 5)
    t_bare = timed(lambda: blake3.blake3(memoryview(vec).cast("B")).digest(), repeat, 5)
    t_copy = timed(lambda: blake3.blake3(vec.tobytes()).digest(), repeat, 5)
    gbs = mb / 1e3 / statistics.median(t_model)
    add("model_digest (1.72 MB)", t_model, f"{gbs:.2f} GB/s")
    add("bare blake3(memoryview(vec))", t_bare,
        f"ratio model/bare {statistics.median(t_model) / statistics.median(t_bare):.3f}")
    add("  reference: blake3(vec.tobytes())", t_copy, "hashes a copy")

    # -- transactions and receipts ------------------------------------------------------
    seqs = iter(range(10**9))
    add("Transaction.create (sign)", timed(lambda: make_tx(next(seqs)), repeat, number))
    tx = make_tx(0)
    add("Transaction.verify", timed(tx.verify, repeat, number))
    data = tx.encode()
    fresh: list[Transaction] = []

    def refill() -> None:
        # encode() is cached per object, so time it on copies that have not encoded yet.
        fresh[:] = [replace(tx) for _ in range(number)]

    add("Transaction.encode", timed(lambda: fresh.pop().encode(), repeat, number, setup=refill),
        f"{len(data)} bytes")
    add("Transaction.decode", timed(lambda: Transaction.decode(data), repeat, number))
    add("Receipt.create + verify", timed(
        lambda: Receipt.create(peers[0], tx_id=tx.tx_id, score=0.9, received_at=NOW,
                               hop=1).verify(), repeat, number))

    # -- the receive path ----------------------------------------------------------------
    def receive() -> None:
        check_transaction(tx, genesis_hash=genesis.hash, now=NOW + 1, last_seq=None)
        check_payload(tx, spec_id=spec_id, expected_size=N_PARAMS, vec=vec)

    add("check_transaction + check_payload", timed(receive, repeat, 5), "per received tx")

    # -- the store ------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        store = ChainStore.create(Path(tmp) / "node", genesis, owner.public_key)
        height = 0
        blocks: list[Block] = []

        def next_block() -> None:
            # Built and its transactions recorded outside the timing: only the append counts.
            nonlocal height
            entries = []
            with store.batch():
                for i in range(BLOCK_SIZE):
                    t = make_tx(height * BLOCK_SIZE + i)
                    store.add_own_transaction(t)
                    entries.append(BlockEntry(t, make_receipts(t)))
            block = Block.create(
                owner, height=height, prev_hash=store.tip_hash, genesis_hash=genesis.hash,
                created_at=NOW, entries=entries, model_digest_after=d,
                reputation_digest=reputation_digest({p.address: 1.0 for p in peers}),
            )  # fmt: skip
            issued = {r.id for e in entries for r in e.receipts}
            blocks[:] = [block.with_endorsements(endorse(p, block, issued) for p in peers)]
            height += 1

        add("append_block (10 tx x 9 receipts)",
            timed(lambda: store.append_block(blocks[0]), repeat, setup=next_block),
            "verify + 1 commit")
        payload_rng = np.random.default_rng(1)
        pending_vec: list[np.ndarray] = []

        def next_payload() -> None:
            pending_vec[:] = [payload_rng.standard_normal(N_PARAMS).astype(np.float32)]

        add("put_payload (1.72 MB)", timed(
            lambda: store.put_payload(model_digest(spec_id, pending_vec[0]), pending_vec[0]),
            repeat, setup=next_payload), "digest + write + rename")

        round_seq = iter(range(10**6, 10**9))
        peer_txs = [make_tx(0, p).encode() for p in peers]
        round_input: list[tuple[int, list[bytes]]] = []

        def next_round() -> None:
            # The peers' receipts for this round's own transaction are their work, not this
            # node's; Ed25519 is deterministic, so they can be signed ahead for the same tx.
            seq = next(round_seq)
            round_input[:] = [(seq, [r.encode() for r in make_receipts(make_tx(seq))])]

        def node_round() -> None:
            # One synchronous round of a node with 9 peers: publish, receive and check 9
            # models and issue 9 receipts, take 9 receipts back; all in one store batch.
            seq, receipts_back = round_input[0]
            with store.batch():
                own = make_tx(seq)
                model_digest(spec_id, vec)
                store.add_own_transaction(own)
                store.put_payload(d, vec)
                for data in peer_txs:
                    received = Transaction.decode(data)
                    check_transaction(received, genesis_hash=genesis.hash, now=NOW + 1,
                                      last_seq=None)
                    check_payload(received, spec_id=spec_id, expected_size=N_PARAMS, vec=vec)
                    store.add_issued_receipt(Receipt.create(
                        owner, tx_id=received.tx_id, score=0.9, received_at=NOW, hop=1))
                for data in receipts_back:
                    store.add_receipt(Receipt.decode(data))

        add("node round (publish, 9 in, 9 receipts)",
            timed(node_round, repeat, setup=next_round), "ledger work of one round")
        store.close()

    width = max(len(r[0]) for r in rows)
    print(f"ledger benchmark: payload {N_PARAMS:,} float32 = {mb:.2f} MB, repeat={repeat}, "
          f"number={number}")
    print(f"{'operation':<{width}}  {'median':>11}  {'min':>11}  note")
    print("-" * (width + 40))
    for name, times, note in rows:
        print(f"{name:<{width}}  {fmt_time(statistics.median(times))}  {fmt_time(min(times))}  "
              f"{note}")


if __name__ == "__main__":
    main()
