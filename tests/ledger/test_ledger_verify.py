"""Whole-chain verification and the `ledger` command, on clean and tampered stores."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
from pathlib import Path

import pytest
from ledger_factories import Net

from dfl_ray.ledger import Block, ChainError, ChainStore, StoreError, model_digest, verify_chain
from dfl_ray.ledger.cli import register


@pytest.fixture
def chain_path(tmp_path: Path, net: Net) -> Path:
    """A closed store with 3 blocks (2 txs x 3 receipts each) and the payloads of its txs."""
    path = tmp_path / "node"
    with ChainStore.create(path, net.genesis, net.owner.public_key) as s:
        for block in net.chain(3):
            for e in block.entries:
                s.add_own_transaction(e.tx)
                s.put_payload(e.tx.model_digest, net.vector(e.tx.seq))
            s.append_block(block)
    return path


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dfl-ray")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    result: int = args.func(args)
    return result


def _tamper_block(path: Path, height: int, offset: int) -> None:
    conn = sqlite3.connect(path / "chain.sqlite")
    (data,) = conn.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
    data = bytearray(data)
    data[offset % len(data)] ^= 0x10
    conn.execute("UPDATE blocks SET data = ? WHERE height = ?", (bytes(data), height))
    conn.commit()
    conn.close()


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
        _tamper_block(chain_path, 1, offset)
        with pytest.raises(ChainError) as err:
            verify_chain(chain_path)
        assert err.value.height == 1, (offset, err.value)
        _tamper_block(chain_path, 1, offset)  # flip back
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
    assert _cli("ledger", "verify", str(chain_path)) == 1
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


def test_cli_verify_ok(chain_path: Path, net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("ledger", "verify", str(chain_path)) == 0
    out = capsys.readouterr().out.strip()
    tip = net.chain(3)[-1].hash.hex()
    assert out == f"OK height=2 tip={tip} blocks=3 txs=6 receipts=18"


def test_cli_verify_fail(chain_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tamper_block(chain_path, 2, -1)
    assert _cli("ledger", "verify", str(chain_path)) == 1
    assert re.fullmatch(r"FAIL height=2 reason=\w+: .+", capsys.readouterr().out.strip())


def test_cli_verify_missing_or_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("ledger", "verify", str(tmp_path / "nowhere")) == 1
    assert "no chain store" in capsys.readouterr().out
    (tmp_path / "chain.sqlite").write_bytes(b"garbage" * 200)
    assert _cli("ledger", "verify", str(tmp_path)) == 1
    assert capsys.readouterr().out.startswith("FAIL")


def test_cli_show_text_and_json(chain_path: Path, net: Net,
                                capsys: pytest.CaptureFixture[str]) -> None:
    blocks = net.chain(3)
    assert _cli("ledger", "show", str(chain_path)) == 0
    text = capsys.readouterr().out
    assert text.count("\nblock ") == 3 and blocks[1].hash.hex() in text
    assert "tx seq=3 " in text and "receipts=3" in text and "endorsed by 3" in text
    assert _cli("ledger", "show", str(chain_path), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["height"] == 2 and doc["genesis"]["hash"] == net.genesis.hash.hex()
    assert [b["hash"] for b in doc["blocks"]] == [b.hash.hex() for b in blocks]
    assert [t["seq"] for t in doc["blocks"][2]["transactions"]] == [4, 5]
    assert len(doc["blocks"][0]["endorsers"]) == 3


def test_cli_show_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("ledger", "show", str(tmp_path / "nowhere")) == 1
    assert "no chain store" in capsys.readouterr().err
