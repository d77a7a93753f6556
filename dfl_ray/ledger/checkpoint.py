"""A node's signed checkpoint: what it needs to resume where its process died.

The chain itself says what a node has published and sealed; the checkpoint adds the local
state no block records (the model after its last aggregation, momentum, reputations, the
replay table, random generators, counters). The node signs it, so `ledger verify` can tell an
edited checkpoint from one the node wrote; the state (megabytes: a model and two more vectors
of its size) is a framed file beside the database, named by the digest the signature covers.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import blake3
import numpy as np

from dfl_ray.ledger.encoding import (
    MAX_INT,
    MAX_U32,
    Reader,
    Writer,
    require_bytes,
    require_finite,
    require_uint,
)
from dfl_ray.ledger.errors import DecodeError, ValidationError
from dfl_ray.ledger.genesis import Genesis
from dfl_ray.ledger.hashing import DIGEST_SIZE, Buffer, byte_view
from dfl_ray.ledger.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity
from dfl_ray.ledger.signed import SIGNATURE_FIELD, Signed

CHECKPOINT_TAG = b"dfl/checkpoint/v1"
CHECKPOINT_DIR = "checkpoint"
"""Folder of a store holding the checkpoint's state file(s), named by their digest."""
STATE_MAGIC = b"dfl/state/v1\n"
_STATE_DTYPES = ("float32", "float64", "int64")


@dataclass(frozen=True)
class Checkpoint(Signed):
    """`owner`'s local state after `turn` local rounds, with `published` own transactions."""

    TAG = CHECKPOINT_TAG
    KIND = "checkpoint"
    SIGNER = "owner"

    owner: bytes
    genesis_hash: bytes
    turn: int
    published: int
    state_digest: bytes
    created_at: float
    signature: bytes

    def __post_init__(self) -> None:
        require_bytes("owner", self.owner, (PUBLIC_KEY_SIZE,))
        require_bytes("genesis_hash", self.genesis_hash, (DIGEST_SIZE,))
        require_uint("turn", self.turn, MAX_U32)
        require_uint("published", self.published, MAX_INT)
        require_bytes("state_digest", self.state_digest, (DIGEST_SIZE,))
        require_finite("created_at", self.created_at)
        require_bytes("signature", self.signature, (SIGNATURE_SIZE,))

    @classmethod
    def create(cls, identity: Identity, *, genesis_hash: bytes, turn: int, published: int,
               state_digest: bytes, created_at: float) -> Checkpoint:
        return cls._sign_new(
            identity, owner=identity.public_key, genesis_hash=genesis_hash, turn=turn,
            published=published, state_digest=state_digest, created_at=created_at,
        )

    def _write_fields(self, w: Writer) -> Writer:
        return (w.blob(self.owner).blob(self.genesis_hash).u32(self.turn).u64(self.published)
                .blob(self.state_digest).f64(self.created_at))

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        r = Reader(data, cls.TAG)
        fields = (r.blob(), r.blob(), r.u32(), r.u64(), r.blob(), r.f64(), r.blob())
        r.finish()
        return cls._decoded(fields, r.data[:-SIGNATURE_FIELD], r.data)

    @cached_property
    def id(self) -> bytes:
        return self.compute_id()


def check_checkpoint(cp: Checkpoint, *, genesis: Genesis, owner: bytes, published: int,
                     verified: bool = False) -> None:
    """Raise `ValidationError` unless `cp` is `owner`'s, of `genesis`, signed, and claims no
    more own transactions than the `published` ones stored (its state is checked apart)."""
    if cp.owner != owner:
        raise ValidationError("wrong_creator", "the checkpoint is not the store owner's")
    if cp.genesis_hash != genesis.hash:
        raise ValidationError("wrong_genesis", "the checkpoint is of another genesis")
    if cp.published > published:
        raise ValidationError("bad_checkpoint", f"the checkpoint counts {cp.published} own "
                              f"transactions, the store holds {published}")
    if not verified:
        cp.verify()


def state_parts(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> list[Buffer]:
    """`meta` (JSON values) and named arrays as the pieces of one blob, in order: a JSON
    header, then the raw arrays (not copied: written and hashed piece by piece)."""
    layout = []
    chunks: list[Buffer] = []
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        if a.dtype.name not in _STATE_DTYPES:
            raise TypeError(f"state array {name} has dtype {a.dtype}, not one of {_STATE_DTYPES}")
        layout.append([name, a.dtype.name, list(a.shape)])
        chunks.append(a)
    header = json.dumps({"meta": meta, "arrays": layout}, sort_keys=True,
                        separators=(",", ":"), allow_nan=False).encode()
    return [STATE_MAGIC + struct.pack("<I", len(header)) + header, *chunks]


def parts_digest(parts: Sequence[Buffer]) -> bytes:
    """The digest of the concatenated `parts` (what `digest` gives for their join)."""
    hasher = blake3.blake3()
    for part in parts:
        hasher.update(byte_view(part))
    return hasher.digest()


def encode_state(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """`state_parts` joined into one blob."""
    return b"".join(bytes(byte_view(p)) for p in state_parts(meta, arrays))


def decode_state(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The (meta, arrays) of `encode_state`; `DecodeError` naming what is wrong otherwise."""
    if not isinstance(data, bytes) or not data.startswith(STATE_MAGIC):
        raise DecodeError("state: not a node state blob")
    at = len(STATE_MAGIC)
    if len(data) < at + 4:
        raise DecodeError("state: truncated header length")
    (size,) = struct.unpack_from("<I", data, at)
    at += 4
    try:
        header = json.loads(data[at:at + size])
        meta, layout = header["meta"], header["arrays"]
        if not isinstance(meta, dict) or not isinstance(layout, list):
            raise TypeError("meta must be an object and arrays a list")
    except (ValueError, KeyError, TypeError) as err:
        raise DecodeError(f"state: bad header: {err}") from err
    at += size
    arrays: dict[str, np.ndarray] = {}
    for item in layout:
        try:
            name, dtype, shape = item
            if dtype not in _STATE_DTYPES or not all(isinstance(s, int) and s >= 0 for s in shape):
                raise ValueError(f"dtype {dtype!r} shape {shape!r}")
            count = int(np.prod(shape, dtype=np.int64))
            nbytes = count * np.dtype(dtype).itemsize
        except (ValueError, TypeError) as err:
            raise DecodeError(f"state: bad array entry {item!r}: {err}") from err
        if at + nbytes > len(data):
            raise DecodeError(f"state: array {name} runs past the end")
        arrays[str(name)] = np.frombuffer(data, dtype=dtype, count=count, offset=at).reshape(shape)
        at += nbytes
    if at != len(data):
        raise DecodeError(f"state: {len(data) - at} bytes after the last array")
    return meta, arrays
