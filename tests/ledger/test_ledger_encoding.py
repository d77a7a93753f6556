"""Canonical encoding: round trips, strict decoding, and garbage that only raises DecodeError."""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np
import pytest
from ledger_factories import Net

from dfl_ray.ledger import Block, DecodeError, Genesis, Receipt, Transaction
from dfl_ray.ledger.encoding import MAX_FIELD_BYTES, Reader, Writer

TAG = b"dfl/test/v1"


def test_writer_reader_round_trip() -> None:
    data = (
        Writer(TAG).u32(7).u64(2**63 - 1).f64(-0.25).blob(b"\x00\x01").text("naïve")
        .count(2).blob(b"a").blob(b"").getvalue()
    )  # fmt: skip
    r = Reader(data, TAG)
    assert (r.u32(), r.u64(), r.f64(), r.blob(), r.text()) == (7, 2**63 - 1, -0.25, b"\0\1", "naïve")
    assert r.count() == 2 and r.blob() == b"a" and r.blob() == b""
    r.finish()


def test_layout_is_fixed_width_big_endian_and_length_prefixed() -> None:
    data = Writer(b"t").u32(1).u64(2).f64(1.0).blob(b"xy").getvalue()
    assert data == (
        b"\x01t" + b"\0\0\0\1" + b"\0" * 7 + b"\2" + struct.pack(">d", 1.0) + b"\0\0\0\2xy"
    )


def test_invalid_trailing_bytes() -> None:
    r = Reader(Writer(TAG).u32(1).getvalue() + b"\0", TAG)
    r.u32()
    with pytest.raises(DecodeError, match="1 trailing bytes"):
        r.finish()


def test_invalid_wrong_tag() -> None:
    with pytest.raises(DecodeError, match="expected tag"):
        Reader(Writer(b"dfl/other/v1").getvalue(), TAG)


def test_invalid_length_prefix_beyond_input_or_cap() -> None:
    head = Writer(TAG).getvalue()
    r = Reader(head + struct.pack(">I", 10) + b"abc", TAG)
    with pytest.raises(DecodeError, match="truncated"):
        r.blob()
    r = Reader(head + struct.pack(">I", MAX_FIELD_BYTES + 1), TAG)
    with pytest.raises(DecodeError, match="exceeds the cap"):
        r.blob()


def test_invalid_sequence_count_larger_than_input() -> None:
    r = Reader(Writer(TAG).getvalue() + struct.pack(">I", 2**32 - 1) + b"x" * 10, TAG)
    with pytest.raises(DecodeError, match="impossible"):
        r.count()


def test_invalid_utf8_text() -> None:
    r = Reader(Writer(TAG).blob(b"\xff\xfe").getvalue(), TAG)
    with pytest.raises(DecodeError, match="UTF-8"):
        r.text()


def test_invalid_writer_values() -> None:
    with pytest.raises(ValueError, match="u32 field"):
        Writer(TAG).u32(2**32)
    with pytest.raises(ValueError, match="finite"):
        Writer(TAG).f64(float("nan"))
    with pytest.raises(TypeError, match="must be an int"):
        Writer(TAG).u64(True)


def _decoders() -> dict[str, Callable[[bytes], object]]:
    return {
        "genesis": Genesis.decode,
        "transaction": Transaction.decode,
        "receipt": Receipt.decode,
        "block": Block.decode,
    }


def _samples(net: Net) -> dict[str, bytes]:
    block = net.chain(1, txs_per_block=2)[0]
    tx = block.entries[0].tx
    return {
        "genesis": net.genesis.encode(),
        "transaction": tx.encode(),
        "receipt": block.entries[0].receipts[0].encode(),
        "block": block.encode(),
    }


def test_encode_decode_round_trip_of_every_object(net: Net) -> None:
    for kind, data in _samples(net).items():
        obj = _decoders()[kind](data)
        assert obj.encode() == data, kind  # type: ignore[attr-defined]


def test_invalid_garbage_and_truncations_only_raise_decode_error(net: Net) -> None:
    rng = np.random.default_rng(1234)
    samples = _samples(net)
    for kind, decode in _decoders().items():
        valid = samples[kind]
        inputs = [rng.bytes(int(rng.integers(0, 400))) for _ in range(200)]
        # Garbage after a correct tag gets past the first check, so it exercises every field.
        tag_len = valid[0] + 1
        inputs += [valid[:tag_len] + rng.bytes(int(rng.integers(0, 400))) for _ in range(200)]
        step = max(1, len(valid) // 300)
        inputs += [valid[:n] for n in range(0, len(valid), step)]
        inputs += [valid + b"\0"]
        for data in inputs:
            with pytest.raises(DecodeError):
                decode(data)


def test_invalid_non_bytes_input() -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        Transaction.decode("text")  # type: ignore[arg-type]


def test_invalid_unsorted_endorsements_are_not_canonical(net: Net) -> None:
    block = net.chain(1)[0]
    assert len(block.endorsements) >= 2
    # Rebuild the encoding with the endorsements in reverse order.
    unsorted_tail = Writer.resume(b"").count(len(block.endorsements))
    for e in reversed(block.endorsements):
        unsorted_tail.blob(e.signer).blob(e.signature)
    head = block.encode()[: -len(_endorsement_tail(block))]
    with pytest.raises(DecodeError, match="sorted by signer"):
        Block.decode(head + unsorted_tail.getvalue())


def _endorsement_tail(block: Block) -> bytes:
    w = Writer.resume(b"").count(len(block.endorsements))
    for e in block.endorsements:
        w.blob(e.signer).blob(e.signature)
    return w.getvalue()
