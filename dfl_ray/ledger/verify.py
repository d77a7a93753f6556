"""Whole-chain verification of a store on disk: every row of every table, every payload file."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TypeVar

import blake3

from dfl_ray.ledger.block import Block, verify_block
from dfl_ray.ledger.checkpoint import CHECKPOINT_DIR, Checkpoint, check_checkpoint, decode_state
from dfl_ray.ledger.errors import ChainError, DecodeError, StoreError, ValidationError
from dfl_ray.ledger.genesis import Genesis
from dfl_ray.ledger.hashing import DIGEST_SIZE, digest
from dfl_ray.ledger.identity import PUBLIC_KEY_SIZE
from dfl_ray.ledger.payloads import PAYLOAD_DIR
from dfl_ray.ledger.receipt import Receipt, check_receipt_fields
from dfl_ray.ledger.store import SCHEMA_VERSION, connect, locate, schema_objects
from dfl_ray.ledger.transaction import Transaction, check_lifetime

# Outside any block: the genesis, the meta rows, pending transactions, receipts, unreferenced
# payloads.
NO_HEIGHT = -1

# The meta keys a store holds (`ChainStore.create`); keep_payloads only when retention is set.
_META_KEYS = ("schema_version", "owner", "keep_payloads")
_KEEP_MAX = 1 << 31


@dataclass(frozen=True)
class ChainSummary:
    """What a verified chain holds; `tip_hash` is the genesis hash while there is no block."""

    height: int
    tip_hash: bytes
    n_blocks: int
    n_transactions: int
    n_receipts: int


def verify_chain(path: str | os.PathLike[str]) -> ChainSummary:
    """Verify the store at `path` (its folder or its `chain.sqlite`): every row of every table,
    trusting nothing the store recorded about itself.

    One pass per table, in rowid order, each row checked as it is read; a column that repeats
    or indexes signed data (an id, a hash, a tx_id, a receiver, a seq, a height) must agree
    with the signed bytes beside it or the block that holds them:

    - sqlite_master: exactly the tables and indexes `ChainStore.create` makes;
    - meta: known keys only, this code's schema version, an owner that is a genesis member and
      the key of every block, own transaction and issued receipt (and of no received receipt),
      a retention no smaller than the number of payloads listed;
    - genesis: one row, id 0, its hash column the hash of its bytes;
    - blocks: heights 0 to the tip, each hash column the block's hash, each block verified
      where it sits (`verify_block`: link, signatures, receipts, endorsements), no seq sealed
      twice;
    - own_txs: tx_id is the hash of the stored bytes, seq and block_height agree with them and
      with the block that seals them, every sealed transaction has its row; a pending one is
      of this genesis, within its lifetime and signed;
    - received_receipts and issued_receipts: id is the hash of the stored bytes, tx_id and
      receiver agree with them; each meets the genesis's rules and is signed; a received one
      is for an own transaction;
    - checkpoint: at most one row, id 0, signed by the owner for this genesis, its turn column
      the signed one, counting no more own transactions than are stored, its state file
      (`checkpoint/<digest>`) present, hashing to its name and decoding; candidate: at most one row, id 0, the next block after
      the tip (`verify_block`) holding only pending own transactions;
    - payloads: each listed digest has its file, and every payload file, listed or left over by
      a crash, hashes to its name; then SQLite's integrity check (each index agrees with its
      table).

    Signatures already checked by `verify_block` are not checked again: a stored record with
    the hash of a block's transaction or receipt is those very bytes. The first problem is
    raised as `ChainError` whose detail names the table, the row (its place in rowid order,
    from 0) and its rowid; `StoreError` if there is no readable store at `path`.
    """
    folder, db = locate(path)
    try:
        with open(db, "rb"):
            pass
    except OSError as err:
        raise StoreError(f"cannot read {db}: {err.strerror or err}") from err
    conn = connect(db, read_only=True)
    try:
        conn.execute("BEGIN")  # one read transaction: every table from one snapshot
        chain = _Checker(conn)
        chain.check_tables()
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        raise StoreError(f"cannot read {db} as a chain store: {err}") from err
    finally:
        conn.close()
    chain.check_payload_files(folder / PAYLOAD_DIR)
    chain.check_checkpoint_files(folder / CHECKPOINT_DIR)
    return chain.summary()


@dataclass(frozen=True)
class _Place:
    """Where a row is stored: its table, its place in rowid order (from 0) and its rowid."""

    table: str
    index: int
    rowid: int

    def error(self, reason: str, detail: str, height: int = NO_HEIGHT) -> ChainError:
        where = f"{self.table} row {self.index} (rowid {self.rowid})"
        return ChainError(height, reason, f"{where}: {detail}")


@dataclass(frozen=True)
class _Sealed:
    """An own transaction as read from the block that seals it."""

    height: int
    seq: int
    block: _Place
    entry: int


@dataclass(frozen=True)
class _Signer:
    """The first row read that a key signed, where that key must (or must not) be the owner."""

    place: _Place
    what: str
    height: int


@dataclass
class _Checker:
    """Reads each table once, in dependency order, keeping only what later tables are checked
    against: the genesis, the sealed transactions and receipt ids, the own ids, the signers."""

    conn: sqlite3.Connection
    genesis: Genesis | None = None
    owner: bytes = b""
    owner_at: _Place | None = None
    keep: int | None = None
    keep_at: _Place | None = None
    tip_hash: bytes = b""
    n_blocks: int = 0
    n_txs: int = 0
    n_receipts: int = 0
    sealed: dict[bytes, _Sealed] = field(default_factory=dict)
    sealed_receipts: set[bytes] = field(default_factory=set)
    own_ids: set[bytes] = field(default_factory=set)
    max_own_seq: int = -1
    checkpoint_state: tuple[_Place, bytes] | None = None
    payload_heights: dict[bytes, int] = field(default_factory=dict)
    listed: list[tuple[_Place, bytes]] = field(default_factory=list)
    # Keys that signed blocks, own transactions and issued receipts (all the owner's), and
    # keys that signed received receipts (never the owner's); checked against the meta owner
    # once all are read, so a wrong owner row is told as such, not as every row it disowns.
    by_owner: dict[bytes, _Signer] = field(default_factory=dict)
    by_peers: dict[bytes, _Signer] = field(default_factory=dict)

    def summary(self) -> ChainSummary:
        return ChainSummary(
            height=self.n_blocks - 1,
            tip_hash=self.tip_hash,
            n_blocks=self.n_blocks,
            n_transactions=self.n_txs,
            n_receipts=self.n_receipts,
        )

    def rows(self, table: str, columns: str) -> Iterator[tuple[_Place, tuple[object, ...]]]:
        cursor = self.conn.execute(f"SELECT rowid, {columns} FROM {table} ORDER BY rowid")
        for index, (rowid, *cells) in enumerate(cursor):
            yield _Place(table, index, rowid), tuple(cells)

    def check_tables(self) -> None:
        self.check_schema()
        self.check_meta()
        genesis = self.check_genesis()
        self.check_blocks(genesis)
        self.check_own_txs(genesis)
        self.check_received(genesis)
        self.check_issued(genesis)
        self.check_checkpoint(genesis)
        self.check_candidate(genesis)
        self.check_payload_rows()
        self.check_owner(genesis)
        # What the rows cannot show: an index that disagrees with its table, a damaged page.
        problems = [m for (m,) in self.conn.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            raise ChainError(
                NO_HEIGHT, "decode_error", "the database fails SQLite's integrity check: "
                + "; ".join(str(m) for m in problems)
            )

    # -- the tables, in the order they depend on each other ------------------------------

    def check_schema(self) -> None:
        expected = {name: (kind, table, _squeeze(sql)) for kind, name, table, sql in _schema()}
        seen: set[str] = set()
        roots: set[object] = set()
        for at, (kind, name, table, root, sql) in self.rows(
            "sqlite_master", "type, name, tbl_name, rootpage, sql"
        ):
            if not isinstance(name, str) or name not in expected or name in seen:
                raise at.error("decode_error", f"{_kind(name)} is not an object of a chain store")
            if (kind, table, _squeeze(sql)) != expected[name]:
                raise at.error("decode_error", f"{name} is not defined as a chain store's {name}")
            # Each table and index has a b-tree of its own; which page it starts on is SQLite's.
            if not isinstance(root, int) or root < 1 or root in roots:
                raise at.error("decode_error", f"rootpage of {name} is {_kind(root)}, not a "
                               "page of its own")
            seen.add(name)
            roots.add(root)
        if not seen:
            raise ChainError(NO_HEIGHT, "decode_error", "the database holds no tables; it is "
                             "not a chain store")
        for name in sorted(expected.keys() - seen):
            raise ChainError(NO_HEIGHT, "decode_error", f"sqlite_master: no {name}")

    def check_meta(self) -> None:
        seen: dict[str, _Place] = {}
        for at, (key, value) in self.rows("meta", "key, value"):
            if not isinstance(key, str) or key not in _META_KEYS:
                raise at.error("decode_error", f"key column holds {_kind(key)}, not a meta key")
            if key in seen:
                raise at.error("decode_error", f"key {key} repeats meta row {seen[key].index}")
            seen[key] = at
            if key == "schema_version" and value != SCHEMA_VERSION:
                raise at.error("decode_error", f"schema_version is {_kind(value)}, this code "
                               f"reads {SCHEMA_VERSION}")
            if key == "owner":
                self.owner, self.owner_at = _blob(at, "value", value, PUBLIC_KEY_SIZE), at
            if key == "keep_payloads":
                if not isinstance(value, int) or not 0 <= value < _KEEP_MAX:
                    raise at.error("decode_error", f"keep_payloads is {_kind(value)}, not a "
                                   "payload count")
                self.keep, self.keep_at = value, at
        for key in _META_KEYS[:2]:
            if key not in seen:
                raise ChainError(NO_HEIGHT, "decode_error", f"meta: no {key} row")

    def check_genesis(self) -> Genesis:
        genesis = None
        for at, (id_, recorded, data) in self.rows("genesis", "id, hash, data"):
            if id_ != 0 or genesis is not None:
                raise at.error("decode_error", f"id column is {_kind(id_)}; a store holds one "
                               "genesis, with id 0")
            recorded = _blob(at, "hash", recorded, DIGEST_SIZE)
            genesis = _decode(Genesis, _blob(at, "data", data), at)
            if genesis.hash != recorded:
                raise at.error("hash_mismatch", "hash column is not the hash of the genesis")
        if genesis is None:
            raise ChainError(NO_HEIGHT, "missing_genesis", "the store holds no genesis")
        self.genesis, self.tip_hash = genesis, genesis.hash
        return genesis

    def check_blocks(self, genesis: Genesis) -> None:
        # The height column is the rowid: a gap, or a height past the end, shows before any
        # block's bytes are read (each is read once, below).
        heights = [h for (h,) in self.conn.execute("SELECT height FROM blocks ORDER BY height")]
        n = len(heights)
        if heights != list(range(n)):
            missing = next(i for i, h in enumerate(heights) if h != i)
            # n distinct heights that are not 0..n-1: at least one lies outside them.
            culprit = next(h for h in heights if not 0 <= h < n)
            raise _Place("blocks", heights.index(culprit), culprit).error(
                "bad_height", f"height column is {culprit}, but {n} blocks stand at heights 0 "
                f"to {n - 1}; height {missing} is missing", missing
            )
        seqs: dict[int, int] = {}
        for at, (_, recorded, data) in self.rows("blocks", "height, hash, data"):
            height = at.index
            block = self.next_block(at, recorded, data, genesis, height)
            self.by_owner.setdefault(block.creator, _Signer(at, "block", height))
            for i, entry in enumerate(block.entries):
                tx = entry.tx
                if tx.seq in seqs:
                    raise at.error("replayed_seq", f"entry {i}: seq {tx.seq} is already sealed "
                                   f"in block {seqs[tx.seq]}", height)
                seqs[tx.seq] = height
                self.sealed[tx.tx_id] = _Sealed(height, tx.seq, at, i)
                self.sealed_receipts.update(r.id for r in entry.receipts)
                self.payload_heights.setdefault(tx.model_digest, height)
                self.n_receipts += len(entry.receipts)
            self.payload_heights.setdefault(block.model_digest_after, height)
            self.n_txs += len(block.entries)
            self.n_blocks += 1
            self.tip_hash = block.hash

    def next_block(self, at: _Place, recorded: object, data: object, genesis: Genesis,
                   height: int) -> Block:
        """The block of a row (a stored one, or the candidate) whose hash column is its hash,
        verified as the block after the tip read so far (`verify_block`)."""
        recorded = _blob(at, "hash", recorded, DIGEST_SIZE, height)
        block = _decode(Block, _blob(at, "data", data, height=height), at, height)
        if block.hash != recorded:
            raise at.error("hash_mismatch", "hash column is not the hash of the block", height)
        _reraise(at, height, verify_block, block, genesis=genesis, prev_hash=self.tip_hash,
                 height=height)
        return block

    def check_own_txs(self, genesis: Genesis) -> None:
        seqs: dict[int, _Place] = {}
        found: set[bytes] = set()
        for at, (tx_id, seq, block_height, data) in self.rows(
            "own_txs", "tx_id, seq, block_height, data"
        ):
            tx_id = _blob(at, "tx_id", tx_id, DIGEST_SIZE)
            seq = _uint(at, "seq", seq)
            data = _blob(at, "data", data)
            if seq in seqs:
                raise at.error("replayed_seq", f"seq {seq} repeats own_txs row {seqs[seq].index}")
            seqs[seq] = at
            self.max_own_seq = max(self.max_own_seq, seq)
            if digest(data) != tx_id:
                raise at.error("hash_mismatch", "tx_id column is not the hash of the stored "
                               "transaction")
            if tx_id in self.own_ids:
                raise at.error("hash_mismatch", "the transaction is stored twice")
            self.own_ids.add(tx_id)
            sealed = self.sealed.get(tx_id)
            if sealed is not None:
                # The very bytes of a block entry (same hash), which verify_block checked.
                found.add(tx_id)
                if seq != sealed.seq:
                    raise at.error("decode_error", f"seq column is {seq}, the signed "
                                   f"transaction's seq is {sealed.seq}", sealed.height)
                if block_height != sealed.height:
                    raise at.error("bad_height", f"block_height column is {_kind(block_height)}"
                                   f", but the transaction is sealed in block {sealed.height}",
                                   sealed.height)
                continue
            tx = _decode(Transaction, data, at)
            if seq != tx.seq:
                raise at.error("decode_error", f"seq column is {seq}, the signed transaction's "
                               f"seq is {tx.seq}")
            if block_height is not None:
                raise at.error("bad_height", f"block_height column is {_kind(block_height)}, "
                               "but no block holds the transaction")
            if tx.genesis_hash != genesis.hash:
                raise at.error("wrong_genesis", "the pending transaction is of another genesis")
            _reraise(at, NO_HEIGHT, check_lifetime, tx, genesis)
            _reraise(at, NO_HEIGHT, tx.verify)
            self.by_owner.setdefault(tx.creator, _Signer(at, "pending transaction", NO_HEIGHT))
        for tx_id, sealed in self.sealed.items():
            if tx_id not in found:
                raise sealed.block.error(
                    "bad_height", f"entry {sealed.entry}: own_txs holds no row for its "
                    f"transaction (seq {sealed.seq})", sealed.height
                )

    def check_received(self, genesis: Genesis) -> None:
        pairs: set[tuple[bytes, bytes]] = set()
        ids: set[bytes] = set()
        for at, cells in self.rows("received_receipts", "id, tx_id, receiver, data"):
            receipt = _receipt(at, cells, genesis, ids, self.sealed_receipts)
            receiver = _blob(at, "receiver", cells[2], PUBLIC_KEY_SIZE)
            if receiver != receipt.receiver:
                raise at.error("bad_receipt", "receiver column does not match the signed receipt")
            if (receipt.tx_id, receiver) in pairs:
                raise at.error("bad_receipt", "a second receipt from this receiver for this "
                               "transaction")
            pairs.add((receipt.tx_id, receiver))
            if receipt.tx_id not in self.own_ids:
                raise at.error("bad_receipt", f"for tx {receipt.tx_id.hex()[:16]}.., which is "
                               "not an own transaction")
            self.by_peers.setdefault(receiver, _Signer(at, "received receipt", NO_HEIGHT))

    def check_issued(self, genesis: Genesis) -> None:
        ids: set[bytes] = set()
        for at, cells in self.rows("issued_receipts", "id, tx_id, data"):
            receipt = _receipt(at, cells, genesis, ids, frozenset())
            self.by_owner.setdefault(receipt.receiver, _Signer(at, "issued receipt", NO_HEIGHT))

    def check_checkpoint(self, genesis: Genesis) -> None:
        published = max(1 + max((s.seq for s in self.sealed.values()), default=-1),
                        self.max_own_seq + 1)
        for at, (id_, turn, data) in self.rows("checkpoint", "id, turn, data"):
            if id_ != 0 or at.index > 0:
                raise at.error("decode_error", f"id column is {_kind(id_)}; a store holds one "
                               "checkpoint, with id 0")
            cp = _decode(Checkpoint, _blob(at, "data", data), at)
            if turn != cp.turn:
                raise at.error("bad_checkpoint", f"turn column is {_kind(turn)}, the signed "
                               f"checkpoint's turn is {cp.turn}")
            _reraise(at, NO_HEIGHT, check_checkpoint, cp, genesis=genesis, owner=cp.owner,
                     published=published)
            self.checkpoint_state = (at, cp.state_digest)
            self.by_owner.setdefault(cp.owner, _Signer(at, "checkpoint", NO_HEIGHT))

    def check_candidate(self, genesis: Genesis) -> None:
        for at, (id_, recorded, data) in self.rows("candidate", "id, hash, data"):
            height = self.n_blocks
            if id_ != 0 or at.index > 0:
                raise at.error("decode_error", f"id column is {_kind(id_)}; a store holds one "
                               "candidate block, with id 0", height)
            block = self.next_block(at, recorded, data, genesis, height)
            for i, entry in enumerate(block.entries):
                if entry.tx.tx_id not in self.own_ids or entry.tx.tx_id in self.sealed:
                    raise at.error("bad_height", f"entry {i}: seq {entry.tx.seq} is not a "
                                   "pending own transaction", height)
            self.by_owner.setdefault(block.creator, _Signer(at, "candidate block", height))

    def check_payload_rows(self) -> None:
        digests: set[bytes] = set()
        orders: set[int] = set()
        for at, (d, order) in self.rows("payloads", "digest, put_order"):
            if not isinstance(d, bytes) or len(d) != DIGEST_SIZE:
                raise at.error("payload_mismatch", f"digest column holds {_kind(d)}, not a "
                               "payload digest")
            if not isinstance(order, int) or order < 1:
                raise at.error("decode_error", f"put_order column holds {_kind(order)}, not a "
                               "positive integer")
            if d in digests or order in orders:
                raise at.error("decode_error", "digest or put_order repeats another row's")
            digests.add(d)
            orders.add(order)
            self.listed.append((at, d))
        if self.keep is not None and len(self.listed) > self.keep:
            assert self.keep_at is not None
            raise self.keep_at.error("payload_mismatch", f"keep_payloads is {self.keep}, but "
                                     f"{len(self.listed)} payloads are listed")

    def check_owner(self, genesis: Genesis) -> None:
        assert self.owner_at is not None  # check_meta requires the row
        owner = self.owner
        if self.by_owner and owner not in self.by_owner:
            raise self.owner_at.error("wrong_creator", "owner is not the key that signed the "
                                      "store's blocks, own transactions and issued receipts")
        if not genesis.is_member(owner):
            raise self.owner_at.error("unknown_sender", "owner is not a member of the genesis")
        for key, first in self.by_owner.items():
            if key != owner:
                raise first.place.error("wrong_creator", f"{first.what} is not signed by the "
                                        "store's owner", first.height)
        if owner in self.by_peers:
            raise self.by_peers[owner].place.error("bad_receipt", "a receipt by the owner for "
                                                   "its own transaction")

    # -- files ---------------------------------------------------------------------------

    def check_payload_files(self, payload_dir: Path) -> None:
        """Listed payloads have their files; every file, listed or not, hashes to its name.

        An unlisted file is tolerated: a writer killed between a commit and removing a file it
        unlisted, or inside a batch that wrote one, leaves it, named by its digest still.
        """
        for at, d in self.listed:
            if not (payload_dir / d.hex()).is_file():
                raise at.error("missing_payload", f"lists payload {d.hex()[:16]}.., which "
                               "has no file", self.payload_heights.get(d, NO_HEIGHT))
        if not payload_dir.exists():
            return
        try:
            paths = sorted(payload_dir.iterdir())
        except OSError as err:
            raise StoreError(f"cannot list {payload_dir}: {err.strerror or err}") from err
        assert self.genesis is not None
        for path in paths:
            if path.name.startswith("."):
                continue  # a temporary file or the spare; never read as a payload
            _check_payload_file(path, self.genesis.model_spec_id, self.payload_heights)


    def check_checkpoint_files(self, folder: Path) -> None:
        """The checkpoint's state file exists, hashes to its name and decodes; any other state
        file (the previous one, kept until the next checkpoint) hashes to its name."""
        paths = sorted(p for p in folder.iterdir() if not p.name.startswith(".")) \
            if folder.is_dir() else []
        for path in paths:
            where = f"{CHECKPOINT_DIR}/{path.name}"
            try:
                data = path.read_bytes()
            except OSError as err:
                raise ChainError(NO_HEIGHT, "bad_checkpoint", f"{where}: cannot be read: "
                                 f"{err.strerror or err}") from err
            if digest(data).hex() != path.name:
                raise ChainError(NO_HEIGHT, "bad_checkpoint", f"{where}: does not hash to its name")
        if self.checkpoint_state is None:
            return
        at, state_digest = self.checkpoint_state
        path = folder / state_digest.hex()
        if path not in paths:
            raise at.error("bad_checkpoint", f"names state {state_digest.hex()[:16]}.., which "
                           f"has no file in {CHECKPOINT_DIR}/")
        try:
            decode_state(path.read_bytes())
        except DecodeError as err:
            raise at.error("decode_error", f"its state file does not decode: {err}") from err


def _check_payload_file(path: Path, spec_id: bytes, heights: dict[bytes, int]) -> None:
    where = f"{PAYLOAD_DIR}/{path.name}"
    try:
        name = bytes.fromhex(path.name)
    except ValueError:
        name = b""
    height = heights.get(name, NO_HEIGHT)
    if len(name) != DIGEST_SIZE:
        raise ChainError(height, "payload_mismatch", f"{where}: not named by a payload digest")
    if not path.is_file():
        raise ChainError(height, "payload_mismatch", f"{where}: not a file")
    hasher = blake3.blake3(spec_id)
    try:
        hasher.update_mmap(path)  # hashes the file without reading it into memory
    except OSError as err:
        raise StoreError(f"cannot read payload file {path}: {err.strerror or err}") from err
    if hasher.digest() != name:
        raise ChainError(height, "payload_mismatch", f"{where}: does not hash to its name")


# -- cells ---------------------------------------------------------------------------------


@cache
def _schema() -> tuple[tuple[str, str, str, str | None], ...]:
    return tuple(schema_objects())


def _squeeze(sql: object) -> object:
    """SQL text with its whitespace runs made single spaces; anything else unchanged."""
    return " ".join(sql.split()) if isinstance(sql, str) else sql


def _kind(value: object) -> str:
    """How a cell is named in errors."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"a {len(value)}-byte blob"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the real {value!r}"
    return f"the text {str(value)[:24]!r}"


