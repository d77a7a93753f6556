"""A node's chain store: its chain and records in SQLite, its model payloads in files beside."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from dfl_ray.ledger.block import Block, verify_block
from dfl_ray.ledger.checkpoint import CHECKPOINT_DIR, Checkpoint, check_checkpoint, parts_digest
from dfl_ray.ledger.encoding import require_bytes, require_uint
from dfl_ray.ledger.errors import DecodeError, StoreError, ValidationError
from dfl_ray.ledger.genesis import Genesis
from dfl_ray.ledger.hashing import DIGEST_SIZE, Buffer, byte_view, digest
from dfl_ray.ledger.identity import PUBLIC_KEY_SIZE
from dfl_ray.ledger.payloads import PAYLOAD_DIR, PayloadData, PayloadStore
from dfl_ray.ledger.payloads import SCHEMA as PAYLOADS_SCHEMA
from dfl_ray.ledger.receipt import Receipt
from dfl_ray.ledger.transaction import Transaction

# A store folder holds `chain.sqlite` (the tables below), `payloads/` (a `PayloadStore`) and
# `lock`, held (flock) by the one process that has the store open for writing.
DB_NAME = "chain.sqlite"
LOCK_NAME = "lock"
SCHEMA_VERSION = 2
WRITER_CACHE_KIB = 256

# `blocks` holds each block's height, hash and encoding; `own_txs` the node's transactions,
# sealed or pending; `received_receipts` the receipts peers returned for own transactions;
# `issued_receipts` the receipts this node signed; `meta` the owner key, schema version and
# retention; `checkpoint` the node's signed checkpoint for a restart, whose state is the file
# `checkpoint/<state digest>`, `candidate` the block it proposed and has not stored yet (both
# at most one row); `payloads` belongs to the `PayloadStore`.
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE genesis (id INTEGER PRIMARY KEY CHECK (id = 0), hash BLOB NOT NULL,
                      data BLOB NOT NULL);
CREATE TABLE blocks (height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, data BLOB NOT NULL);
CREATE TABLE own_txs (tx_id BLOB PRIMARY KEY, seq INTEGER NOT NULL UNIQUE,
                      block_height INTEGER, data BLOB NOT NULL);
CREATE INDEX own_txs_by_block ON own_txs (block_height, seq);
CREATE TABLE received_receipts (id BLOB PRIMARY KEY, tx_id BLOB NOT NULL,
                                receiver BLOB NOT NULL, data BLOB NOT NULL,
                                UNIQUE (tx_id, receiver));
CREATE TABLE issued_receipts (id BLOB PRIMARY KEY, tx_id BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE checkpoint (id INTEGER PRIMARY KEY CHECK (id = 0), turn INTEGER NOT NULL,
                         data BLOB NOT NULL);
CREATE TABLE candidate (id INTEGER PRIMARY KEY CHECK (id = 0), hash BLOB NOT NULL,
                        data BLOB NOT NULL);
""" + PAYLOADS_SCHEMA


def schema_objects() -> list[tuple[str, str, str, str | None]]:
    """(type, name, tbl_name, sql) of each table and index `create` puts in sqlite_master."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        rows: list[tuple[str, str, str, str | None]] = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master"
        ).fetchall()
    finally:
        conn.close()
    return rows


def locate(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(store folder, database file) for a store folder or its `chain.sqlite`; StoreError if absent."""
    path = Path(path)
    if path.is_dir():
        folder, db = path, path / DB_NAME
    else:
        folder, db = path.parent, path
    if not db.is_file():
        raise StoreError(f"no chain store at {path}: {db} does not exist")
    return folder, db


