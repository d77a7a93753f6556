"""Transactions: signing, round trip, id without decoding, the receive checks on header and payload."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from ledger_factories import Net

from dfl_ray.ledger import (
    DecodeError,
    Transaction,
    ValidationError,
    check_payload,
    check_transaction,
    payload_digest,
)
from dfl_ray.ledger.transaction import is_finite


def test_transaction_sign_verify_and_round_trip(net: Net) -> None:
    tx = net.tx(3)
    tx.verify()
    decoded = Transaction.decode(tx.encode())
    assert decoded == tx and decoded.tx_id == tx.tx_id
    assert decoded.encode() == tx.encode()
    assert tx.encode().startswith(tx.signing_bytes())
    assert tx.creator == net.owner.public_key and len(tx.tx_id) == 32


def test_transaction_without_base_digest(net: Net) -> None:
    tx = Transaction.create(
        net.owner, genesis_hash=net.genesis.hash, seq=0, created_at=1.0, expires_at=2.0, ttl=1,
        model_digest=b"\1" * 32, self_score=0.0, n_samples=0,
    )  # fmt: skip
    assert tx.base_digest == b""
    assert Transaction.decode(tx.encode()) == tx
    tx.verify()


def test_invalid_transaction_fields(net: Net) -> None:
    tx = net.tx(1)
    with pytest.raises(ValueError, match="base_digest must be 0 or 32 bytes"):
        replace(tx, base_digest=b"\0" * 5)
    with pytest.raises(ValueError, match="created_at must be finite"):
        replace(tx, created_at=float("nan"))
    with pytest.raises(ValueError, match="seq must be in"):
        replace(tx, seq=-1)
    with pytest.raises(TypeError, match="creator must be bytes"):
        replace(tx, creator=bytearray(32))


def test_transaction_id_of_its_encoding(net: Net) -> None:
    tx = net.tx(4)
    assert Transaction.id_of(tx.encode()) == tx.tx_id == Transaction.decode(tx.encode()).tx_id
    assert Transaction.id_of(bytearray(tx.encode())) == tx.tx_id  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="expected bytes"):
        Transaction.id_of("text")  # type: ignore[arg-type]
    strided = memoryview(tx.encode() * 2)[::2]
    with pytest.raises(DecodeError, match="contiguous"):
        Transaction.id_of(strided)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="contiguous"):
        Transaction.decode(strided)  # type: ignore[arg-type]


# -- receive checks --------------------------------------------------------------------------------


def _check(net: Net, tx: Transaction, *, now: float | None = None,
           last_seq: int | None = None) -> None:
    check_transaction(
        tx, genesis=net.genesis, now=net.now + 1 if now is None else now,
        last_seq=last_seq,
    )


def test_check_transaction_accepts_a_good_transaction(net: Net) -> None:
    _check(net, net.tx(5), last_seq=4)
    _check(net, net.tx(0), last_seq=None)


def test_invalid_transaction_wrong_genesis(net: Net) -> None:
    tx = net.tx(1, genesis_hash=b"\x09" * 32)
    with pytest.raises(ValidationError) as err:
        _check(net, tx)
    assert err.value.reason == "wrong_genesis"


def test_invalid_transaction_bad_signature(net: Net) -> None:
    forged = replace(net.tx(1), self_score=0.99)  # same signature, other content
    with pytest.raises(ValidationError) as err:
        _check(net, forged)
    assert err.value.reason == "bad_signature"
    stolen = replace(net.tx(1), creator=net.peers[0].public_key)
    with pytest.raises(ValidationError) as err:
        _check(net, stolen)
    assert err.value.reason == "bad_signature"


def test_shared_signature_verdicts_are_keyed_by_the_whole_signed_encoding(net: Net) -> None:
    signed: set[bytes] = set()
    tx = net.tx(1)
    check_transaction(tx, genesis=net.genesis, now=net.now + 1, last_seq=None,
                      signed_ids=signed)
    assert signed == {tx.tx_id}
    forged = replace(tx, self_score=0.99)  # same signature, other content: another id
    assert forged.tx_id not in signed
    with pytest.raises(ValidationError) as err:
        check_transaction(forged, genesis=net.genesis, now=net.now + 1,
                          last_seq=None, signed_ids=signed)
    assert err.value.reason == "bad_signature" and signed == {tx.tx_id}
    with pytest.raises(ValidationError) as err:  # the later checks still run for a known id
        check_transaction(tx, genesis=net.genesis, now=net.now + 1, last_seq=1,
                          signed_ids=signed)
    assert err.value.reason == "replayed_seq"


def test_invalid_transaction_expired(net: Net) -> None:
    tx = net.tx(1)
    with pytest.raises(ValidationError) as err:
        _check(net, tx, now=tx.expires_at + 0.001)
    assert err.value.reason == "expired"
    _check(net, tx, now=tx.expires_at)  # the expiry instant itself is still valid


def test_invalid_transaction_from_future(net: Net) -> None:
    tx = net.tx(1)
    with pytest.raises(ValidationError) as err:
        _check(net, tx, now=tx.created_at - 5.001)
    assert err.value.reason == "from_future"
    _check(net, tx, now=tx.created_at - 4.999)  # within the default 5 s skew


def test_invalid_transaction_replayed_seq(net: Net) -> None:
    for last in (7, 8):
        with pytest.raises(ValidationError) as err:
            _check(net, net.tx(7), last_seq=last)
        assert err.value.reason == "replayed_seq"


def test_check_transaction_reports_the_first_failure_in_order(net: Net) -> None:
    other = net.make_genesis(network_id="other")  # the same members and ranges
    tx = net.tx(3, genesis_hash=other.hash)
    expired_forged_replay = replace(tx, self_score=0.0)
    reasons = []
    for genesis in (net.genesis, other):
        for candidate in (expired_forged_replay, tx):
            try:
                check_transaction(candidate, genesis=genesis, now=tx.expires_at + 1,
                                  last_seq=10)
            except ValidationError as err:
                reasons.append(err.reason)
    assert reasons == ["wrong_genesis", "wrong_genesis", "bad_signature", "expired"]


def test_check_payload_accepts_the_published_vector_read_only(net: Net) -> None:
    vec = net.vector(5)
    tx = net.tx(5)
    frozen = np.frombuffer(vec.tobytes(), dtype=np.float32)
    before = frozen.tobytes()
    check_payload(tx, spec_id=net.spec_id, expected_size=net.size, vec=frozen)
    assert frozen.tobytes() == before and not frozen.flags.writeable


def _signed_for(net: Net, data: np.ndarray) -> Transaction:
    """A correctly signed transaction whose digest covers exactly `data`'s raw bytes."""
    return replace_digest(net, payload_digest(net.spec_id, np.ascontiguousarray(data)))


