"""Small deterministic networks, objects and chains for the ledger tests, and their helpers."""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from dfl_ray.ledger import (
    Block,
    BlockEntry,
    ChainStore,
    Genesis,
    Identity,
    Receipt,
    Transaction,
    ValidationError,
    digest,
    endorse,
    model_digest,
    reputation_digest,
)
from dfl_ray.ledger.cli import register

SPEC_ID = digest(b"test model spec")
SIZE = 64  # float32 elements of the test model
NOW = 1_700_000_000.0


def identity(i: int) -> Identity:
    return Identity.from_seed(bytes([i]) * 32)


def vector(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(size).astype(np.float32)


@dataclass
class Net:
    """A network of one owner (identity 1) and peers (identities 2..), with object factories."""

    genesis: Genesis
    owner: Identity
    peers: list[Identity]

    spec_id: ClassVar[bytes] = SPEC_ID
    size: ClassVar[int] = SIZE
    now: ClassVar[float] = NOW
    vector = staticmethod(vector)
    identity = staticmethod(identity)

    @staticmethod
    def make_genesis(**overrides: object) -> Genesis:
        return make_genesis(**overrides)

    def tx(self, seq: int, *, creator: Identity | None = None, vec_seed: int | None = None,
           created_at: float = NOW, expires_at: float = NOW + 60.0,
           genesis_hash: bytes | None = None) -> Transaction:
        vec = vector(seq if vec_seed is None else vec_seed)
        return Transaction.create(
            creator or self.owner,
            genesis_hash=self.genesis.hash if genesis_hash is None else genesis_hash,
            seq=seq,
            created_at=created_at,
            expires_at=expires_at,
            ttl=10,
            model_digest=model_digest(SPEC_ID, vec),
            base_digest=self.genesis.initial_model_digest,
            self_score=0.5 + seq / 1000,
            n_samples=100 + seq,
        )

    def receipts(self, tx: Transaction, peers: Sequence[Identity] | None = None,
                 score: float = 0.9) -> tuple[Receipt, ...]:
        return tuple(
            Receipt.create(p, tx_id=tx.tx_id, score=score, received_at=NOW + 1.0, hop=1)
            for p in (self.peers if peers is None else peers)
        )

    def entry(self, seq: int, peers: Sequence[Identity] | None = None) -> BlockEntry:
        tx = self.tx(seq)
        return BlockEntry(tx, self.receipts(tx, peers))

    def block(self, height: int, prev_hash: bytes, entries: Sequence[BlockEntry], *,
              creator: Identity | None = None, endorsed: bool = True) -> Block:
        block = Block.create(
            creator or self.owner,
            height=height,
            prev_hash=prev_hash,
            genesis_hash=self.genesis.hash,
            created_at=NOW + height,
            entries=entries,
            model_digest_after=model_digest(SPEC_ID, vector(1000 + height)),
            reputation_digest=reputation_digest({p.address: 1.0 for p in self.peers}),
        )
        if not endorsed:
            return block
        signers = {r.receiver for e in entries for r in e.receipts}
        issued = {r.id for e in entries for r in e.receipts}
        return block.with_endorsements(
            endorse(p, block, issued) for p in self.peers if p.public_key in signers
        )

    def chain(self, n_blocks: int, txs_per_block: int = 2) -> list[Block]:
        """`n_blocks` valid blocks, each with `txs_per_block` fully receipted transactions."""
        blocks: list[Block] = []
        prev = self.genesis.hash
        for h in range(n_blocks):
            entries = [self.entry(h * txs_per_block + i) for i in range(txs_per_block)]
            blocks.append(self.block(h, prev, entries))
            prev = blocks[-1].hash
        return blocks


def make_genesis(**overrides: object) -> Genesis:
    fields: dict[str, object] = {
        "network_id": "test-net",
        "protocol_version": 1,
        "model_spec_id": SPEC_ID,
        "initial_model_digest": model_digest(SPEC_ID, vector(0)),
        "ttl": 10,
        "buffer_size": 4,
        "block_size": 2,
        "expiry_s": 60.0,
        # identities 1 to 8 are members; tests use 9 and above as outsiders
        "members": tuple(sorted(identity(i).public_key for i in range(1, 9))),
    }
    fields.update(overrides)
    return Genesis(**fields)  # type: ignore[arg-type]


def store_state(store: ChainStore) -> tuple[object, ...]:
    """Everything observable about a store, to show that a rejected call changed nothing."""
    payload_dir = store.path / "payloads"
    return (
        store.height,
        store.tip_hash,
        [b.hash for b in store.blocks()],
        [(tx.tx_id, tuple(r.id for r in rs)) for tx, rs in store.pending_transactions()],
        sorted(store.issued_receipt_ids()),
        store.last_own_seq,
        sorted((p.name, p.stat().st_size) for p in payload_dir.iterdir()),
    )


def rejected(
    store: ChainStore,
    state: Callable[[ChainStore], tuple[object, ...]],
    call: Callable[[], object],
) -> str:
    """Run a call that must be rejected; check the store did not change; return the reason."""
    before = state(store)
    with pytest.raises(ValidationError) as err:
        call()
    assert state(store) == before
    return err.value.reason


def ledger_cli(*argv: str) -> int:
    """Run `dfl-ray ledger ...` in process; return its exit status."""
    parser = argparse.ArgumentParser(prog="dfl-ray")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    result: int = args.func(args)
    return result


def tamper_block(path: Path, height: int, offset: int) -> None:
    """Flip one bit of the stored bytes of block `height`, behind the store's back."""
    conn = sqlite3.connect(path / "chain.sqlite")
    (data,) = conn.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
    data = bytearray(data)
    data[offset % len(data)] ^= 0x10
    conn.execute("UPDATE blocks SET data = ? WHERE height = ?", (bytes(data), height))
    conn.commit()
    conn.close()
