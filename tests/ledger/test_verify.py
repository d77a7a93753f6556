"""Whole-chain verification, on clean and tampered stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ledger_factories import Net, ledger_cli, tamper_block

from dfl_ray.ledger import Block, ChainError, ChainStore, StoreError, model_digest, verify_chain


def test_verify_chain_summary(chain_path: Path, net: Net) -> None:
    s = verify_chain(chain_path)
    assert (s.height, s.n_blocks, s.n_transactions, s.n_receipts) == (2, 3, 6, 18)
    assert s.tip_hash == net.chain(3)[-1].hash
    assert verify_chain(chain_path / "chain.sqlite") == s


def test_verify_an_empty_chain_while_the_store_is_open(store: ChainStore, net: Net) -> None:
    s = verify_chain(store.path)
    assert s.height == -1 and s.n_blocks == 0 and s.tip_hash == net.genesis.hash


def test_invalid_block_bytes_changed_inside_sqlite(chain_path: Path) -> None:
    for offset in (20, 300, 1000, 2500, -70, -1):
        tamper_block(chain_path, 1, offset)
        with pytest.raises(ChainError) as err:
            verify_chain(chain_path)
        assert err.value.height == 1, (offset, err.value)
        tamper_block(chain_path, 1, offset)  # flip back
        verify_chain(chain_path)


def test_invalid_recorded_block_hash(chain_path: Path) -> None:
    conn = sqlite3.connect(chain_path / "chain.sqlite")
    conn.execute("UPDATE blocks SET hash = ? WHERE height = 2", (b"\0" * 32,))
    conn.commit()
    conn.close()
    with pytest.raises(ChainError) as err:
        verify_chain(chain_path)
    assert (err.value.height, err.value.reason) == (2, "hash_mismatch")


def test_invalid_missing_block(chain_path: Path) -> None:
    conn = sqlite3.connect(chain_path / "chain.sqlite")
    conn.execute("DELETE FROM blocks WHERE height = 1")
    conn.commit()
    conn.close()
    with pytest.raises(ChainError) as err:
        verify_chain(chain_path)
    assert (err.value.height, err.value.reason) == (1, "bad_height")


def test_invalid_byte_patched_in_the_database_file(chain_path: Path, net: Net) -> None:
    db = chain_path / "chain.sqlite"
    raw = bytearray(db.read_bytes())
    receipt_sig = net.chain(3)[2].entries[1].receipts[2].signature
    pos = raw.find(receipt_sig)
    assert pos >= 0
    raw[pos + 5] ^= 0x01
    db.write_bytes(bytes(raw))
    with pytest.raises(ChainError) as err:
        verify_chain(chain_path)
    # The receipt is covered by the block hash recorded beside the bytes.
    assert (err.value.height, err.value.reason) == (2, "hash_mismatch")
    assert ledger_cli("ledger", "verify", str(chain_path)) == 1
    # Re-recording the hash of the changed bytes does not help: the creator signed the receipts.
    conn = sqlite3.connect(db)
    (data,) = conn.execute("SELECT data FROM blocks WHERE height = 2").fetchone()
    conn.execute("UPDATE blocks SET hash = ? WHERE height = 2", (Block.decode(data).hash,))
    conn.commit()
    conn.close()
    with pytest.raises(ChainError) as err:
        verify_chain(chain_path)
    assert (err.value.height, err.value.reason) == (2, "bad_signature")


def test_invalid_tampered_payload_file(chain_path: Path, net: Net) -> None:
    tx = net.chain(3)[1].entries[0].tx
    path = chain_path / "payloads" / tx.model_digest.hex()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChainError) as err:
        verify_chain(chain_path)
    assert (err.value.height, err.value.reason) == (1, "payload_mismatch")


def test_invalid_missing_payload_file(chain_path: Path, net: Net) -> None:
    d = model_digest(net.spec_id, net.vector(0))
    (chain_path / "payloads" / d.hex()).unlink()
    with pytest.raises(ChainError) as err:
        verify_chain(chain_path)
    assert (err.value.height, err.value.reason) == (0, "missing_payload")


def test_invalid_tampered_pending_record(chain_path: Path, net: Net) -> None:
    with ChainStore.open(chain_path) as s:
        s.add_own_transaction(net.tx(6))
    conn = sqlite3.connect(chain_path / "chain.sqlite")
    forged = net.tx(6, vec_seed=99).encode()
    conn.execute("UPDATE own_txs SET data = ? WHERE seq = 6", (forged,))
    conn.commit()
    conn.close()
    with pytest.raises(ChainError) as err:
        verify_chain(chain_path)
    assert (err.value.height, err.value.reason) == (-1, "hash_mismatch")


def test_invalid_missing_or_corrupt_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no chain store"):
        verify_chain(tmp_path / "nowhere")
    (tmp_path / "chain.sqlite").write_bytes(b"garbage" * 200)
    with pytest.raises(StoreError):
        verify_chain(tmp_path)