def replace_digest(net: Net, model_digest: bytes) -> Transaction:
    return Transaction.create(
        net.owner, genesis_hash=net.genesis.hash, seq=1, created_at=net.now,
        expires_at=net.now + 60, ttl=10, model_digest=model_digest, self_score=0.5, n_samples=1,
    )  # fmt: skip


def _payload_reason(net: Net, tx: Transaction, vec: object) -> str:
    before = vec.tobytes() if isinstance(vec, np.ndarray) else None
    with pytest.raises(ValidationError) as err:
        check_payload(tx, spec_id=net.spec_id, expected_size=net.size, vec=vec)  # type: ignore[arg-type]
    if before is not None:
        assert vec.tobytes() == before  # type: ignore[union-attr]
    return err.value.reason


def test_invalid_payload_digest_mismatch(net: Net) -> None:
    vec = net.vector(5).copy()
    vec[3] += 1.0
    assert _payload_reason(net, net.tx(5), vec) == "digest_mismatch"
    # The digest check comes first: a wrong-shaped payload that is also not the signed one.
    assert _payload_reason(net, net.tx(5), np.zeros(3, np.float32)) == "digest_mismatch"


def test_invalid_payload_bad_shape(net: Net) -> None:
    short = net.vector(5, size=net.size - 1)
    assert _payload_reason(net, _signed_for(net, short), short) == "bad_shape"
    square = net.vector(5).reshape(8, 8)
    assert _payload_reason(net, _signed_for(net, square), square) == "bad_shape"
    strided = np.repeat(net.vector(5), 2)[::2]
    assert _payload_reason(net, _signed_for(net, strided), strided) == "bad_shape"


