"""The shared shape of ledger objects: a domain-tagged canonical encoding, signed by one key."""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar, Self

from dfl_ray.ledger.encoding import Writer, remember
from dfl_ray.ledger.errors import DecodeError, ValidationError
from dfl_ray.ledger.hashing import digest
from dfl_ray.ledger.identity import SIGNATURE_SIZE, Identity, verify_signature

# The signature field (u32 length prefix + 64 bytes) that ends the signed encoding.
SIGNATURE_FIELD = 4 + SIGNATURE_SIZE

# Signing needs the unsigned bytes of a fully checked object; this stands in for the signature
# until it exists and never leaves `Signed._sign_new`.
_PLACEHOLDER = bytes(SIGNATURE_SIZE)


class Canonical:
    """Base of a ledger object kind: its encoding starts with the kind's own domain tag.

    A kind is a frozen dataclass that sets `TAG` (unique per kind, so bytes of one kind never
    decode or verify as another: spec section 3), `KIND` (its name in errors) and writes its
    fields in `_write_fields`. Its decoder reads the fields with `Reader(data, cls.TAG)`.
    """

    TAG: ClassVar[bytes]
    KIND: ClassVar[str]

    def _write_fields(self, w: Writer) -> Writer:
        """Write every field after the tag, in the kind's fixed order; return `w`."""
        raise NotImplementedError

    @cached_property
    def _unsigned_bytes(self) -> bytes:
        return self._write_fields(Writer(self.TAG)).getvalue()

    @classmethod
    def _from_fields(cls, fields: tuple[object, ...]) -> Self:
        """The object of decoded `fields`; a field check that fails raises `DecodeError`.

        What `decoding(cls.KIND)` does, as a plain try: every transaction and receipt decoded
        comes through here, and a try costs nothing until a check fails.
        """
        try:
            return cls(*fields)
        except (ValueError, TypeError) as err:
            raise DecodeError(f"{cls.KIND}: {err}") from err


class Signed(Canonical):
    """Base of a kind signed by one key: `signature` covers the tag and every field before it.

    The signed encoding is the unsigned bytes followed by the signature (a block appends its
    endorsements after it); `compute_id` hashes it. The kind names the field holding the
    signer's public key in `SIGNER`, builds new objects with `_sign_new` and decoded ones with
    `_decoded`, and both keep the bytes they were made from, so nothing is encoded twice.
    """

    SIGNER: ClassVar[str]
    signature: bytes

    @classmethod
    def _sign_new(cls, identity: Identity, **fields: object) -> Self:
        """A new object with `fields`, signed by `identity` over its unsigned bytes."""
        # The kinds are dataclasses, whose fields (this base has none) are their arguments.
        unsigned = cls(**fields, signature=_PLACEHOLDER)  # type: ignore[call-arg]
        signing = unsigned.signing_bytes()
        signed = cls(**fields, signature=identity.sign(signing))  # type: ignore[call-arg]
        remember(signed, _unsigned_bytes=signing)
        return signed

    @classmethod
    def _decoded(cls, fields: tuple[object, ...], signing: bytes, signed: bytes) -> Self:
        """The object of decoded `fields`, keeping `signing` and `signed`, the prefixes of its
        input that are its signing bytes and its signed encoding."""
        obj = cls._from_fields(fields)
        remember(obj, _unsigned_bytes=signing, _signed_bytes=signed)
        return obj

    @property
    def signer(self) -> bytes:
        """The public key that must have made `signature`."""
        key: bytes = getattr(self, self.SIGNER)
        return key

    def signing_bytes(self) -> bytes:
        """The canonical encoding without the signature: what the signer signs."""
        return self._unsigned_bytes

    @cached_property
    def _signed_bytes(self) -> bytes:
        return Writer.resume(self._unsigned_bytes).blob(self.signature).getvalue()

    def encode(self) -> bytes:
        return self._signed_bytes

    def compute_id(self) -> bytes:
        """BLAKE3 of the signed encoding: one id means the same fields and the same signature.

        Each kind caches it under the name the protocol gives it (`tx_id`, `id`, `hash`).
        """
        return digest(self._signed_bytes)

    def describe(self) -> str:
        """How errors name this object."""
        return self.KIND

    def has_valid_signature(self) -> bool:
        """Whether `signer` signed these fields under this kind's tag; never raises."""
        return verify_signature(self.signer, self.signature, self._unsigned_bytes)

    def verify(self) -> None:
        """Raise `ValidationError('bad_signature')` unless `signer` signed this object."""
        if not self.has_valid_signature():
            raise ValidationError(
                "bad_signature", f"{self.describe()} is not signed by its {self.SIGNER}"
            )
