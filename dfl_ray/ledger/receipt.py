"""A receiver's signed receipt for a transaction: its score of the model, when and at which hop."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from dfl_ray.ledger.encoding import (
    MAX_U32,
    FixedLayout,
    Reader,
    Writer,
    decoding,
    remember,
    require_bytes,
    require_finite,
    require_uint,
)
from dfl_ray.ledger.errors import ValidationError
from dfl_ray.ledger.hashing import DIGEST_SIZE, digest
from dfl_ray.ledger.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify_signature

RECEIPT_TAG = b"dfl/receipt/v1"

_UNSIGNED = bytes(SIGNATURE_SIZE)

# Every well-formed receipt has this one layout (175 bytes); the signature field (u32 prefix
# + 64 bytes) ends it.
_LAYOUT = FixedLayout(
    RECEIPT_TAG, (DIGEST_SIZE, PUBLIC_KEY_SIZE, "f64", "f64", "u32", SIGNATURE_SIZE)
)
_SIGNATURE_FIELD = 4 + SIGNATURE_SIZE


@dataclass(frozen=True)
class Receipt:
    """Proof that `receiver` got transaction `tx_id` and scored its model (spec section 4)."""

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
        unsigned = cls(tx_id, identity.public_key, score, received_at, hop, _UNSIGNED)
        signing = unsigned.signing_bytes()
        receipt = replace(unsigned, signature=identity.sign(signing))
        remember(receipt, _signing_bytes=signing)
        return receipt

    def signing_bytes(self) -> bytes:
        return self._signing_bytes

    @cached_property
    def _signing_bytes(self) -> bytes:
        return (
            Writer(RECEIPT_TAG)
            .blob(self.tx_id)
            .blob(self.receiver)
            .f64(self.score)
            .f64(self.received_at)
            .u32(self.hop)
            .getvalue()
        )

    def encode(self) -> bytes:
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        return Writer.resume(self.signing_bytes()).blob(self.signature).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        """The receipt `data` encodes; it keeps `data` as its encoding (no re-encoding)."""
        fields = _LAYOUT.unpack(data)
        if fields is None:
            r = Reader(data, RECEIPT_TAG)
            fields = (r.blob(), r.blob(), r.f64(), r.f64(), r.u32(), r.blob())
            r.finish()
            data = r.data
        with decoding("receipt"):
            receipt = cls(*fields)  # type: ignore[arg-type]
        remember(receipt, _encoded=data, _signing_bytes=data[:-_SIGNATURE_FIELD])
        return receipt

    @cached_property
    def id(self) -> bytes:
        """BLAKE3 of the full signed encoding."""
        return digest(self.encode())

    def verify(self) -> None:
        """Raise `ValidationError('bad_signature')` unless the receiver signed this receipt."""
        if not verify_signature(self.receiver, self.signature, self.signing_bytes()):
            raise ValidationError(
                "bad_signature", f"receipt for tx {self.tx_id.hex()[:16]}.. is not signed by "
                "its receiver"
            )
