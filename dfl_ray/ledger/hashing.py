"""BLAKE3 digests of ledger bytes and of model payloads, hashed in place without copies."""

from __future__ import annotations

import blake3
import numpy as np

DIGEST_SIZE = 32

# What can be hashed in place (collections.abc.Buffer arrives only in Python 3.12).
Buffer = bytes | bytearray | memoryview | np.ndarray


def digest(data: Buffer) -> bytes:
    """32-byte BLAKE3 digest of `data`.

    BLAKE3 (O'Connor, Aumasson, Neves, Wilcox-O'Hearn, "BLAKE3: one function, fast everywhere",
    2020) is the ledger's one hash (spec section 3), chosen for speed: the receive path hashes
    every 1.72 MB model once.
    """
    return blake3.blake3(byte_view(data)).digest()


def payload_digest(spec_id: bytes, data: Buffer) -> bytes:
    """BLAKE3 over `spec_id` followed by the raw bytes of `data` (any C-contiguous buffer).

    This is the digest a transaction carries for its model; hashing the two parts in sequence
    equals hashing their concatenation, without building it.
    """
    if not isinstance(spec_id, bytes) or len(spec_id) != DIGEST_SIZE:
        raise ValueError(f"spec_id must be {DIGEST_SIZE} bytes")
    hasher = blake3.blake3(spec_id)
    hasher.update(byte_view(data))
    return hasher.digest()


def model_digest(spec_id: bytes, vec: np.ndarray) -> bytes:
    """Digest of a model: `payload_digest` over the vector's raw little-endian float32 bytes.

    The vector is hashed through a memoryview, so a read-only array (a view of Ray's object
    store) works and no copy of the 1.72 MB payload is made.
    """
    require_model_vector(vec)
    return payload_digest(spec_id, vec)


def require_model_vector(vec: object) -> None:
    """`vec` must be a 1-D, C-contiguous, little-endian float32 numpy array."""
    if not isinstance(vec, np.ndarray):
        raise TypeError(f"model vector must be a numpy array, got {type(vec).__name__}")
    if vec.dtype != np.dtype("<f4") or vec.ndim != 1:
        raise ValueError(f"model vector must be 1-D little-endian float32, got {vec.dtype} "
                         f"with shape {vec.shape}")
    if not vec.flags.c_contiguous:
        raise ValueError("model vector must be C-contiguous")


def byte_view(data: Buffer) -> memoryview:
    """`data` as a flat memoryview of bytes over the same memory (no copy).

    Raises ValueError for a non-contiguous buffer rather than copying it.
    """
    # The blake3 binding accepts only byte-formatted buffers; casting a memoryview re-labels
    # the same memory (it refuses non-contiguous input instead of copying it).
    view = data.data if isinstance(data, np.ndarray) else memoryview(data)
    if not view.c_contiguous:
        raise ValueError("cannot hash a non-contiguous buffer in place")
    if view.format == "B" and view.ndim == 1:
        return view
    try:
        return view.cast("B")
    except TypeError as err:
        raise ValueError(f"cannot hash a non-contiguous buffer in place: {err}") from err
