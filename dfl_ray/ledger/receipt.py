"""A receiver's signed receipt for a transaction: its score of the model, when and at which hop."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from dfl_ray.ledger.encoding import (
    MAX_U32,
    FixedLayout,
    Reader,
    Writer,
    require_bytes,
    require_finite,
    require_uint,
)
from dfl_ray.ledger.errors import ValidationError
from dfl_ray.ledger.genesis import Genesis
from dfl_ray.ledger.hashing import DIGEST_SIZE
from dfl_ray.ledger.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity
from dfl_ray.ledger.signed import SIGNATURE_FIELD, Signed

RECEIPT_TAG = b"dfl/receipt/v1"

# Every well-formed receipt has this one layout (175 bytes).
_LAYOUT = FixedLayout(
    RECEIPT_TAG, (DIGEST_SIZE, PUBLIC_KEY_SIZE, "f64", "f64", "u32", SIGNATURE_SIZE)
)


@dataclass(frozen=True)
class Receipt(Signed):
    """Proof that `receiver` got transaction `tx_id` and scored its model (spec section 4)."""

    TAG = RECEIPT_TAG
    KIND = "receipt"
    SIGNER = "receiver"

    tx_id: bytes
    receiver: bytes
    score: float
    received_at: float
    hop: int
    signature: bytes

    def __post_init__(self) -> None:
        require_bytes("tx_id", self.tx_id, (DIGEST_SIZE,))
        require_bytes("receiver", self.receiver, (PUBLIC_KEY_SIZE,))
        require_finite("score", self.score)
        require_finite("received_at", self.received_at)
        require_uint("hop", self.hop, MAX_U32)
        require_bytes("signature", self.signature, (SIGNATURE_SIZE,))

    @classmethod
    def create(
        cls, identity: Identity, *, tx_id: bytes, score: float, received_at: float, hop: int
    ) -> Receipt:
        """A receipt issued and signed by `identity`."""
        return cls._sign_new(
            identity,
            tx_id=tx_id,
            receiver=identity.public_key,
            score=score,
            received_at=received_at,
            hop=hop,
        )

    def _write_fields(self, w: Writer) -> Writer:
        return (
            w.blob(self.tx_id)
            .blob(self.receiver)
            .f64(self.score)
            .f64(self.received_at)
            .u32(self.hop)
        )

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        """The receipt `data` encodes; it keeps `data` as its encoding (no re-encoding)."""
        fields = _LAYOUT.unpack(data)
        if fields is None:
            r = Reader(data, cls.TAG)
            fields = (r.blob(), r.blob(), r.f64(), r.f64(), r.u32(), r.blob())
            r.finish()
            data = r.data
        return cls._decoded(fields, data[:-SIGNATURE_FIELD], data)

    @cached_property
    def id(self) -> bytes:
        """BLAKE3 of the full signed encoding."""
        return self.compute_id()

    def describe(self) -> str:
        return f"receipt for tx {self.tx_id.hex()[:16]}.."


def check_receipt_fields(receipt: Receipt, genesis: Genesis) -> None:
    """What the genesis requires of every receipt, wherever it is read: a member's, with a
    score in [0, 1] (an accuracy) and a hop within the genesis TTL."""
    if not genesis.is_member(receipt.receiver):
        raise ValidationError(
            "unknown_sender", f"{receipt.describe()} is by {receipt.receiver.hex()[:16]}.., "
            "not a member of the network"
        )
    if not 0.0 <= receipt.score <= 1.0:
        raise ValidationError("bad_score", f"{receipt.describe()} has score {receipt.score}, "
                              "outside [0, 1]")
    if receipt.hop > genesis.ttl:
        raise ValidationError("bad_hop", f"{receipt.describe()} has hop {receipt.hop}, above the "
                              f"genesis ttl {genesis.ttl}")


def check_receipt(receipt: Receipt, *, genesis: Genesis, now: float, max_clock_skew: float,
                  verified: bool = False) -> None:
    """Receive checks on a receipt, in order; raises the first failure, changes nothing.

    The genesis's field rules (`check_receipt_fields`), a `received_at` no later than `now`
    plus the allowed clock skew (`from_future`), then the receiver's signature unless
    `verified` (the caller checked it, or signed the receipt itself).
    """
    check_receipt_fields(receipt, genesis)
    if receipt.received_at > now + max_clock_skew:
        raise ValidationError(
            "from_future", f"{receipt.describe()} received at {receipt.received_at:.3f}, now is "
            f"{now:.3f} (allowed skew {max_clock_skew} s)"
        )
    if not verified:
        receipt.verify()
