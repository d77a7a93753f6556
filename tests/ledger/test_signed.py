"""The signed-object base: signing, ids, decoding that keeps its bytes, tags that keep kinds apart."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from ledger_factories import Net

from dfl_ray.ledger import (
    Block,
    DecodeError,
    Genesis,
    Identity,
    Receipt,
    Transaction,
    ValidationError,
    digest,
    verify_block,
)
from dfl_ray.ledger.block import ENDORSE_TAG, REPUTATION_TAG
from dfl_ray.ledger.encoding import Reader, Writer
from dfl_ray.ledger.signed import SIGNATURE_FIELD, Signed


@dataclass(frozen=True)
class Echo(Signed):
    """A kind made for these tests: a receipt's fields, under a tag of its own."""

    TAG = b"dfl/test-echo/v1"
    KIND = "echo"
    SIGNER = "receiver"

    tx_id: bytes
    receiver: bytes
    score: float
    received_at: float
    hop: int
    signature: bytes

    @classmethod
    def create(cls, identity: Identity, **fields: object) -> Echo:
        return cls._sign_new(identity, receiver=identity.public_key, **fields)

    def _write_fields(self, w: Writer) -> Writer:
        return (
            w.blob(self.tx_id).blob(self.receiver).f64(self.score).f64(self.received_at)
            .u32(self.hop)
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Echo:
        r = Reader(data, cls.TAG)
        fields = (r.blob(), r.blob(), r.f64(), r.f64(), r.u32())
        signing_end = r.offset
        signature = r.blob()
        r.finish()
        return cls._decoded((*fields, signature), r.data[:signing_end], r.data)


FIELDS: dict[str, object] = {
    "tx_id": b"\x07" * 32, "score": 0.75, "received_at": 5.0, "hop": 2,
}


def _objects(net: Net) -> list[Signed]:
    tx = net.tx(1)
    return [tx, net.receipts(tx)[0], net.chain(1)[0], Echo.create(net.peers[0], **FIELDS)]


def test_sign_new_signs_the_tagged_fields(net: Net) -> None:
    echo = Echo.create(net.peers[0], **FIELDS)
    assert echo.signer == net.peers[0].public_key
    assert echo.signing_bytes() == echo._write_fields(Writer(Echo.TAG)).getvalue()
    assert echo.signing_bytes().startswith(bytes([len(Echo.TAG)]) + Echo.TAG)
    assert echo.encode() == Writer.resume(echo.signing_bytes()).blob(echo.signature).getvalue()
    assert len(echo.encode()) == len(echo.signing_bytes()) + SIGNATURE_FIELD
    assert echo.signature == net.peers[0].sign(echo.signing_bytes())
    assert echo.has_valid_signature()
    echo.verify()


def test_id_is_the_digest_of_the_signed_encoding(net: Net) -> None:
    tx, receipt, block, echo = _objects(net)
    for obj in (tx, receipt, echo):
        assert obj.compute_id() == digest(obj.encode())
    assert tx.tx_id == tx.compute_id() and receipt.id == receipt.compute_id()
    # A block's endorsements (a count, then each) follow its signed encoding, outside its id.
    bare = block.with_endorsements([]).encode()
    assert bare.endswith(b"\0" * 4)
    assert block.hash == block.compute_id() == digest(bare[:-4])
    assert block.hash != digest(block.encode())
    by_other = Echo.create(net.peers[1], **FIELDS)
    assert echo.compute_id() != by_other.compute_id()


def test_decoded_object_equals_the_signed_one_and_verifies(net: Net) -> None:
    echo = Echo.create(net.peers[0], **FIELDS)
    decoded = Echo.decode(echo.encode())
    assert decoded == echo and decoded.encode() == echo.encode()
    assert decoded.signing_bytes() == echo.signing_bytes()
    assert decoded.compute_id() == echo.compute_id()
    decoded.verify()


def test_every_kind_has_a_tag_of_its_own() -> None:
    tags = [Genesis.TAG, Transaction.TAG, Receipt.TAG, Block.TAG, Echo.TAG, ENDORSE_TAG,
            REPUTATION_TAG]
    assert len(set(tags)) == len(tags)
    assert [Transaction.KIND, Receipt.KIND, Block.KIND] == ["transaction", "receipt", "block"]


def test_invalid_encoding_of_one_kind_decodes_as_no_other(net: Net) -> None:
    encodings = {kind: obj.encode() for kind, obj in zip(
        (Transaction, Receipt, Block, Echo), _objects(net), strict=True)}
    encodings[Genesis] = net.genesis.encode()
    for kind, data in encodings.items():
        for other in encodings:
            if other is kind:
                assert other.decode(data).encode() == data  # type: ignore[attr-defined]
                continue
            with pytest.raises(DecodeError, match="expected tag"):
                other.decode(data)  # type: ignore[attr-defined]


def test_invalid_signature_for_one_kind_never_verifies_as_another(net: Net) -> None:
    # The same key signs the same field bytes under two tags: only the tag tells them apart.
    peer = net.peers[0]
    echo = Echo.create(peer, **FIELDS)
    receipt = Receipt.create(peer, **FIELDS)  # type: ignore[arg-type]
    assert echo.signing_bytes()[1 + len(Echo.TAG):] == receipt.signing_bytes()[1 + len(Receipt.TAG):]
    assert echo.signature != receipt.signature
    for obj, foreign in ((receipt, echo.signature), (echo, receipt.signature)):
        swapped = replace(obj, signature=foreign)
        assert not swapped.has_valid_signature()
        with pytest.raises(ValidationError) as err:
            swapped.verify()
        assert err.value.reason == "bad_signature"
    # An endorsement is a signature over another tag too: it never passes as a block's.
    block = net.chain(1)[0]
    endorsement = block.endorsements[0]
    as_block = replace(block, creator=endorsement.signer, signature=endorsement.signature)
    assert not as_block.has_valid_signature()


def test_invalid_any_changed_byte_fails_decode_or_verify(net: Net) -> None:
    # Every position, not a sample: a changed byte is a changed field, tag, length or signature.
    tx, receipt, _, echo = _objects(net)
    for obj in (tx, receipt, echo):
        data = obj.encode()
        for pos in range(len(data)):
            mutated = bytearray(data)
            mutated[pos] ^= 0x01
            with pytest.raises((DecodeError, ValidationError)):
                type(obj).decode(bytes(mutated)).verify()  # type: ignore[attr-defined]


def test_invalid_changed_field_names_the_object_and_its_signer(net: Net) -> None:
    tx, receipt, block, echo = _objects(net)
    cases = [
        (replace(tx, n_samples=tx.n_samples + 1), "transaction seq 1 is not signed by its creator"),
        (replace(receipt, hop=9), f"receipt for tx {receipt.tx_id.hex()[:16]}.. is not signed by "
                                  "its receiver"),
        (replace(block, height=5), "block is not signed by its creator"),
        (replace(echo, score=0.5), "echo is not signed by its receiver"),
    ]
    for forged, detail in cases:
        assert not forged.has_valid_signature()
        with pytest.raises(ValidationError) as err:
            forged.verify()
        assert (err.value.reason, err.value.detail) == ("bad_signature", detail)


def test_invalid_field_in_decoded_bytes_is_a_decode_error(net: Net) -> None:
    for obj in _objects(net)[:2]:
        data = obj.encode()
        short = data[:-SIGNATURE_FIELD] + Writer.resume(b"").blob(b"\0" * 3).getvalue()
        with pytest.raises(DecodeError, match=f"^{obj.KIND}: signature must be 64 bytes, got 3"):
            type(obj).decode(short)  # type: ignore[attr-defined]


# -- a single flipped byte is never silently accepted ----------------------------------------


def _flip_rejected(data: bytes, accept: object, n: int, seed: int) -> int:
    """Flip one byte at `n` random positions; return how many decoded but failed verification."""
    rng = np.random.default_rng(seed)
    verified_out = 0
    for pos in rng.integers(0, len(data), size=n):
        mutated = bytearray(data)
        mutated[pos] ^= int(rng.integers(1, 256))
        try:
            accept(bytes(mutated))  # type: ignore[operator]
        except DecodeError:
            continue
        except ValidationError:
            verified_out += 1
            continue
        pytest.fail(f"a byte flipped at offset {pos} was accepted")
    return verified_out


def test_flipped_byte_in_transaction_is_rejected(net: Net) -> None:
    def accept(data: bytes) -> None:
        Transaction.decode(data).verify()

    assert _flip_rejected(net.tx(1).encode(), accept, 300, seed=1) > 0


def test_flipped_byte_in_receipt_is_rejected(net: Net) -> None:
    def accept(data: bytes) -> None:
        Receipt.decode(data).verify()

    assert _flip_rejected(net.receipts(net.tx(1))[0].encode(), accept, 300, seed=2) > 0


def test_flipped_byte_in_block_is_rejected(net: Net) -> None:
    def accept(data: bytes) -> None:
        verify_block(Block.decode(data), genesis=net.genesis,
                     prev_hash=net.genesis.hash, height=0)

    assert _flip_rejected(net.chain(1)[0].encode(), accept, 400, seed=3) > 0


def test_decoded_objects_keep_their_bytes(net: Net) -> None:
    block = net.chain(1)[0]
    tx = block.entries[0].tx
    bare_tx = Transaction.create(
        net.owner, genesis_hash=net.genesis.hash, seq=0, created_at=1.0, expires_at=2.0, ttl=1,
        model_digest=b"\1" * 32, self_score=0.0, n_samples=0,
    )  # fmt: skip
    receipt = block.entries[0].receipts[0]
    for obj in (tx, bare_tx, receipt, block):
        data = obj.encode()
        decoded = type(obj).decode(data)
        assert decoded == obj and decoded.encode() == data
        assert decoded.signing_bytes() == obj.signing_bytes()
        assert data.startswith(decoded.signing_bytes())
        for view in (bytearray(data), memoryview(data)):  # a copy of the input is kept as bytes
            again = type(obj).decode(view)  # type: ignore[arg-type]
            assert again == obj and type(again.encode()) is bytes and again.encode() == data
    decoded_block = Block.decode(block.encode())
    assert decoded_block.hash == block.hash
    assert decoded_block.with_endorsements([]).hash == block.hash
