"""The ledger's exceptions and the machine-readable reason codes they carry."""

from __future__ import annotations

# Every reason a received object, a block or a stored chain can be rejected for. Callers branch
# on these codes (metrics, peer penalties), so an unknown code is a programming error.
REASONS: frozenset[str] = frozenset(
    {
        # receive path of a transaction and its payload (spec section 5, step 3)
        "wrong_genesis",
        "bad_signature",
        "expired",
        "from_future",
        "replayed_seq",
        "digest_mismatch",
        "bad_shape",
        "bad_dtype",
        "non_finite",
        # the genesis's rules: membership and ranges
        "unknown_sender",
        "bad_lifetime",
        "bad_ttl",
        "bad_score",
        "bad_hop",
        # blocks
        "bad_height",
        "broken_link",
        "bad_endorsement",
        "bad_receipt",
        "wrong_creator",
        # a stored chain read back from disk
        "decode_error",
        "hash_mismatch",
        "missing_genesis",
        "payload_mismatch",
        "missing_payload",
        "bad_checkpoint",
    }
)


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""


class DecodeError(LedgerError):
    """Bytes that are not the canonical encoding of the expected object."""


class StoreError(LedgerError):
    """A chain store that is missing, locked, closed, or does not match what the caller expects."""


def _check_reason(reason: str) -> None:
    if reason not in REASONS:
        raise ValueError(f"unknown ledger reason code {reason!r}")


class ValidationError(LedgerError):
    """An object that decodes but must be rejected; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        _check_reason(reason)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[ValidationError], tuple[str, str]]:
        # Exceptions cross process boundaries (Ray tasks); keep both fields on the way.
        return (type(self), (self.reason, self.detail))


class ChainError(LedgerError):
    """The first problem found in a stored chain.

    `height` is the block it was found in; -1 means outside the blocks (the genesis, pending
    transactions, receipts, or a payload no block refers to).
    """

    def __init__(self, height: int, reason: str, detail: str) -> None:
        _check_reason(reason)
        super().__init__(f"height {height}: {reason}: {detail}")
        self.height = height
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[ChainError], tuple[int, str, str]]:
        return (type(self), (self.height, self.reason, self.detail))
