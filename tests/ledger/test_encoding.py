"""Canonical encoding: round trips, strict decoding, and garbage that only raises DecodeError."""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np
import pytest
from ledger_factories import Net

from dfl_ray.ledger import Block, DecodeError, Genesis, Receipt, Transaction
from dfl_ray.ledger.encoding import MAX_FIELD_BYTES, FixedLayout, Reader, Writer, decoding

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
        "claims": lambda data: Block.read_claims(data, bytes(32)),
    }


def _samples(net: Net) -> dict[str, bytes]:
    block = net.chain(1, txs_per_block=2)[0]
    tx = block.entries[0].tx
    return {
        "genesis": net.genesis.encode(),
        "transaction": tx.encode(),
        "receipt": block.entries[0].receipts[0].encode(),
        "block": block.encode(),
        "claims": block.encode(),
    }


def test_encode_decode_round_trip_of_every_object(net: Net) -> None:
    for kind, data in _samples(net).items():
        if kind == "claims":
            continue  # not an object that encodes; see test_read_claims_match_the_decoded_block
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


def test_fixed_layout_reads_exactly_its_layout() -> None:
    layout = FixedLayout(TAG, (3, "u32", "u64", "f64", 0))
    data = Writer(TAG).blob(b"abc").u32(7).u64(2**40).f64(-1.5).blob(b"").getvalue()
    assert layout.size == len(data)
    assert layout.unpack(data) == (b"abc", 7, 2**40, -1.5, b"")
    r = Reader(data, TAG)
    assert (r.blob(), r.u32(), r.u64(), r.f64(), r.blob()) == layout.unpack(data)


def test_invalid_fixed_layout_input_falls_back() -> None:
    layout = FixedLayout(TAG, (3, "u32"))
    good = Writer(TAG).blob(b"abc").u32(7).getvalue()
    other_prefix = Writer(TAG).blob(b"ab").u32(7).getvalue() + b"\0"  # same size, blob of 2
    other_tag = Writer(b"dfl/tesT/v1").blob(b"abc").u32(7).getvalue()
    for data in (good[:-1], good + b"\0", other_prefix, other_tag, bytearray(good), "text"):
        assert layout.unpack(data) is None, data
    with pytest.raises(ValueError, match="unknown fixed field"):
        FixedLayout(TAG, ("u16",))


def test_fixed_layout_and_reader_agree_on_mutated_objects(net: Net) -> None:
    # Every single-byte change decodes on the fixed path exactly when the Reader accepts it.
    bare_tx = Transaction.create(
        net.owner, genesis_hash=net.genesis.hash, seq=0, created_at=1.0, expires_at=2.0, ttl=1,
        model_digest=b"\1" * 32, self_score=0.0, n_samples=0,
    )  # fmt: skip
    rng = np.random.default_rng(7)
    decoded = 0
    for obj in (net.receipts(net.tx(1))[0], net.tx(1), bare_tx):
        data = obj.encode()
        for pos in range(len(data)):
            mutated = bytearray(data)
            mutated[pos] ^= int(rng.integers(1, 256))
            results = []
            # bytes take the fixed path; any other buffer goes through the Reader.
            for candidate in (bytes(mutated), memoryview(bytes(mutated))):
                try:
                    results.append(type(obj).decode(candidate))  # type: ignore[arg-type]
                except DecodeError:
                    results.append(None)
            assert results[0] == results[1], (type(obj).__name__, pos)
            decoded += results[0] is not None
    assert decoded > 100  # most changes land in field values and still decode


def test_decoding_turns_field_errors_into_decode_errors() -> None:
    with pytest.raises(DecodeError, match="thing: bad value") as err, decoding("thing"):
        raise ValueError("bad value")
    assert isinstance(err.value.__cause__, ValueError)
    with pytest.raises(DecodeError, match="^inner$"), decoding("thing"):
        raise DecodeError("inner")
    with pytest.raises(KeyError), decoding("thing"):
        raise KeyError("not a field check")
    with decoding("thing"):
        pass
