"""The genesis record every chain of one network starts from (spec section 4)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from dfl_ray.ledger.encoding import (
    MAX_U32,
    Reader,
    Writer,
    require_bytes,
    require_finite,
    require_text,
    require_uint,
)
from dfl_ray.ledger.hashing import DIGEST_SIZE, digest
from dfl_ray.ledger.signed import Canonical

GENESIS_TAG = b"dfl/genesis/v1"


@dataclass(frozen=True)
class Genesis(Canonical):
    """Network id, protocol version, model layout, common initial model and protocol parameters.

    Not signed: nodes agree on it out of band and compare `hash`, so its encoding is its
    unsigned bytes.
    """

    TAG = GENESIS_TAG
    KIND = "genesis"

    network_id: str
    protocol_version: int
    model_spec_id: bytes
    initial_model_digest: bytes
    ttl: int
    buffer_size: int
    block_size: int
    expiry_s: float

    def __post_init__(self) -> None:
        require_text("network_id", self.network_id)
        require_uint("protocol_version", self.protocol_version, MAX_U32)
        require_bytes("model_spec_id", self.model_spec_id, (DIGEST_SIZE,))
        require_bytes("initial_model_digest", self.initial_model_digest, (DIGEST_SIZE,))
        require_uint("ttl", self.ttl, MAX_U32)
        require_uint("buffer_size", self.buffer_size, MAX_U32, minimum=1)
        require_uint("block_size", self.block_size, MAX_U32, minimum=1)
        require_finite("expiry_s", self.expiry_s)
        if self.expiry_s <= 0:
            raise ValueError(f"expiry_s must be positive, got {self.expiry_s}")

    def _write_fields(self, w: Writer) -> Writer:
        return (
            w.text(self.network_id)
            .u32(self.protocol_version)
            .blob(self.model_spec_id)
            .blob(self.initial_model_digest)
            .u32(self.ttl)
            .u32(self.buffer_size)
            .u32(self.block_size)
            .f64(self.expiry_s)
        )

    def encode(self) -> bytes:
        return self._unsigned_bytes

    @classmethod
    def decode(cls, data: bytes) -> Genesis:
        r = Reader(data, cls.TAG)
        fields = (r.text(), r.u32(), r.blob(), r.blob(), r.u32(), r.u32(), r.u32(), r.f64())
        r.finish()
        return cls._from_fields(fields)

    @cached_property
    def hash(self) -> bytes:
        """BLAKE3 of the canonical encoding; the `prev_hash` of every chain's first block."""
        return digest(self.encode())