def connect(db: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=NORMAL.

    In WAL mode every commit is atomic whatever the sync level; NORMAL skips the fsync per
    commit, so a power cut may lose the last few commits but still leaves a chain that ends at
    some earlier block, never half a block, and a killed process loses nothing that was
    committed (the WAL is written before `COMMIT` returns). FULL would only add durability of
    those last commits across power loss, at an fsync per round.

    `read_only` connections never create the file and refuse writes; they still open in
    read-write mode so they can recover the WAL left by a killed writer.
    """
    uri = db.resolve().as_uri() + ("?mode=rw" if read_only else "?mode=rwc")
    try:
        # One store may be used from several threads of one actor; `_lock` serialises them.
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        else:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # A node touches a few index pages per call; SQLite's default cache of up to 2 MB
            # per connection would add up to gigabytes for a thousand nodes in one process.
            conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
    except sqlite3.Error as err:
        raise StoreError(f"cannot open {db} as a SQLite database: {err}") from err
    return conn


def _read_genesis(conn: sqlite3.Connection, db: Path) -> Genesis:
    try:
        row = conn.execute("SELECT data FROM genesis WHERE id = 0").fetchone()
    except sqlite3.Error as err:
        raise StoreError(f"{db} is not a chain store: {err}") from err
    if row is None:
        raise StoreError(f"{db} holds no genesis")
    try:
        return Genesis.decode(row[0])
    except DecodeError as err:
        raise StoreError(f"{db}: stored genesis does not decode: {err}") from err


def _write_new_db(db: Path, genesis: Genesis, owner: bytes, keep_payloads: int | None) -> None:
    meta: list[tuple[str, object]] = [("schema_version", SCHEMA_VERSION), ("owner", owner)]
    if keep_payloads is not None:
        meta.append(("keep_payloads", keep_payloads))
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        # One transaction, so building the file costs one commit, not one per statement.
        conn.executescript("BEGIN;" + _SCHEMA)
        conn.execute(
            "INSERT INTO genesis (id, hash, data) VALUES (0, ?, ?)", (genesis.hash, genesis.encode())
        )
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _genesis_difference(stored: Genesis, expected: Genesis) -> str:
    names = [f.name for f in fields(Genesis) if getattr(stored, f.name) != getattr(expected, f.name)]
    return ", ".join(names)


class ChainStore:
    """One node's chain and records. Use `create` or `open`; one writer process per store.

    Every method that changes the store checks its input first and writes second, inside one
    SQLite savepoint: bad input raises and stores nothing, and a process killed at any moment
    leaves the store as it was before or after the call. `batch()` groups many calls into one
    transaction (one commit per round instead of one per insert). Model payloads live in a
    `PayloadStore` under `payloads/`, whose files follow these transactions.

    Signature checks: by default every record's signature is verified here. A caller that has
    just verified a receipt itself (the receive path), or that signed the record itself (its
    own transactions and the receipts it issues), passes `verified=True` so the Ed25519 check
    runs once, not twice; the remaining checks (owner, genesis, known transaction) always run.
    The same holds for a block the owner seals from records it verified when it stored them,
    and for a payload whose digest the caller has just computed. `verify_chain` trusts none of
    this and checks every signature and payload again.
    """

    def __init__(
        self,
        folder: Path,
        conn: sqlite3.Connection,
        lock_fd: int,
        genesis: Genesis,
        owner: bytes,
        keep_payloads: int | None,
    ) -> None:
        self._folder = folder
        self._conn = conn
        self._lock_fd: int | None = lock_fd
        self._genesis = genesis
        self._owner = owner
        self._payloads = PayloadStore(
            folder / PAYLOAD_DIR, conn, genesis.model_spec_id, keep_payloads
        )
        self._lock = threading.RLock()
        self._depth = 0  # savepoints open

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        genesis: Genesis,
        owner: bytes,
        keep_payloads: int | None = None,
    ) -> ChainStore:
        """A new, empty store in folder `path` (created if needed) for `owner`'s chain.

        `keep_payloads` is how many of the most recent payloads to keep on disk (None: all,
        0: none); the chain itself keeps every digest forever. Refuses a folder that already has a store.
        """
        if not isinstance(genesis, Genesis):
            raise TypeError(f"genesis must be a Genesis, got {type(genesis).__name__}")
        require_bytes("owner", owner, (PUBLIC_KEY_SIZE,))
        if keep_payloads is not None:
            require_uint("keep_payloads", keep_payloads, 1 << 31)
        folder = Path(path)
        if (folder / DB_NAME).exists():
            raise StoreError(f"refusing to create a store at {folder}: {DB_NAME} already exists")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PAYLOAD_DIR).mkdir(exist_ok=True)
        lock_fd = _acquire_lock(folder)
        try:
            db = folder / DB_NAME
            if db.exists():
                raise StoreError(f"refusing to create a store at {folder}: {DB_NAME} already exists")
            # Built under a temporary name and renamed, so a crash mid-way leaves no half store.
            tmp = folder / f".{DB_NAME}.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            try:
                _write_new_db(tmp, genesis, owner, keep_payloads)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, db)
            return cls(folder, connect(db), lock_fd, genesis, owner, keep_payloads)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], expected_genesis: Genesis | None = None
    ) -> ChainStore:
        """The existing store at `path` (its folder or its `chain.sqlite`).

        Raises StoreError naming the path if there is none, and naming the differing fields if
        its genesis is not `expected_genesis`.
        """
        folder, db = locate(path)
        lock_fd = _acquire_lock(folder)
        try:
            conn = connect(db)
            try:
                genesis = _read_genesis(conn, db)
                if expected_genesis is not None and genesis.hash != expected_genesis.hash:
                    raise StoreError(
                        f"store at {folder} has genesis {genesis.hash.hex()[:16]}.., expected "
                        f"{expected_genesis.hash.hex()[:16]}..; differing fields: "
                        f"{_genesis_difference(genesis, expected_genesis)}"
                    )
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                if meta.get("schema_version") != SCHEMA_VERSION:
                    raise StoreError(
                        f"store at {folder} has schema version {meta.get('schema_version')}, "
                        f"this code reads {SCHEMA_VERSION}"
                    )
                owner = meta.get("owner")
                if not isinstance(owner, bytes) or len(owner) != PUBLIC_KEY_SIZE:
                    raise StoreError(f"store at {folder} has no valid owner key")
                (folder / PAYLOAD_DIR).mkdir(exist_ok=True)
            except sqlite3.Error as err:
                conn.close()
                raise StoreError(f"{db} is not a chain store: {err}") from err
            except BaseException:
                conn.close()
                raise
            return cls(folder, conn, lock_fd, genesis, owner, meta.get("keep_payloads"))
        except BaseException:
            os.close(lock_fd)
            raise

    def close(self) -> None:
        """Close the database and release the lock; calling it twice is harmless."""
        with self._lock:
            if self._lock_fd is None:
                return
            if self._depth:
                raise StoreError("cannot close the store inside batch()")
            self._conn.close()
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- properties and reads ------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._folder

    @property
    def genesis(self) -> Genesis:
        return self._genesis

    @property
    def owner(self) -> bytes:
        return self._owner

    @property
    def keep_payloads(self) -> int | None:
        return self._payloads.keep

    @property
    def height(self) -> int:
        """Height of the tip block; -1 while the chain holds no block."""
        value: int = self._one("SELECT COALESCE(MAX(height), -1) FROM blocks")[0]
        return value

    @property
    def tip_hash(self) -> bytes:
        """What the next block links to: the tip's hash, or the genesis hash when empty."""
        row = self._one_or_none("SELECT hash FROM blocks ORDER BY height DESC LIMIT 1")
        return self._genesis.hash if row is None else bytes(row[0])

    @property
    def last_own_seq(self) -> int | None:
        """Highest seq of the owner's stored transactions; None before the first."""
        value: int | None = self._one("SELECT MAX(seq) FROM own_txs")[0]
        return value

    def tip(self) -> Block | None:
        row = self._one_or_none("SELECT data FROM blocks ORDER BY height DESC LIMIT 1")
        return None if row is None else _decode_stored(Block, row[0], "tip block")

    def block_at(self, height: int) -> Block | None:
        require_uint("height", height, (1 << 63) - 1)
        row = self._one_or_none("SELECT data FROM blocks WHERE height = ?", (height,))
        return None if row is None else _decode_stored(Block, row[0], f"block {height}")

    def blocks(self) -> Iterator[Block]:
        """Every block from height 0 to the tip as of the call, decoded one at a time."""
        for height in range(self.height + 1):
            block = self.block_at(height)
            if block is None:
                raise StoreError(f"block {height} is missing from {self._folder}")
            yield block

    def transaction(self, tx_id: bytes) -> Transaction | None:
        """An own transaction by id, sealed or pending."""
        row = self._one_or_none("SELECT data FROM own_txs WHERE tx_id = ?", (tx_id,))
        return None if row is None else _decode_stored(Transaction, row[0], "transaction")

    def has_transaction(self, tx_id: bytes) -> bool:
        """Whether `tx_id` is an own transaction, sealed or pending (one index lookup, no decode)."""
        return self._one_or_none("SELECT 1 FROM own_txs WHERE tx_id = ?", (tx_id,)) is not None

    def pending_count(self) -> int:
        """How many own transactions are not yet in a block (no decode)."""
        value: int = self._one("SELECT COUNT(*) FROM own_txs WHERE block_height IS NULL")[0]
        return value

    def pending_transactions(self) -> list[tuple[Transaction, tuple[Receipt, ...]]]:
        """Own transactions not yet in a block, lowest seq first, each with its receipts."""
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT t.tx_id, t.data, r.data FROM own_txs AS t "
                "LEFT JOIN received_receipts AS r ON r.tx_id = t.tx_id "
                "WHERE t.block_height IS NULL ORDER BY t.seq, r.rowid"
            ).fetchall()
        out: list[tuple[Transaction, list[Receipt]]] = []
        last_id = None
        for tx_id, tx_data, receipt_data in rows:
            if tx_id != last_id:
                out.append((_decode_stored(Transaction, tx_data, "transaction"), []))
                last_id = tx_id
            if receipt_data is not None:
                out[-1][1].append(_decode_stored(Receipt, receipt_data, "receipt"))
        return [(tx, tuple(receipts)) for tx, receipts in out]

    def has_issued_receipt(self, receipt_id: bytes) -> bool:
        row = self._one_or_none("SELECT 1 FROM issued_receipts WHERE id = ?", (receipt_id,))
        return row is not None

    def issued_receipt_ids(self) -> Collection[bytes]:
        """The ids of every receipt this node issued, as a live view (membership is one lookup).

        `endorse` only tests membership, so this never loads the whole (ever growing) table.
        """
        return _IssuedReceiptIds(
            self.has_issued_receipt, self._issued_receipt_count, self._issued_receipt_id_list
        )

    def get_payload(self, digest: bytes) -> bytes | None:
        """The payload stored under `digest`, checked against it; None if not kept."""
        require_bytes("digest", digest, (DIGEST_SIZE,))
        self._check_open()
        return self._payloads.get(digest)

    # -- changes -------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the calls made inside into one SQLite transaction: all stored, or none."""
        with self._savepoint():
            yield

    def add_own_transaction(self, tx: Transaction, *, verified: bool = False) -> None:
        """Record a transaction this node just published (pending until sealed).

        `verified=True`: the caller signed `tx` itself, so its signature is not checked again.
        """
        if not isinstance(tx, Transaction):
            raise TypeError(f"expected a Transaction, got {type(tx).__name__}")
        with self._lock:
            self._check_own_tx(tx, verified=verified)
            last = self.last_own_seq
            if last is not None and tx.seq <= last:
                raise ValidationError(
                    "replayed_seq", f"seq {tx.seq} is not above the last own seq {last}"
                )
            with self._savepoint() as conn:
                conn.execute(
                    "INSERT INTO own_txs (tx_id, seq, block_height, data) VALUES (?, ?, NULL, ?)",
                    (tx.tx_id, tx.seq, tx.encode()),
                )

    def add_receipt(self, receipt: Receipt, *, verified: bool = False) -> bool:
        """Record a receipt a peer returned for an own transaction; False if already held.

        Only the first receipt per (transaction, receiver) is kept: gossip may deliver a
        transaction to a peer twice, but a block counts each receiver once. `verified=True`:
        the caller has just checked the receiver's signature (`Receipt.verify`), so it is not
        checked again; the other checks still run.
        """
        if not isinstance(receipt, Receipt):
            raise TypeError(f"expected a Receipt, got {type(receipt).__name__}")
        with self._lock:
            if receipt.receiver == self._owner:
                raise ValidationError("bad_receipt", "a node does not receipt its own transaction")
            if not verified:
                receipt.verify()
            # One statement checks that the transaction is an own one and inserts: a receipt
            # arrives for every peer of every own transaction, and a separate lookup would be a
            # second index search for each. Only when nothing was inserted is it told why.
            cur = self._execute_one(
                "INSERT OR IGNORE INTO received_receipts (id, tx_id, receiver, data) "
                "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM own_txs WHERE tx_id = ?)",
                (receipt.id, receipt.tx_id, receipt.receiver, receipt.encode(), receipt.tx_id),
            )
            if cur.rowcount == 1:
                return True
            if not self.has_transaction(receipt.tx_id):
                raise ValidationError(
                    "bad_receipt", f"receipt for tx {receipt.tx_id.hex()[:16]}.., which is not "
                    "an own transaction"
                )
            return False

    def add_issued_receipt(self, receipt: Receipt, *, verified: bool = False) -> bool:
        """Record a receipt this node signed for a peer's transaction; False if already held.

        `verified=True`: the caller signed `receipt` itself, so its signature is not checked again.
        """
        if not isinstance(receipt, Receipt):
            raise TypeError(f"expected a Receipt, got {type(receipt).__name__}")
        with self._lock:
            if receipt.receiver != self._owner:
                raise ValidationError(
                    "bad_receipt", "an issued receipt must name this store's owner as receiver"
                )
            if not verified:
                receipt.verify()
            cur = self._execute_one(
                "INSERT OR IGNORE INTO issued_receipts (id, tx_id, data) VALUES (?, ?, ?)",
                (receipt.id, receipt.tx_id, receipt.encode()),
            )
            return cur.rowcount == 1

    def append_block(self, block: Block, *, verified: bool = False) -> None:
        """Verify `block` as the next block of this chain and store it, atomically.

        Besides `verify_block` against the tip: the creator must be the owner, and no seq may
        already be sealed in an earlier block or belong to another stored own transaction.
        Transactions of the block become sealed (no longer pending).

        `verified=True`: the caller made or checked every signature in the block itself (the
        owner sealing its own transactions with receipts this store holds, which were verified
        when they were added, and endorsements it has just verified), so the Ed25519 checks
        are not repeated; every other check still runs.
        """
        if not isinstance(block, Block):
            raise TypeError(f"expected a Block, got {type(block).__name__}")
        with self._lock:
            if block.creator != self._owner:
                raise ValidationError("wrong_creator", "block creator is not this store's owner")
            verify_block(
                block,
                genesis=self._genesis,
                prev_hash=self.tip_hash,
                height=self.height + 1,
                signatures_checked=verified,
            )
            for entry in block.entries:
                self._check_sealable(entry.tx)
            with self._savepoint() as conn:
                conn.execute(
                    "INSERT INTO blocks (height, hash, data) VALUES (?, ?, ?)",
                    (block.height, block.hash, block.encode()),
                )
                conn.execute("DELETE FROM candidate")  # proposed for this height
                for entry in block.entries:
                    tx = entry.tx
                    conn.execute(
                        "INSERT INTO own_txs (tx_id, seq, block_height, data) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (tx_id) DO UPDATE SET block_height = excluded.block_height",
                        (tx.tx_id, tx.seq, block.height, tx.encode()),
                    )

    def put_candidate(self, block: Block, *, verified: bool = False) -> None:
        """Keep the owner's proposed next block until it is stored with its endorsements, so
        that a restarted node can still seal it (`append_block` removes it)."""
        if not isinstance(block, Block):
            raise TypeError(f"expected a Block, got {type(block).__name__}")
        with self._lock:
            if block.creator != self._owner:
                raise ValidationError("wrong_creator", "block creator is not this store's owner")
            verify_block(block, genesis=self._genesis, prev_hash=self.tip_hash,
                         height=self.height + 1, signatures_checked=verified)
            for entry in block.entries:
                self._check_sealable(entry.tx)
            with self._savepoint() as conn:
                conn.execute("INSERT OR REPLACE INTO candidate (id, hash, data) VALUES (0, ?, ?)",
                             (block.hash, block.encode()))

    def candidate(self) -> Block | None:
        """The proposed block not stored yet (it extends the tip: storing a block removes it)."""
        row = self._one_or_none("SELECT data FROM candidate WHERE id = 0")
        return None if row is None else _decode_stored(Block, row[0], "candidate block")

    def save_checkpoint(self, checkpoint: Checkpoint, state: Sequence[Buffer], *,
                        verified: bool = False) -> None:
        """Make `checkpoint` (`dfl_ray.ledger.checkpoint`) the owner's, its state the pieces
        `state` (`state_parts`) written to `checkpoint/<digest>`.

        The file is written (under a temporary name, then renamed) before the row that names
        it, and the previous state file is kept until a later checkpoint, so a process killed
        at any moment, or a batch rolled back, leaves a row whose file exists (one checkpoint
        per `batch()`: a second one in the same batch could remove the committed row's file).
        `verified=True`:
        the caller signed `checkpoint` over the digest of these very pieces just now.
        """
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"expected a Checkpoint, got {type(checkpoint).__name__}")
        with self._lock:
            last = self.last_own_seq
            check_checkpoint(checkpoint, genesis=self._genesis, owner=self._owner,
                             published=0 if last is None else last + 1, verified=verified)
            if not verified and parts_digest(state) != checkpoint.state_digest:
                raise ValidationError("hash_mismatch",
                                      "the state is not the one the checkpoint signed")
            folder = self._folder / CHECKPOINT_DIR
            folder.mkdir(exist_ok=True)
            name = checkpoint.state_digest.hex()
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            try:
                with open(tmp, "wb") as out:
                    for part in state:
                        out.write(byte_view(part))
                os.replace(tmp, folder / name)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            row = self._one_or_none("SELECT data FROM checkpoint WHERE id = 0")
            keep = {name}
            if row is not None:
                with suppress(DecodeError):
                    keep.add(Checkpoint.decode(bytes(row[0])).state_digest.hex())
            with self._savepoint() as conn:
                conn.execute("INSERT OR REPLACE INTO checkpoint (id, turn, data) VALUES (0, ?, ?)",
                             (checkpoint.turn, checkpoint.encode()))
            for path in folder.iterdir():  # older states than the previous one
                if path.name not in keep and not path.name.startswith("."):
                    path.unlink(missing_ok=True)

    def checkpoint(self) -> tuple[Checkpoint, bytes] | None:
        """The owner's last checkpoint and its state, checked; None before the first."""
        row = self._one_or_none("SELECT data FROM checkpoint WHERE id = 0")
        if row is None:
            return None
        try:
            cp = Checkpoint.decode(bytes(row[0]))
        except DecodeError as err:
            raise StoreError(f"stored checkpoint does not decode: {err}") from err
        last = self.last_own_seq
        path = self._folder / CHECKPOINT_DIR / cp.state_digest.hex()
        try:
            check_checkpoint(cp, genesis=self._genesis, owner=self._owner,
                             published=0 if last is None else last + 1)
            state = path.read_bytes()
        except ValidationError as err:
            raise StoreError(f"stored checkpoint of {self._folder} is not valid: {err}") from err
        except OSError as err:
            raise StoreError(f"cannot read the checkpoint state {path}: {err}") from err
        if digest(state) != cp.state_digest:
            raise StoreError(f"checkpoint state {path} does not hash to its name")
        return cp, state

    def last_own_transaction(self) -> Transaction | None:
        """The owner's stored transaction with the highest seq."""
        row = self._one_or_none("SELECT data FROM own_txs ORDER BY seq DESC LIMIT 1")
        return None if row is None else _decode_stored(Transaction, row[0], "own transaction")

    def put_payload(self, digest: bytes, data: PayloadData, *, verified: bool = False) -> None:
        """Keep a model payload under its digest (a float32 vector or its raw bytes).

        The data must hash to `digest` under this network's model spec (`digest_mismatch`
        otherwise). With `keep_payloads=K`, the oldest payloads beyond the last K are removed;
        with K = 0 the payload is checked and nothing is written at all.

        `verified=True`: the caller has just computed `digest` from these very bytes with this
        network's model spec (a node publishing its model), so they are not hashed again.
        """
        self._payloads.check(digest, data, verified=verified)
        if self._payloads.keep == 0:
            # A file written only to be dropped at the commit costs a write and an unlink per
            # round for nothing (large simulated networks run with retention 0).
            self._check_open()
            return
        with self._savepoint():
            self._payloads.put(digest, data)

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise StoreError(f"the store at {self._folder} is closed")

    def _one_or_none(self, sql: str, params: tuple[object, ...] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            self._check_open()
            # SQLite rows are untyped; the schema above says what each column holds.
            row: tuple[Any, ...] | None = self._conn.execute(sql, params).fetchone()
            return row

    def _execute_one(self, sql: str, params: tuple[object, ...]) -> sqlite3.Cursor:
        # A single statement is atomic by itself (SQLite undoes a failed statement), so
        # one-insert changes need no savepoint: a batch() around them still groups the commit.
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, params)

    def _one(self, sql: str, params: tuple[object, ...] = ()) -> tuple[Any, ...]:
        row = self._one_or_none(sql, params)
        assert row is not None, sql  # aggregate queries always return one row
        return row

    def _issued_receipt_count(self) -> int:
        value: int = self._one("SELECT COUNT(*) FROM issued_receipts")[0]
        return value

    def _issued_receipt_id_list(self) -> list[bytes]:
        with self._lock:
            self._check_open()
            rows = self._conn.execute("SELECT id FROM issued_receipts").fetchall()
        return [bytes(r[0]) for r in rows]

    def _check_own_tx(self, tx: Transaction, *, verified: bool = False) -> None:
        if tx.genesis_hash != self._genesis.hash:
            raise ValidationError("wrong_genesis", "transaction is of another genesis")
        if tx.creator != self._owner:
            raise ValidationError("wrong_creator", "transaction creator is not this store's owner")
        if not verified:
            tx.verify()

    def _check_sealable(self, tx: Transaction) -> None:
        row = self._one_or_none(
            "SELECT tx_id, block_height FROM own_txs WHERE seq = ?", (tx.seq,)
        )
        if row is None:
            return
        tx_id, sealed_at = row
        if sealed_at is not None:
            raise ValidationError(
                "replayed_seq", f"seq {tx.seq} is already sealed in block {sealed_at}"
            )
        if tx_id != tx.tx_id:
            raise ValidationError(
                "replayed_seq", f"seq {tx.seq} belongs to another stored own transaction"
            )

    @contextmanager
    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        # Savepoints nest, so a call inside batch() is undone alone if it fails, and the
        # outermost one is the transaction that commits. The payload store is told of each,
        # after the SQL, so its files follow the rows that list them.
        with self._lock:
            self._check_open()
            name = f"sp{self._depth}"
            self._conn.execute(f"SAVEPOINT {name}")
            self._depth += 1
            self._payloads.begin()
            try:
                yield self._conn
            except BaseException:
                self._depth -= 1
                self._conn.execute(f"ROLLBACK TO {name}")
                self._conn.execute(f"RELEASE {name}")
                self._payloads.rollback()
                raise
            self._depth -= 1
            self._conn.execute(f"RELEASE {name}")
            self._payloads.release()


