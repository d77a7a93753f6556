"""Whole-chain verification of a store on disk, trusting nothing the store recorded about itself."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import blake3

from dfl_ray.ledger.block import Block, verify_block
from dfl_ray.ledger.errors import ChainError, DecodeError, StoreError, ValidationError
from dfl_ray.ledger.genesis import Genesis
from dfl_ray.ledger.hashing import DIGEST_SIZE
from dfl_ray.ledger.payloads import PAYLOAD_DIR
from dfl_ray.ledger.receipt import Receipt
from dfl_ray.ledger.store import connect, locate
from dfl_ray.ledger.transaction import Transaction

# Outside any block: the genesis, pending transactions, receipts, unreferenced payloads.
NO_HEIGHT = -1


@dataclass(frozen=True)
class ChainSummary:
    """What a verified chain holds; `tip_hash` is the genesis hash while there is no block."""

    height: int
    tip_hash: bytes
    n_blocks: int
    n_transactions: int
    n_receipts: int


@dataclass(frozen=True)
class _Rows:
    """Everything read from the database, in one read transaction (a consistent snapshot)."""

    genesis: tuple[bytes, bytes] | None
    owner: bytes | None
    blocks: list[tuple[int, bytes, bytes]]
    own_txs: list[tuple[bytes, int | None, bytes]]
    received: list[tuple[bytes, bytes]]
    issued: list[tuple[bytes, bytes]]
    payloads: list[bytes]


def verify_chain(path: str | os.PathLike[str]) -> ChainSummary:
    """Verify the store at `path` (its folder or its `chain.sqlite`) from the genesis up.

    Checks the genesis against its recorded hash; every block's decoding, recorded hash, height,
    link, signatures, receipts and endorsements (`verify_block`), its creator (the store's owner)
    and that no seq is sealed twice; every stored transaction and receipt (decoding, id,
    signature); every kept payload file against its digest. Raises `ChainError` on the first
    problem, `StoreError` if there is no readable store at `path`.
    """
    folder, db = locate(path)
    rows = _read_rows(db)
    if rows.genesis is None:
        raise ChainError(NO_HEIGHT, "missing_genesis", f"{db} holds no genesis")
    genesis = _check_genesis(*rows.genesis)
    owner = rows.owner or b""
    prev_hash, seqs, payload_heights = genesis.hash, set[int](), dict[bytes, int]()
    n_txs = n_receipts = 0
    for expected_height, (height, recorded_hash, data) in enumerate(rows.blocks):
        if height != expected_height:
            raise ChainError(
                expected_height, "bad_height", f"stored heights jump from {expected_height - 1} "
                f"to {height}"
            )
        block = _decode(Block, data, height, f"block {height}")
        if block.hash != recorded_hash:
            raise ChainError(height, "hash_mismatch", "recorded block hash does not match its bytes")
        if block.creator != owner:
            raise ChainError(height, "wrong_creator", "block creator is not the store's owner")
        try:
            verify_block(block, genesis_hash=genesis.hash, prev_hash=prev_hash, height=height)
        except ValidationError as err:
            raise ChainError(height, err.reason, err.detail) from err
        for entry in block.entries:
            if entry.tx.seq in seqs:
                raise ChainError(height, "replayed_seq", f"seq {entry.tx.seq} sealed twice")
            seqs.add(entry.tx.seq)
            payload_heights.setdefault(entry.tx.model_digest, height)
            n_receipts += len(entry.receipts)
        payload_heights.setdefault(block.model_digest_after, height)
        n_txs += len(block.entries)
        prev_hash = block.hash
    _check_records(rows, owner)
    _check_payloads(folder, genesis.model_spec_id, rows.payloads, payload_heights)
    return ChainSummary(
        height=len(rows.blocks) - 1,
        tip_hash=prev_hash,
        n_blocks=len(rows.blocks),
        n_transactions=n_txs,
        n_receipts=n_receipts,
    )


def _read_rows(db: Path) -> _Rows:
    conn = connect(db, read_only=True)
    try:
        conn.execute("BEGIN")
        genesis = conn.execute("SELECT hash, data FROM genesis WHERE id = 0").fetchone()
        owner = conn.execute("SELECT value FROM meta WHERE key = 'owner'").fetchone()
        rows = _Rows(
            genesis=genesis,
            owner=owner[0] if owner is not None else None,
            blocks=conn.execute("SELECT height, hash, data FROM blocks ORDER BY height").fetchall(),
            own_txs=conn.execute(
                "SELECT tx_id, block_height, data FROM own_txs ORDER BY seq"
            ).fetchall(),
            received=conn.execute("SELECT id, data FROM received_receipts").fetchall(),
            issued=conn.execute("SELECT id, data FROM issued_receipts").fetchall(),
            payloads=[d for (d,) in conn.execute("SELECT digest FROM payloads").fetchall()],
        )
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        raise StoreError(f"cannot read {db} as a chain store: {err}") from err
    finally:
        conn.close()
    return rows


_Decoded = TypeVar("_Decoded", Genesis, Block, Transaction, Receipt)


def _decode(kind: type[_Decoded], data: object, height: int, what: str) -> _Decoded:
    if not isinstance(data, bytes):
        raise ChainError(height, "decode_error", f"{what} is stored as {type(data).__name__}")
    try:
        return kind.decode(data)
    except DecodeError as err:
        raise ChainError(height, "decode_error", f"{what}: {err}") from err


def _check_genesis(recorded_hash: bytes, data: bytes) -> Genesis:
    genesis = _decode(Genesis, data, NO_HEIGHT, "genesis")
    if genesis.hash != recorded_hash:
        raise ChainError(NO_HEIGHT, "hash_mismatch", "recorded genesis hash does not match its bytes")
    return genesis


def _check_records(rows: _Rows, owner: bytes) -> None:
    """Stored own transactions and receipts: each decodes, matches its id and is signed."""
    for tx_id, block_height, data in rows.own_txs:
        height = NO_HEIGHT if block_height is None else block_height
        tx = _decode(Transaction, data, height, "stored transaction")
        if tx.tx_id != tx_id:
            raise ChainError(height, "hash_mismatch", f"transaction seq {tx.seq}: id mismatch")
        if tx.creator != owner:
            raise ChainError(height, "wrong_creator", f"own transaction seq {tx.seq} by another key")
        _reraise_at(height, tx.verify)
    for table, records in (("received", rows.received), ("issued", rows.issued)):
        for receipt_id, data in records:
            receipt = _decode(Receipt, data, NO_HEIGHT, f"{table} receipt")
            if receipt.id != receipt_id:
                raise ChainError(NO_HEIGHT, "hash_mismatch", f"{table} receipt: id mismatch")
            _reraise_at(NO_HEIGHT, receipt.verify)


def _check_payloads(
    folder: Path, spec_id: bytes, listed: list[bytes], heights: dict[bytes, int]
) -> None:
    """Every payload file must hash to its name; every listed payload must have its file."""
    payload_dir = folder / PAYLOAD_DIR
    for d in listed:
        if not (payload_dir / d.hex()).is_file():
            raise ChainError(
                heights.get(d, NO_HEIGHT), "missing_payload", f"payload {d.hex()} is listed but "
                "its file is gone"
            )
    if not payload_dir.is_dir():
        return
    for path in sorted(payload_dir.iterdir()):
        if path.name.startswith("."):
            continue  # a temporary file a killed writer left behind; never read as a payload
        try:
            name = bytes.fromhex(path.name)
        except ValueError:
            name = b""
        height = heights.get(name, NO_HEIGHT)
        if len(name) != DIGEST_SIZE:
            raise ChainError(height, "payload_mismatch", f"{path.name} is not a payload digest")
        hasher = blake3.blake3(spec_id)
        hasher.update_mmap(path)  # hashes the file without reading it into memory
        if hasher.digest() != name:
            raise ChainError(
                height, "payload_mismatch", f"payload file {path.name[:16]}.. does not hash to its "
                "name"
            )


def _reraise_at(height: int, check: Callable[[], None]) -> None:
    try:
        check()
    except ValidationError as err:
        raise ChainError(height, err.reason, err.detail) from err
