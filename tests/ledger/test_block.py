"""Blocks: round trip, endorsements outside the hash, endorsing, claims read from the encoding."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ledger_factories import Net

from dfl_ray.ledger import (
    Block,
    BlockEntry,
    Claims,
    ValidationError,
    endorse,
    reputation_digest,
    verify_block,
)


def test_block_round_trip_and_endorsements_outside_the_hash(net: Net) -> None:
    block = net.chain(1, txs_per_block=3)[0]
    assert len(block.endorsements) == len(net.peers)
    decoded = Block.decode(block.encode())
    assert decoded == block and decoded.hash == block.hash
    bare = block.with_endorsements([])
    assert bare.hash == block.hash and bare.encode() != block.encode()
    assert block.with_endorsements(reversed(block.endorsements)) == block  # sorted for us
    verify_block(block, genesis=net.genesis, prev_hash=net.genesis.hash, height=0)


def test_reputation_digest_is_order_independent(net: Net) -> None:
    a = reputation_digest({"x": 1.0, "y": 0.5})
    assert a == reputation_digest({"y": 0.5, "x": 1.0})
    assert a != reputation_digest({"x": 1.0, "y": 0.25})
    assert a != reputation_digest({"x": 1.0})


# -- endorsements ----------------------------------------------------------------------------------


def test_endorse_signs_the_tagged_block_hash(net: Net) -> None:
    block = net.chain(1)[0].with_endorsements([])
    peer = net.peers[0]
    issued = {r.id for r in block.receipts() if r.receiver == peer.public_key}
    e = endorse(peer, block, issued)
    assert e.signer == peer.public_key
    verify_block(block.with_endorsements([e]), genesis=net.genesis,
                 prev_hash=net.genesis.hash, height=0)


def test_invalid_endorse_of_a_receipt_never_issued(net: Net) -> None:
    block = net.chain(1)[0]
    peer = net.peers[0]
    issued = {r.id for r in block.receipts() if r.receiver == peer.public_key}
    with pytest.raises(ValidationError) as err:
        endorse(peer, block, issued - {next(iter(issued))})
    assert err.value.reason == "bad_endorsement" and "never issued" in err.value.detail
    outsider = net.identity(9)
    with pytest.raises(ValidationError) as err:
        endorse(outsider, block, set())
    assert err.value.reason == "bad_endorsement" and "no receipt" in err.value.detail


def test_read_claims_match_the_decoded_block(net: Net) -> None:
    block = net.chain(1, txs_per_block=3)[0]
    data = block.encode()
    for who in [*net.peers, net.owner, net.identity(9)]:
        claims = Block.read_claims(data, who.public_key)
        assert claims == Block.decode(data).claims(who.public_key) == block.claims(who.public_key)
        assert claims.block_hash == block.hash
    assert len(Block.read_claims(data, net.peers[0].public_key).receipts) == 3
    assert Block.read_claims(data, net.owner.public_key).receipts == ()


def test_endorse_from_claims_equals_endorse_of_the_block(net: Net) -> None:
    block = net.chain(1)[0]
    peer = net.peers[1]
    issued = {r.id for r in block.receipts() if r.receiver == peer.public_key}
    claims = Block.read_claims(block.encode(), peer.public_key)
    assert endorse(peer, claims, issued) == endorse(peer, block, issued)


def test_invalid_endorse_claims_of_a_receipt_never_issued(net: Net) -> None:
    peer = net.peers[0]
    block = net.chain(1)[0]
    issued = {r.id for r in block.receipts() if r.receiver == peer.public_key}
    data = block.encode()
    with pytest.raises(ValidationError) as err:
        endorse(peer, Block.read_claims(data, peer.public_key), issued - {next(iter(issued))})
    assert err.value.reason == "bad_endorsement" and "never issued" in err.value.detail
    # A receipt in the peer's name that the peer never signed (another key signed it).
    tx = net.tx(7)
    forged = replace(net.receipts(tx, [net.peers[1]])[0], receiver=peer.public_key)
    forged_block = net.block(1, block.hash, [BlockEntry(tx, (forged,))], endorsed=False)
    claims = Block.read_claims(forged_block.encode(), peer.public_key)
    assert claims.receipts == (forged,)
    with pytest.raises(ValidationError) as err:
        endorse(peer, claims, issued)
    assert err.value.reason == "bad_endorsement" and "never issued" in err.value.detail
    with pytest.raises(ValidationError) as err:
        endorse(net.identity(9), Block.read_claims(data, net.identity(9).public_key), set())
    assert err.value.reason == "bad_endorsement" and "no receipt" in err.value.detail


def test_invalid_claims_on_another_signer(net: Net) -> None:
    block = net.chain(1)[0]
    claims = Block.read_claims(block.encode(), net.peers[0].public_key)
    with pytest.raises(ValueError, match="another signer"):
        endorse(net.peers[1], claims, set())
    with pytest.raises(TypeError, match="naming the signer"):
        Claims(block.hash, net.peers[1].public_key, claims.receipts)