class _IssuedReceiptIds(Collection[bytes]):
    """Membership, size and iteration over the issued receipt ids, each one query on the table."""

    def __init__(
        self,
        contains: Callable[[bytes], bool],
        count: Callable[[], int],
        ids: Callable[[], list[bytes]],
    ) -> None:
        self._contains = contains
        self._count = count
        self._ids = ids

    def __contains__(self, receipt_id: object) -> bool:
        return isinstance(receipt_id, bytes) and self._contains(receipt_id)

    def __len__(self) -> int:
        return self._count()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._ids())


_Stored = TypeVar("_Stored", Block, Transaction, Receipt)


def _decode_stored(kind: type[_Stored], data: bytes, what: str) -> _Stored:
    try:
        return kind.decode(data)
    except DecodeError as err:
        raise StoreError(f"stored {what} does not decode: {err}") from err


def _acquire_lock(folder: Path) -> int:
    """An exclusive flock on the store's lock file; the kernel releases it if the process dies."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        os.close(fd)
        raise StoreError(f"the store at {folder} is already open in another process") from err
    return fd


@dataclass(frozen=True)
class ChainSnapshot:
    """A chain read without taking the store's lock (for inspection while a node runs)."""

    genesis: Genesis
    owner: bytes
    blocks: tuple[Block, ...]


