"""A chain store's model payload files, named by their digest, and which of them it keeps."""

from __future__ import annotations

import itertools
import os
import sqlite3
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfl_ray.ledger.encoding import require_bytes
from dfl_ray.ledger.errors import StoreError, ValidationError
from dfl_ray.ledger.hashing import DIGEST_SIZE, byte_view, payload_digest, require_model_vector

PAYLOAD_DIR = "payloads"
# The file of a dropped payload, kept to be overwritten by the next one. Dot files are never
# payloads: nothing reads them as one, so a write torn inside one is never trusted.
SPARE_NAME = ".spare"

# The table listing the kept payloads, oldest first; part of the chain store's schema.
SCHEMA = "CREATE TABLE payloads (digest BLOB PRIMARY KEY, put_order INTEGER NOT NULL UNIQUE);\n"

PayloadData = np.ndarray | bytes | bytearray | memoryview


@dataclass
class _FileChanges:
    """Payload files created and payloads unlisted inside one open transaction level."""

    created: list[Path] = field(default_factory=list)
    dropped: set[bytes] = field(default_factory=set)


class PayloadStore:
    """Model payloads as files `<folder>/<hex digest>`, and the `payloads` table of `conn`
    listing the kept ones in put order; with `keep` set, only the newest `keep` are kept.

    Files are content-addressed and checked against their digest on every read, so they are
    not fsynced: a file torn by a power cut is detected, never trusted. Each file is written
    under another name and renamed into place, so a reader never sees half of one.

    A file cannot join a SQLite transaction, so the caller, which owns `conn` and its
    transactions, reports them: `begin()` when it opens a transaction or savepoint, then
    `rollback()` after rolling it back (the files it created are removed) or `release()` after
    releasing it (after the outermost one has committed, the files of unlisted payloads are
    removed). `put` and `prune` run only inside such a transaction. One thread at a time: the
    owner serialises its calls.
    """

    def __init__(
        self, folder: Path, conn: sqlite3.Connection, spec_id: bytes, keep: int | None
    ) -> None:
        self._folder = folder
        self._conn = conn
        self._spec_id = spec_id
        self._keep = keep
        self._changes: list[_FileChanges] = []
        self._tmp_counter = itertools.count()

    @property
    def keep(self) -> int | None:
        """How many of the newest payloads are kept: None for all, 0 for none."""
        return self._keep

    def check(self, digest: bytes, data: PayloadData, *, verified: bool = False) -> None:
        """Raise `ValidationError('digest_mismatch')` unless `data` hashes to `digest`.

        `data` is a model vector (1-D little-endian float32) or its raw bytes. `verified=True`:
        the caller has just computed `digest` from these very bytes with this network's model
        spec (a node publishing its model), so they are not hashed again.
        """
        require_bytes("digest", digest, (DIGEST_SIZE,))
        if isinstance(data, np.ndarray):
            require_model_vector(data)
        elif not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be a numpy array or bytes, got {type(data).__name__}")
        got = digest if verified else payload_digest(self._spec_id, data)
        if got != digest:
            raise ValidationError(
                "digest_mismatch", f"payload hashes to {got.hex()[:16]}.., not "
                f"{digest.hex()[:16]}.."
            )

    def get(self, digest: bytes) -> bytes | None:
        """The payload stored under `digest`, checked against it; None if not kept."""
        require_bytes("digest", digest, (DIGEST_SIZE,))
        try:
            data = self._path(digest).read_bytes()
        except FileNotFoundError:
            return None
        if payload_digest(self._spec_id, data) != digest:
            raise StoreError(f"payload file {digest.hex()} is corrupt: its digest does not match")
        return data

    def digests(self) -> list[bytes]:
        """The digests of the kept payloads, oldest first."""
        rows = self._conn.execute("SELECT digest FROM payloads ORDER BY put_order").fetchall()
        return [bytes(d) for (d,) in rows]

    def put(self, digest: bytes, data: PayloadData) -> None:
        """Write the file of a payload `check` accepted and list it as the newest; then `prune`.

        Putting a kept payload again makes it the newest.
        """
        self._write_file(digest, data)
        self._conn.execute(
            "INSERT OR REPLACE INTO payloads (digest, put_order) "
            "VALUES (?, (SELECT COALESCE(MAX(put_order), 0) + 1 FROM payloads))",
            (digest,),
        )
        if self._keep is not None:
            self.prune(self._keep)

    def prune(self, keep: int) -> None:
        """Unlist all but the newest `keep` payloads; their files go once the transaction commits.

        Removing a file only after the commit means a crash in between leaves an unlisted file,
        which is harmless (its name is still its digest); removing it first could lose a
        payload that is still listed.
        """
        changes = self._current()
        old = self._conn.execute(
            "SELECT digest FROM payloads ORDER BY put_order DESC LIMIT -1 OFFSET ?", (keep,)
        ).fetchall()
        self._conn.executemany("DELETE FROM payloads WHERE digest = ?", old)
        changes.dropped.update(bytes(d) for (d,) in old)

    # -- the owner's transactions --------------------------------------------------------

    def begin(self) -> None:
        """The owner opened a transaction (or a savepoint inside one)."""
        self._changes.append(_FileChanges())

    def rollback(self) -> None:
        """The owner rolled back its innermost open transaction: remove the files it created."""
        for path in self._changes.pop().created:
            path.unlink(missing_ok=True)

    def release(self) -> None:
        """The owner released its innermost open transaction.

        Inside another one, its changes become that one's (they are undone with it); when it
        was the outermost, it has committed, and the files of payloads it unlisted go.
        """
        changes = self._changes.pop()
        if self._changes:
            self._changes[-1].created.extend(changes.created)
            self._changes[-1].dropped |= changes.dropped
        else:
            self._remove_unlisted(changes.dropped)

    # -- files ---------------------------------------------------------------------------

    def _current(self) -> _FileChanges:
        if not self._changes:
            raise StoreError("payloads are put and pruned only inside a transaction")
        return self._changes[-1]

    def _path(self, digest: bytes) -> Path:
        return self._folder / digest.hex()

    def _remove_unlisted(self, digests: set[bytes]) -> None:
        for digest in digests:
            listed = self._conn.execute("SELECT 1 FROM payloads WHERE digest = ?", (digest,))
            if listed.fetchone() is None:
                self._discard_file(self._path(digest))

    def _discard_file(self, path: Path) -> None:
        spare = path.with_name(SPARE_NAME)
        if not spare.exists():
            # Kept for the next payload to overwrite: rewriting pages the file already has
            # costs less than freeing them here and allocating new ones for a new file.
            with suppress(FileNotFoundError):
                os.replace(path, spare)
                return
        path.unlink(missing_ok=True)

    def _write_file(self, digest: bytes, data: PayloadData) -> None:
        changes = self._current()
        final = self._path(digest)
        with suppress(FileNotFoundError):
            # Content-addressed: a file under this name already holds these bytes, unless it
            # was torn by a power cut, in which case it is rewritten below.
            existing = final.read_bytes()
            if payload_digest(self._spec_id, existing) == digest:
                return
        view = byte_view(data)
        spare = final.with_name(SPARE_NAME)
        try:
            # The spare is an unlisted dot file, which nothing reads as a payload: a write torn
            # here is never trusted, and the rename publishes the file whole.
            with open(spare, "r+b") as out:
                out.write(view)
                out.truncate()
            os.replace(spare, final)
        except FileNotFoundError:
            tmp = final.with_name(f".{final.name}.{os.getpid()}.{next(self._tmp_counter)}.tmp")
            try:
                with open(tmp, "xb") as out:
                    out.write(view)
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        changes.created.append(final)
