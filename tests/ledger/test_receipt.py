"""Receipts: signing, round trip, a forged field."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ledger_factories import Net

from dfl_ray.ledger import Receipt, ValidationError


def test_receipt_sign_verify_and_round_trip(net: Net) -> None:
    tx = net.tx(1)
    receipt = Receipt.create(net.peers[0], tx_id=tx.tx_id, score=0.75, received_at=5.0, hop=2)
    receipt.verify()
    assert Receipt.decode(receipt.encode()) == receipt
    assert receipt.receiver == net.peers[0].public_key and len(receipt.id) == 32


def test_invalid_receipt_signature(net: Net) -> None:
    receipt = net.receipts(net.tx(1))[0]
    with pytest.raises(ValidationError) as err:
        replace(receipt, score=0.1).verify()
    assert err.value.reason == "bad_signature"
