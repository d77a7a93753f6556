"""A signed model-update transaction and the receive-side checks on it and on its payload."""

from __future__ import annotations

from collections.abc import MutableSet
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from dfl_ray.ledger.encoding import (
    MAX_INT,
    MAX_U32,
    FixedLayout,
    Reader,
    Writer,
    require_bytes,
    require_finite,
    require_uint,
)
from dfl_ray.ledger.errors import DecodeError, ValidationError
from dfl_ray.ledger.genesis import Genesis
from dfl_ray.ledger.hashing import DIGEST_SIZE, digest, payload_digest
from dfl_ray.ledger.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity
from dfl_ray.ledger.signed import SIGNATURE_FIELD, Signed

TX_TAG = b"dfl/tx/v1"

# The two layouts of a well-formed transaction: with and without a base digest.
_LAYOUTS = tuple(
    FixedLayout(TX_TAG, (DIGEST_SIZE, PUBLIC_KEY_SIZE, "u64", "f64", "f64", "u32", DIGEST_SIZE,
                         base, "f64", "u64", SIGNATURE_SIZE))
    for base in (DIGEST_SIZE, 0)
)


@dataclass(frozen=True)
class Transaction(Signed):
    """A model update published and signed by `creator` (spec section 4, after Tian, Guo,
    Zhang, Al-Ars, "DFL: High-Performance Blockchain-Based Federated Learning", arXiv
    2110.15457); the model itself travels separately and is checked against `model_digest`.
    """

    TAG = TX_TAG
    KIND = "transaction"
    SIGNER = "creator"

    genesis_hash: bytes
    creator: bytes
    seq: int
    created_at: float
    expires_at: float
    ttl: int
    model_digest: bytes
    base_digest: bytes
    self_score: float
    n_samples: int
    signature: bytes

    def __post_init__(self) -> None:
        require_bytes("genesis_hash", self.genesis_hash, (DIGEST_SIZE,))
        require_bytes("creator", self.creator, (PUBLIC_KEY_SIZE,))
        require_uint("seq", self.seq, MAX_INT)
        require_finite("created_at", self.created_at)
        require_finite("expires_at", self.expires_at)
        require_uint("ttl", self.ttl, MAX_U32)
        require_bytes("model_digest", self.model_digest, (DIGEST_SIZE,))
        require_bytes("base_digest", self.base_digest, (0, DIGEST_SIZE))
        require_finite("self_score", self.self_score)
        require_uint("n_samples", self.n_samples, MAX_INT)
        require_bytes("signature", self.signature, (SIGNATURE_SIZE,))

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        genesis_hash: bytes,
        seq: int,
        created_at: float,
        expires_at: float,
        ttl: int,
        model_digest: bytes,
        base_digest: bytes = b"",
        self_score: float,
        n_samples: int,
    ) -> Transaction:
        """A transaction by `identity`, signed over its canonical encoding."""
        return cls._sign_new(
            identity,
            genesis_hash=genesis_hash,
            creator=identity.public_key,
            seq=seq,
            created_at=created_at,
            expires_at=expires_at,
            ttl=ttl,
            model_digest=model_digest,
            base_digest=base_digest,
            self_score=self_score,
            n_samples=n_samples,
        )

    def _write_fields(self, w: Writer) -> Writer:
        return (
            w.blob(self.genesis_hash)
            .blob(self.creator)
            .u64(self.seq)
            .f64(self.created_at)
            .f64(self.expires_at)
            .u32(self.ttl)
            .blob(self.model_digest)
            .blob(self.base_digest)
            .f64(self.self_score)
            .u64(self.n_samples)
        )

    @classmethod
    def decode(cls, data: bytes) -> Transaction:
        """The transaction `data` encodes; it keeps `data` as its encoding (no re-encoding)."""
        fields = _LAYOUTS[0].unpack(data) or _LAYOUTS[1].unpack(data)
        if fields is None:
            r = Reader(data, cls.TAG)
            fields = (
                r.blob(), r.blob(), r.u64(), r.f64(), r.f64(), r.u32(),
                r.blob(), r.blob(), r.f64(), r.u64(), r.blob(),
            )  # fmt: skip
            r.finish()
            data = r.data
        return cls._decoded(fields, data[:-SIGNATURE_FIELD], data)

    @staticmethod
    def id_of(data: bytes) -> bytes:
        """The `tx_id` of the transaction `data` encodes, computed without decoding it.

        Encodings are canonical, so whenever `data` decodes this equals `decode(data).tx_id`;
        gossip drops a duplicate on it before paying for a decode. Raises `DecodeError` only
        for input that `decode` would refuse whatever its content: not a contiguous buffer.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"expected bytes to decode, got {type(data).__name__}")
        try:
            return digest(data)
        except ValueError as err:
            raise DecodeError(f"input is not a contiguous byte buffer: {err}") from err

    @cached_property
    def tx_id(self) -> bytes:
        """BLAKE3 of the full signed encoding; the id gossip deduplicates on."""
        return self.compute_id()

    def describe(self) -> str:
        return f"transaction seq {self.seq}"


def check_transaction(
    tx: Transaction,
    *,
    genesis: Genesis,
    now: float,
    last_seq: int | None,
    max_clock_skew: float = 5.0,
    signed_ids: MutableSet[bytes] | None = None,
) -> None:
    """Receive checks on a transaction header, in order; raises the first failure, changes nothing.

    Order: wrong genesis; a creator that is not a member (`unknown_sender`); a lifetime outside
    (0, genesis expiry] (`bad_lifetime`) or a TTL above the genesis TTL (`bad_ttl`); bad
    signature; expired (`now > expires_at`) or from the future (`created_at > now +
    max_clock_skew`); replayed seq (`seq <= last_seq`, the highest seq accepted from this
    creator so far, None if none). It follows the DFL receive path (spec section 5, step 3):
    cheap header checks first, so a bad transaction costs as little as possible, and the
    payload only after them (`check_payload`).

    `signed_ids`, when given, holds ids of transactions whose signature already verified: the
    signature check is skipped for them and a newly verified id is added. Sound because
    `tx_id` is the hash of the whole signed encoding, so one id means the same bytes and the
    same verdict; nodes that share a process share one set and verify each signature once.
    """
    require_finite("now", now)
    if last_seq is not None:
        require_uint("last_seq", last_seq, MAX_INT)
    require_finite("max_clock_skew", max_clock_skew)
    if max_clock_skew < 0:
        raise ValueError(f"max_clock_skew must be >= 0, got {max_clock_skew}")
    if tx.genesis_hash != genesis.hash:
        raise ValidationError(
            "wrong_genesis", f"transaction genesis {tx.genesis_hash.hex()[:16]}.. is not "
            f"{genesis.hash.hex()[:16]}.."
        )
    if not genesis.is_member(tx.creator):
        raise ValidationError(
            "unknown_sender", f"creator {tx.creator.hex()[:16]}.. is not a member of the network"
        )
    check_lifetime(tx, genesis)
    if signed_ids is None or tx.tx_id not in signed_ids:
        tx.verify()
        if signed_ids is not None:
            signed_ids.add(tx.tx_id)
    if now > tx.expires_at:
        raise ValidationError(
            "expired", f"transaction expired at {tx.expires_at:.3f}, now is {now:.3f}"
        )
    if tx.created_at > now + max_clock_skew:
        raise ValidationError(
            "from_future", f"transaction created at {tx.created_at:.3f}, now is {now:.3f} "
            f"(allowed skew {max_clock_skew} s)"
        )
    if last_seq is not None and tx.seq <= last_seq:
        raise ValidationError(
            "replayed_seq", f"seq {tx.seq} is not above the last seen seq {last_seq}"
        )


def check_lifetime(tx: Transaction, genesis: Genesis) -> None:
    """The genesis bounds every transaction: 0 < expires_at - created_at <= expiry_s and
    ttl <= the genesis TTL, so no sender can make its model live or travel longer."""
    lifetime = tx.expires_at - tx.created_at
    if not 0.0 < lifetime <= genesis.expiry_s:
        raise ValidationError(
            "bad_lifetime", f"transaction lives {lifetime:.3f} s; the genesis allows (0, "
            f"{genesis.expiry_s}]"
        )
    if tx.ttl > genesis.ttl:
        raise ValidationError("bad_ttl", f"transaction ttl {tx.ttl} exceeds the genesis ttl "
                              f"{genesis.ttl}")


def check_payload(
    tx: Transaction,
    *,
    spec_id: bytes,
    expected_size: int,
    vec: np.ndarray,
    known_digest: bytes | None = None,
) -> None:
    """Receive checks on the model that arrived for `tx`, in order; changes nothing.

    Order: digest mismatch (the raw bytes of whatever array arrived, hashed in place), then
    shape and dtype (1-D little-endian float32 of `expected_size`, C-contiguous), then
    non-finite values. Something that is not a numpy array of plain numbers has no raw bytes
    to hash and fails as `bad_dtype` straight away.

    `known_digest`: `payload_digest(spec_id, vec)` as the caller has just computed it from
    these very, read-only bytes (a node publishing its model); it is compared with the
    transaction's instead of hashing 1.7 MB again, and every other check still runs.
    """
    require_bytes("spec_id", spec_id, (DIGEST_SIZE,))
    require_uint("expected_size", expected_size, MAX_INT)
    if known_digest is not None:
        require_bytes("known_digest", known_digest, (DIGEST_SIZE,))
    if not isinstance(vec, np.ndarray) or vec.dtype.hasobject:
        kind = type(vec).__name__ if not isinstance(vec, np.ndarray) else f"array of {vec.dtype}"
        raise ValidationError("bad_dtype", f"payload is a {kind}, not a numeric numpy array")
    # A strided view has no contiguous bytes to hash in place; its C-order copy is what any
    # consumer would read, so hash that (this never happens for object-store arrays).
    data = vec if vec.flags.c_contiguous else np.ascontiguousarray(vec)
    try:
        got = known_digest if known_digest is not None else payload_digest(spec_id, data)
    except (ValueError, TypeError, BufferError) as err:
        # Some dtypes (datetime64, ...) cannot be exported as a buffer at all.
        raise ValidationError("bad_dtype", f"payload of {vec.dtype} has no raw bytes") from err
    if got != tx.model_digest:
        raise ValidationError(
            "digest_mismatch", f"payload digest {got.hex()[:16]}.. does not match the "
            f"transaction's {tx.model_digest.hex()[:16]}.."
        )
    if vec.ndim != 1 or vec.shape[0] != expected_size or not vec.flags.c_contiguous:
        raise ValidationError(
            "bad_shape", f"payload has shape {vec.shape} (contiguous: "
            f"{vec.flags.c_contiguous}), expected contiguous ({expected_size},)"
        )
    if vec.dtype != np.dtype("<f4"):
        raise ValidationError(
            "bad_dtype", f"payload dtype is {vec.dtype.str}, expected <f4 (little-endian float32)"
        )
    if not is_finite(vec):
        raise ValidationError("non_finite", "payload contains NaN or infinite values")


def is_finite(vec: np.ndarray) -> bool:
    """Whether every value of a float array is finite, without a temporary array.

    Exact: a NaN anywhere makes the minimum and the maximum NaN (numpy's reductions propagate
    it), +inf is the maximum and -inf the minimum wherever they sit. Two reductions read the
    vector twice, the second time from cache, and allocate nothing, where `isfinite(vec).all()`
    writes a bool array as large as the vector's element count (`benchmarks/ledger_bench.py`
    times both).
    """
    if vec.size == 0:
        return True
    return bool(np.isfinite(vec.min())) and bool(np.isfinite(vec.max()))
