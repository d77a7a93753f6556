"""`verify_chain` checks every stored row: each cell of a small real store is edited once."""

from __future__ import annotations

import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from ledger_factories import NOW, Net, identity, ledger_cli, make_genesis

from dfl_ray.ledger import (
    BlockEntry,
    ChainError,
    ChainStore,
    Checkpoint,
    Identity,
    Receipt,
    digest,
    model_digest,
    verify_chain,
)
from dfl_ray.ledger.checkpoint import parts_digest, state_parts

KEEP = 3  # payloads kept; the store puts 5, so 2 are pruned and one file stays as the spare
# meta's keep_payloads and payloads.put_order are local bookkeeping with no signed counterpart:
# a one-unit change gives a value an honest store also reaches (another retention; a payload put
# again later), so no check can tell; the sweep expects exactly those edits to pass.


@dataclass(frozen=True)
class Cell:
    table: str
    rowid: int
    column: str
    value: object
    key: object  # meta's key, to name meta cells by it; None elsewhere


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sealed blocks (2 txs x 3 receipts), a late receipt for a sealed tx, a pending tx
    with 2 receipts, 2 issued receipts, 5 payloads put (3 kept), an unlisted leftover file, the
    node's checkpoint and its candidate block for the pending transaction."""
    net = Net(make_genesis(), identity(1), [identity(i) for i in range(2, 5)])
    path = tmp_path_factory.mktemp("verify_rows") / "node"
    blocks = net.chain(2)
    with ChainStore.create(path, net.genesis, net.owner.public_key, keep_payloads=KEEP) as s:
        for block in blocks:
            with s.batch():
                for e in block.entries:
                    s.add_own_transaction(e.tx)
                    s.put_payload(e.tx.model_digest, net.vector(e.tx.seq))
                    for r in e.receipts:
                        s.add_receipt(r)
                s.append_block(block)
        late = Receipt.create(identity(5), tx_id=blocks[0].entries[0].tx.tx_id, score=0.8,
                              received_at=NOW + 2.0, hop=2)
        assert s.add_receipt(late)
        pending = net.tx(4)
        s.add_own_transaction(pending)
        s.put_payload(pending.model_digest, net.vector(4))
        for r in net.receipts(pending, net.peers[:2]):
            s.add_receipt(r)
        for peer in net.peers[:2]:
            s.add_issued_receipt(net.receipts(net.tx(0, creator=peer), [net.owner])[0])
        # The node's checkpoint and the block it proposed for the pending transaction.
        state = state_parts({"turn": 5}, {"model": net.vector(5)})
        s.save_checkpoint(Checkpoint.create(net.owner, genesis_hash=net.genesis.hash, turn=5,
                                            published=5, state_digest=parts_digest(state),
                                            created_at=NOW), state)
        s.put_candidate(net.block(2, blocks[-1].hash, [BlockEntry(
            pending, tuple(r for r in s.pending_transactions()[0][1]))], endorsed=False))
    # A payload file a writer killed mid-batch left unlisted: tolerated, but checked.
    leftover = net.vector(99)
    (path / "payloads" / model_digest(net.spec_id, leftover).hex()).write_bytes(leftover.tobytes())
    # Rollback journal instead of WAL, so each edited copy is one file.
    conn = sqlite3.connect(path / "chain.sqlite")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    return path