def test_invalid_payload_bad_dtype(net: Net) -> None:
    big_endian = net.vector(5).astype(">f4")
    assert _payload_reason(net, _signed_for(net, big_endian), big_endian) == "bad_dtype"
    as_ints = net.vector(5).view(np.int32)
    assert _payload_reason(net, _signed_for(net, as_ints), as_ints) == "bad_dtype"
    assert _payload_reason(net, net.tx(5), net.vector(5).tolist()) == "bad_dtype"
    assert _payload_reason(net, net.tx(5), np.array([object()] * net.size)) == "bad_dtype"
    dates = np.zeros(net.size, dtype="datetime64[s]")
    assert _payload_reason(net, net.tx(5), dates) == "bad_dtype"  # no buffer export at all


def test_invalid_payload_non_finite(net: Net) -> None:
    for bad in (np.nan, np.inf, -np.inf):
        vec = net.vector(5).copy()
        vec[10] = bad
        assert _payload_reason(net, _signed_for(net, vec), vec) == "non_finite"
    huge = np.full(net.size, np.finfo(np.float32).max, dtype=np.float32)
    check_payload(_signed_for(net, huge), spec_id=net.spec_id, expected_size=net.size, vec=huge)


def test_check_payload_with_known_digest_compares_it_and_runs_the_other_checks(net: Net) -> None:
    vec = net.vector(5)
    tx = net.tx(5)
    known = payload_digest(net.spec_id, vec)
    check_payload(tx, spec_id=net.spec_id, expected_size=net.size, vec=vec, known_digest=known)
    with pytest.raises(ValidationError) as err:
        check_payload(tx, spec_id=net.spec_id, expected_size=net.size, vec=vec,
                      known_digest=b"\x01" * 32)
    assert err.value.reason == "digest_mismatch"
    bad = vec.copy()
    bad[10] = np.nan
    bad_tx = _signed_for(net, bad)
    with pytest.raises(ValidationError) as err:
        check_payload(bad_tx, spec_id=net.spec_id, expected_size=net.size, vec=bad,
                      known_digest=bad_tx.model_digest)
    assert err.value.reason == "non_finite"


def test_invalid_check_payload_known_digest_of_wrong_size(net: Net) -> None:
    with pytest.raises(ValueError, match="known_digest"):
        check_payload(net.tx(5), spec_id=net.spec_id, expected_size=net.size,
                      vec=net.vector(5), known_digest=b"\x01" * 5)


def test_invalid_check_arguments_are_programming_errors(net: Net) -> None:
    tx = net.tx(1)
    with pytest.raises(ValueError, match="now must be finite"):
        check_transaction(tx, genesis=net.genesis, now=float("nan"), last_seq=None)
    with pytest.raises(ValueError, match="max_clock_skew"):
        check_transaction(tx, genesis=net.genesis, now=net.now, last_seq=None,
                          max_clock_skew=-1.0)
    with pytest.raises(ValueError, match="spec_id"):
        check_payload(tx, spec_id=b"", expected_size=net.size, vec=net.vector(1))


# -- finiteness without a temporary array ----------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("position", [0, 1, 7, 8, 15, 16, 515, 1029, 1030])
def test_invalid_non_finite_value_at_any_position(bad: float, position: int) -> None:
    # 1031 values: SIMD reductions take blocks of 4, 8 or 16 lanes plus a tail, so these
    # positions hit the first lane, lane boundaries, the middle and the scalar tail.
    vec = np.random.default_rng(position).standard_normal(1031).astype(np.float32)
    assert is_finite(vec)
    vec[position] = bad
    assert not is_finite(vec)
    assert not bool(np.isfinite(vec).all())  # the reference it replaces agrees


def test_is_finite_accepts_extreme_finite_values() -> None:
    info = np.finfo(np.float32)
    vec = np.array([info.max, -info.max, info.tiny, info.smallest_subnormal, -0.0, 0.0],
                   dtype=np.float32)
    assert is_finite(vec)
    assert is_finite(np.zeros(0, np.float32))
    both = np.array([np.inf, -np.inf], dtype=np.float32)  # min and max both non-finite
    assert not is_finite(both)


def test_invalid_payload_non_finite_first_and_last(net: Net) -> None:
    for position in (0, net.size - 1):
        vec = net.vector(6).copy()
        vec[position] = np.nan
        assert _payload_reason(net, _signed_for(net, vec), vec) == "non_finite"
