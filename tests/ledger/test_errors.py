"""Ledger errors and their reason codes."""

from __future__ import annotations

import pytest

from dfl_ray.ledger import ValidationError
from dfl_ray.ledger.errors import REASONS, ChainError


def test_errors_carry_their_reason() -> None:
    err = ValidationError("expired", "too late")
    assert err.reason == "expired" and str(err) == "expired: too late"
    chain_err = ChainError(4, "broken_link", "x")
    assert chain_err.height == 4 and "broken_link" in str(chain_err)
    assert {"wrong_genesis", "bad_receipt", "wrong_creator", "non_finite"} <= REASONS
    with pytest.raises(ValueError, match="unknown ledger reason"):
        ValidationError("typo", "x")