def _blob(at: _Place, column: str, value: object, size: int | None = None,
          height: int = NO_HEIGHT) -> bytes:
    if isinstance(value, bytes) and (size is None or len(value) == size):
        return value
    want = "a blob" if size is None else f"a {size}-byte blob"
    raise at.error("decode_error", f"{column} column holds {_kind(value)}, not {want}", height)


def _uint(at: _Place, column: str, value: object) -> int:
    if isinstance(value, int) and value >= 0:
        return value
    raise at.error("decode_error", f"{column} column holds {_kind(value)}, not a "
                   "non-negative integer")


_Decoded = TypeVar("_Decoded", Genesis, Block, Transaction, Receipt, Checkpoint)


def _decode(kind: type[_Decoded], data: bytes, at: _Place, height: int = NO_HEIGHT) -> _Decoded:
    try:
        return kind.decode(data)
    except DecodeError as err:
        raise at.error("decode_error", f"data column does not decode: {err}", height) from err


def _receipt(at: _Place, cells: tuple[object, ...], genesis: Genesis, ids: set[bytes],
             sealed: AbstractSet[bytes]) -> Receipt:
    """The receipt of a row whose cells start with its id and tx_id and end with its data."""
    receipt_id = _blob(at, "id", cells[0], DIGEST_SIZE)
    tx_id = _blob(at, "tx_id", cells[1], DIGEST_SIZE)
    data = _blob(at, "data", cells[-1])
    if digest(data) != receipt_id:
        raise at.error("hash_mismatch", "id column is not the hash of the stored receipt")
    if receipt_id in ids:
        raise at.error("hash_mismatch", "the receipt is stored twice")
    ids.add(receipt_id)
    receipt = _decode(Receipt, data, at)
    if tx_id != receipt.tx_id:
        raise at.error("hash_mismatch", "tx_id column does not match the signed receipt")
    _reraise(at, NO_HEIGHT, check_receipt_fields, receipt, genesis)
    if receipt_id not in sealed:  # a sealed one is the very bytes verify_block checked
        _reraise(at, NO_HEIGHT, receipt.verify)
    return receipt


def _reraise(at: _Place, height: int, check: Callable[..., None], /, *args: object,
             **kwargs: object) -> None:
    """`check(*args, **kwargs)`, a `ValidationError` from it raised as the row's `ChainError`."""
    try:
        check(*args, **kwargs)
    except ValidationError as err:
        raise at.error(err.reason, err.detail, height) from err
