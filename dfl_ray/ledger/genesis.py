"""The genesis record every chain of one network starts from (spec section 4)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from dfl_ray.ledger.encoding import (
    MAX_COUNT,
    MAX_U32,
    Reader,
    Writer,
    require_bytes,
    require_finite,
    require_text,
    require_uint,
)
from dfl_ray.ledger.hashing import DIGEST_SIZE, digest
from dfl_ray.ledger.identity import PUBLIC_KEY_SIZE
from dfl_ray.ledger.signed import Canonical

GENESIS_TAG = b"dfl/genesis/v2"


@dataclass(frozen=True)
class Genesis(Canonical):
    """Network id, protocol version, model layout, common initial model, protocol parameters,
    and the members: the public keys of every node of the network.

    Not signed: nodes agree on it out of band and compare `hash`, so its encoding is its
    unsigned bytes. Only members may publish, receipt and endorse: a node rejects messages
    signed by any other key, and a chain holding receipts or endorsements by non-members does
    not verify. The members are sorted, so one set of keys has one genesis.
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
    members: tuple[bytes, ...]

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
        if not isinstance(self.members, tuple):
            raise TypeError(f"members must be a tuple, got {type(self.members).__name__}")
        if not 1 <= len(self.members) <= MAX_COUNT:
            raise ValueError(f"members must list 1 to {MAX_COUNT} keys, got {len(self.members)}")
        for key in self.members:
            require_bytes("member", key, (PUBLIC_KEY_SIZE,))
        if list(self.members) != sorted(set(self.members)):
            raise ValueError("members must be sorted and distinct")

    @cached_property
    def member_set(self) -> frozenset[bytes]:
        """The members' public keys, for membership tests."""
        return frozenset(self.members)

    def is_member(self, key: object) -> bool:
        """Whether `key` is a member's public key; False for anything that is not one."""
        return isinstance(key, bytes) and key in self.member_set

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
            .blob_list(self.members)
        )

    def encode(self) -> bytes:
        return self._unsigned_bytes

    @classmethod
    def decode(cls, data: bytes) -> Genesis:
        r = Reader(data, cls.TAG)
        fields = (r.text(), r.u32(), r.blob(), r.blob(), r.u32(), r.u32(), r.u32(), r.f64(),
                  tuple(r.blob() for _ in range(r.count())))
        r.finish()
        return cls._from_fields(fields)

    @cached_property
    def hash(self) -> bytes:
        """BLAKE3 of the canonical encoding; the `prev_hash` of every chain's first block."""
        return digest(self.encode())
