"""The `ledger verify` and `ledger show` commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ledger_factories import Net, ledger_cli, tamper_block


def test_cli_verify_ok(chain_path: Path, net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    assert ledger_cli("ledger", "verify", str(chain_path)) == 0
    out = capsys.readouterr().out.strip()
    tip = net.chain(3)[-1].hash.hex()
    assert out == f"OK height=2 tip={tip} blocks=3 txs=6 receipts=18"


def test_cli_verify_fail(chain_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tamper_block(chain_path, 2, -1)
    assert ledger_cli("ledger", "verify", str(chain_path)) == 1
    assert re.fullmatch(r"FAIL height=2 reason=\w+: .+", capsys.readouterr().out.strip())


def test_cli_verify_missing_or_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ledger_cli("ledger", "verify", str(tmp_path / "nowhere")) == 1
    assert "no chain store" in capsys.readouterr().out
    (tmp_path / "chain.sqlite").write_bytes(b"garbage" * 200)
    assert ledger_cli("ledger", "verify", str(tmp_path)) == 1
    assert capsys.readouterr().out.startswith("FAIL")


def test_cli_show_text_and_json(chain_path: Path, net: Net,
                                capsys: pytest.CaptureFixture[str]) -> None:
    blocks = net.chain(3)
    assert ledger_cli("ledger", "show", str(chain_path)) == 0
    text = capsys.readouterr().out
    assert text.count("\nblock ") == 3 and blocks[1].hash.hex() in text
    assert "tx seq=3 " in text and "receipts=3" in text and "endorsed by 3" in text
    assert ledger_cli("ledger", "show", str(chain_path), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["height"] == 2 and doc["genesis"]["hash"] == net.genesis.hash.hex()
    assert [b["hash"] for b in doc["blocks"]] == [b.hash.hex() for b in blocks]
    assert [t["seq"] for t in doc["blocks"][2]["transactions"]] == [4, 5]
    assert len(doc["blocks"][0]["endorsers"]) == 3


def test_cli_show_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ledger_cli("ledger", "show", str(tmp_path / "nowhere")) == 1
    assert "no chain store" in capsys.readouterr().err