def test_clean_chain_verifies(chain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = verify_chain(chain)
    assert (s.height, s.n_blocks, s.n_transactions, s.n_receipts) == (1, 2, 4, 12)
    assert ledger_cli("ledger", "verify", str(chain)) == 0
    assert capsys.readouterr().out.startswith(f"OK height=1 tip={s.tip_hash.hex()} ")


def test_every_cell_edit_is_reported_with_its_table_and_row(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "node"
    shutil.copytree(chain, work)
    db = work / "chain.sqlite"
    clean = (chain / "chain.sqlite").read_bytes()
    cells = _cells(db)
    assert {c.table for c in cells} == {
        "sqlite_master", "meta", "genesis", "blocks", "own_txs", "received_receipts",
        "issued_receipts", "checkpoint", "candidate", "payloads",
    }
    edited = refused = 0
    misses: list[tuple[Cell, str, str]] = []
    for cell in cells:
        for how, values in _edits(cell):
            db.write_bytes(clean)
            value = next((v for v in values if _apply(db, cell, v)), _REFUSED)
            if value is _REFUSED:
                refused += 1  # NULL in a NOT NULL column, a type the rowid cannot take
                continue
            edited += 1
            status = ledger_cli("ledger", "verify", str(work))
            out = capsys.readouterr().out
            if status != 1 or not _names_row(out, db, cell, value):
                misses.append((cell, how, out.strip()))
    schema = sum(c.table == "sqlite_master" for c in cells)
    print(f"{len(cells) - schema} cells of the tables and {schema} of sqlite_master: {edited} "
          f"edits ({refused} more refused by SQLite), {edited - len(misses)} reported, "
          f"{len(misses)} not detectable")
    # Only the one-unit changes of the bookkeeping cells pass: the retention and each put_order.
    assert sorted((c.table, c.column, c.key, how) for c, how, _ in misses) == sorted(
        [("meta", "value", "keep_payloads", "change")]
        + [("payloads", "put_order", None, "change")] * KEEP
    ), misses


def test_every_payload_file_byte_change_is_reported(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(p.name for p in (chain / "payloads").iterdir() if not p.name.startswith("."))
    assert len(files) == KEEP + 1  # the kept ones and the unlisted leftover
    for name in files:
        work = tmp_path / name
        shutil.copytree(chain, work)
        path = work / "payloads" / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(ChainError) as err:
            verify_chain(work)
        assert err.value.reason == "payload_mismatch"
        assert ledger_cli("ledger", "verify", str(work)) == 1
        assert f"payloads/{name}: does not hash to its name" in capsys.readouterr().out


def test_invalid_payload_files_that_are_not_payloads(chain: Path, tmp_path: Path) -> None:
    work = tmp_path / "node"
    shutil.copytree(chain, work)
    conn = sqlite3.connect(work / "chain.sqlite")
    (d,) = conn.execute("SELECT digest FROM payloads ORDER BY rowid").fetchone()
    conn.close()
    listed = work / "payloads" / d.hex()
    listed.write_bytes(b"")
    with pytest.raises(ChainError, match="does not hash to its name"):
        verify_chain(work)
    listed.unlink()
    with pytest.raises(ChainError, match=r"payloads row 0 \(rowid \d\): lists payload .* no file"):
        verify_chain(work)
    listed.mkdir()
    with pytest.raises(ChainError, match="no file"):
        verify_chain(work)
    listed.rmdir()
    shutil.copy(chain / "payloads" / d.hex(), listed)
    verify_chain(work)
    (work / "payloads" / ("ab" * 32)).mkdir()  # unlisted, named like a payload
    with pytest.raises(ChainError, match="not a file"):
        verify_chain(work)
    (work / "payloads" / ("ab" * 32)).rmdir()
    (work / "payloads" / "notes.txt").write_text("hi")
    with pytest.raises(ChainError, match="not named by a payload digest"):
        verify_chain(work)


def test_invalid_byte_changed_in_an_index_is_found_by_the_integrity_check(
    chain: Path, tmp_path: Path
) -> None:
    work = tmp_path / "node"
    shutil.copytree(chain, work)
    db = work / "chain.sqlite"
    conn = sqlite3.connect(db)
    (receipt_id,) = conn.execute("SELECT id FROM issued_receipts ORDER BY rowid").fetchone()
    conn.close()
    raw = bytearray(db.read_bytes())
    table_at = raw.find(receipt_id)
    index_at = raw.find(receipt_id, table_at + 1)
    assert table_at >= 0 and index_at >= 0  # the id sits in its row and in the primary key index
    for at in (table_at, index_at):
        patched = bytearray(raw)
        patched[at + 31] ^= 0x01
        db.write_bytes(bytes(patched))
        assert ledger_cli("ledger", "verify", str(work)) == 1
    with pytest.raises(ChainError, match="integrity check"):
        verify_chain(work)


@pytest.mark.parametrize(
    ("table", "rowid"),
    [
        ("own_txs", 5),  # the pending transaction
        ("received_receipts", 1),  # a sealed receipt, which then is no longer the block's
        ("received_receipts", 13),  # the late receipt, never sealed
        ("issued_receipts", 2),
    ],
)
def test_invalid_rehashed_record_fails_its_signature(
    chain: Path, tmp_path: Path, table: str, rowid: int
) -> None:
    """Two cells changed together: the signed bytes and the id recorded for them."""
    work = tmp_path / "node"
    shutil.copytree(chain, work)
    id_column = "tx_id" if table == "own_txs" else "id"
    conn = sqlite3.connect(work / "chain.sqlite")
    (data,) = conn.execute(f"SELECT data FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
    forged = data[:-1] + bytes([data[-1] ^ 0x01])  # a signature byte
    conn.execute(f"UPDATE {table} SET data = ?, {id_column} = ? WHERE rowid = ?",
                 (forged, digest(forged), rowid))
    conn.commit()
    conn.close()
    with pytest.raises(ChainError) as err:
        verify_chain(work)
    assert err.value.reason == "bad_signature"
    assert err.value.detail.startswith(f"{table} row {rowid - 1} (rowid {rowid}): ")


def _outsider_rows(net: Net) -> dict[str, tuple[str, tuple[object, ...], str, str]]:
    """A well-signed row each check must refuse: (table, cells, reason, what the error says)."""
    pending_id = net.tx(4).tx_id
    stranger_tx = net.tx(7, creator=net.peers[0])
    def receipt(who: Identity, tx_id: bytes) -> Receipt:
        return Receipt.create(who, tx_id=tx_id, score=0.5, received_at=NOW, hop=1)
    by_owner = receipt(net.owner, pending_id)
    by_member = receipt(identity(6), pending_id)
    by_outsider = receipt(identity(9), pending_id)
    not_own = receipt(identity(6), stranger_tx.tx_id)
    tx = net.tx(9, creator=identity(6))
    def received(r: Receipt) -> tuple[object, ...]:
        return (r.id, r.tx_id, r.receiver, r.encode())
    return {
        "tx_by_another": ("own_txs", (tx.tx_id, tx.seq, None, tx.encode()), "wrong_creator",
                          "pending transaction is not signed by the store's owner"),
        "issued_by_another": ("issued_receipts", (by_member.id, by_member.tx_id,
                                                  by_member.encode()),
                              "wrong_creator", "issued receipt is not signed by the store's owner"),
        "received_from_owner": ("received_receipts", received(by_owner), "bad_receipt",
                                "a receipt by the owner for its own transaction"),
        "received_from_outsider": ("received_receipts", received(by_outsider), "unknown_sender",
                                   "not a member"),
        "received_for_another_tx": ("received_receipts", received(not_own), "bad_receipt",
                                    "which is not an own transaction"),
    }


@pytest.mark.parametrize(
    "case", ["tx_by_another", "issued_by_another", "received_from_owner",
             "received_from_outsider", "received_for_another_tx"]
)
def test_invalid_row_signed_by_the_wrong_key(chain: Path, tmp_path: Path, case: str) -> None:
    net = Net(make_genesis(), identity(1), [identity(i) for i in range(2, 5)])
    table, cells, reason, says = _outsider_rows(net)[case]
    work = tmp_path / "node"
    shutil.copytree(chain, work)
    conn = sqlite3.connect(work / "chain.sqlite")
    cur = conn.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(cells))})", cells)
    rowid = cur.lastrowid
    (index,) = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE rowid < ?", (rowid,)).fetchone()
    conn.commit()
    conn.close()
    with pytest.raises(ChainError) as err:
        verify_chain(work)
    assert err.value.reason == reason
    assert err.value.detail.startswith(f"{table} row {index} (rowid {rowid}): ")
    assert says in err.value.detail


# -- the sweep's helpers -------------------------------------------------------------------

_REFUSED = object()


def _cells(db: Path) -> list[Cell]:
    """Every cell of every table, sqlite_master included, in rowid order."""
    conn = sqlite3.connect(db)
    try:
        tables = ["sqlite_master"] + [t for (t,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
        cells = []
        for table in tables:
            columns = [c[1] for c in conn.execute(f"PRAGMA table_info({table})")]
            for rowid, *values in conn.execute(
                f"SELECT rowid, {', '.join(columns)} FROM {table} ORDER BY rowid"
            ):
                key = values[0] if table == "meta" else None
                cells.extend(Cell(table, rowid, c, v, key) for c, v in zip(columns, values,
                                                                           strict=True))
        return cells
    finally:
        conn.close()


def _edits(cell: Cell) -> list[tuple[str, list[object]]]:
    """(kind, candidate values): a one-unit change (the next candidate if SQLite refuses the
    first as a duplicate), NULL, and a value of another type."""
    v = cell.value
    if isinstance(v, bytes):
        change: list[object] = [_flip(v, len(v) // 2), _flip(v, 0)]
        other: object = v.hex()
    elif isinstance(v, int):
        change, other = [v + 1, v - 1, v + 1000], f"x{v}"
    elif isinstance(v, str):
        change, other = [_change_char(v, len(v) // 2), _change_char(v, 0)], v.encode()
    else:
        change, other = [0], b"\x00"
    edits = [("change", change), ("retype", [other])]
    if v is not None:
        edits.append(("null", [None]))
    return edits


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def _change_char(text: str, at: int) -> str:
    return text[:at] + chr(ord(text[at]) ^ 0x01) + text[at + 1:]


def _apply(db: Path, cell: Cell, value: object) -> bool:
    """Set one cell as a byte patch could; False if SQLite refuses or the cell is unchanged."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("PRAGMA writable_schema = ON")
        before = _dump(conn, cell.table)
        try:
            conn.execute(f"UPDATE {cell.table} SET {cell.column} = ? WHERE rowid = ?",
                         (value, cell.rowid))
        except sqlite3.DatabaseError:
            return False
        return _dump(conn, cell.table) != before
    finally:
        conn.close()


def _dump(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    rows = conn.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid").fetchall()
    return [tuple((type(v).__name__, v) for v in row) for row in rows]


def _names_row(out: str, db: Path, cell: Cell, value: object) -> bool:
    """Whether `out` reports the edited row: its table, place in rowid order and rowid."""
    if cell.table == "sqlite_master":
        # An edited schema may leave no table to read; SQLite refuses it or the check names it.
        return out.startswith("FAIL ") and (
            "sqlite_master row" in out or "cannot read" in out or "integrity check" in out
        )
    rowid = value if cell.column in _ROWID_ALIASES.get(cell.table, ()) else cell.rowid
    conn = sqlite3.connect(db)
    try:
        rowids = [r for (r,) in conn.execute(f"SELECT rowid FROM {cell.table} ORDER BY rowid")]
    finally:
        conn.close()
    where = f"{cell.table} row {rowids.index(rowid)} (rowid {rowid})"
    return re.match(r"FAIL height=-?\d+ reason=\w+: ", out) is not None and where in out


_ROWID_ALIASES = {"genesis": ("id",), "blocks": ("height",), "checkpoint": ("id",),
                  "candidate": ("id",)}


def test_a_changed_or_missing_checkpoint_state_file_is_reported(chain: Path, tmp_path: Path) -> None:
    work = tmp_path / "node"
    shutil.copytree(chain, work)
    (state,) = (work / "checkpoint").iterdir()
    data = bytearray(state.read_bytes())
    data[-1] ^= 0x01
    state.write_bytes(bytes(data))
    with pytest.raises(ChainError, match="does not hash to its name") as err:
        verify_chain(work)
    assert err.value.reason == "bad_checkpoint"
    state.unlink()
    with pytest.raises(ChainError, match=r"checkpoint row 0 \(rowid 0\): names state .* no file"):
        verify_chain(work)
