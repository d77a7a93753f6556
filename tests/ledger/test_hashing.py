"""BLAKE3 digests: definitions, read-only arrays, no hidden copies."""

from __future__ import annotations

import tracemalloc

import blake3
import numpy as np
import pytest

from dfl_ray.ledger import digest, model_digest, payload_digest

SPEC = blake3.blake3(b"spec").digest()


def test_digest_is_32_byte_blake3() -> None:
    assert digest(b"abc") == blake3.blake3(b"abc").digest()
    assert len(digest(b"")) == 32


def test_model_digest_is_blake3_of_spec_id_then_raw_bytes() -> None:
    vec = np.arange(1000, dtype=np.float32)
    assert model_digest(SPEC, vec) == blake3.blake3(SPEC + vec.tobytes()).digest()
    assert payload_digest(SPEC, vec.tobytes()) == model_digest(SPEC, vec)
    other_spec = blake3.blake3(b"other").digest()
    assert model_digest(other_spec, vec) != model_digest(SPEC, vec)


def test_model_digest_of_read_only_array() -> None:
    vec = np.linspace(-1, 1, 4096, dtype=np.float32)
    expected = model_digest(SPEC, vec)
    frozen = np.frombuffer(vec.tobytes(), dtype=np.float32)  # read-only, like an object-store view
    assert not frozen.flags.writeable
    assert model_digest(SPEC, frozen) == expected


def test_model_digest_makes_no_copy() -> None:
    vec = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)  # 4 MB
    vec.flags.writeable = False
    tracemalloc.start()
    try:
        model_digest(SPEC, vec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < vec.nbytes // 100, f"hashing allocated {peak} bytes for a {vec.nbytes} payload"


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(8, dtype=np.float64),
        np.zeros(8, dtype=">f4"),
        np.zeros((2, 4), dtype=np.float32),
        np.zeros(16, dtype=np.float32)[::2],
    ],
    ids=["float64", "big-endian", "2-D", "strided"],
)
def test_invalid_model_vector(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="model vector must be"):
        model_digest(SPEC, bad)


def test_invalid_spec_id_length() -> None:
    with pytest.raises(ValueError, match="spec_id must be 32 bytes"):
        model_digest(b"short", np.zeros(4, dtype=np.float32))


def test_invalid_non_contiguous_byte_buffer() -> None:
    strided = memoryview(bytes(range(64)))[::2]  # 1-D bytes, but every other one
    with pytest.raises(ValueError, match="non-contiguous"):
        digest(strided)
    assert digest(memoryview(bytes(range(64)))[::2].tobytes()) == digest(bytes(range(0, 64, 2)))