def read_chain(path: str | os.PathLike[str]) -> ChainSnapshot:
    """Read the genesis, owner and blocks of the store at `path`, in one read transaction."""
    _, db = locate(path)
    conn = connect(db, read_only=True)
    try:
        conn.execute("BEGIN")
        genesis = _read_genesis(conn, db)
        row = conn.execute("SELECT value FROM meta WHERE key = 'owner'").fetchone()
        rows = conn.execute("SELECT data FROM blocks ORDER BY height").fetchall()
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        raise StoreError(f"cannot read {db}: {err}") from err
    finally:
        conn.close()
    owner = row[0] if row is not None else b""
    blocks = tuple(_decode_stored(Block, data, f"block {i}") for i, (data,) in enumerate(rows))
    return ChainSnapshot(genesis, owner, blocks)


def checkpoint_turn(path: str | os.PathLike[str]) -> int | None:
    """The local round of the checkpoint in the store at `path`, read without taking the
    store's lock (to plan a resume); None when the node never wrote one."""
    _, db = locate(path)
    conn = connect(db, read_only=True)
    try:
        row = conn.execute("SELECT turn FROM checkpoint WHERE id = 0").fetchone()
    except sqlite3.Error as err:
        raise StoreError(f"cannot read {db}: {err}") from err
    finally:
        conn.close()
    return None if row is None else int(row[0])
