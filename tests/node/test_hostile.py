"""Hostile messages, one test per finding: each check runs before anything changes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from dfl_ray.ledger import (
    Block,
    BlockEntry,
    Identity,
    Receipt,
    ValidationError,
    endorsement_message,
    read_chain,
    refusal_message,
    verify_block,
    verify_chain,
)
from dfl_ray.messages import EndorseReply, EndorseRequest, Message, ReceiptMessage, TxMessage
from dfl_ray.node import DFLNode, NodeGroup
from tests.helpers import forge, local_host, small_config, state

OUTSIDER = Identity.from_seed(b"\x99" * 32)


@pytest.fixture
def host(tmp_path: Path) -> NodeGroup:
    return local_host(small_config(), tmp_path)


def deliveries(host: NodeGroup, dest: int) -> list[Message]:
    """Take the messages queued for `dest`, leaving the others queued."""
    inbox = host.transport.take_inbox()
    mine = [m for d, m in inbox if d == dest]
    host.transport.inbox.extend((d, m) for d, m in inbox if d != dest)
    return mine


# -- hop: untrusted relay metadata -----------------------------------------------------------------


@pytest.mark.parametrize("hop", [-1, 2**32, 11, 1.5, "1", None, True])
def test_invalid_hop_changes_nothing_and_the_genuine_copy_is_still_accepted(
    host: NodeGroup, hop: Any
) -> None:
    sender, target = host.nodes[0], host.nodes[1]
    good = forge(sender, sender.get_vector())
    before = state(target)
    target.on_message(TxMessage(good.header, good.payload, hop, 0))
    assert sum(target.rejected.values()) == 1
    assert set(target.rejected) <= {"bad_hop", "bad_message"}
    assert state(target) == before and host.transport.inbox == []
    target.on_message(good)  # the genuine copy: accepted, receipted, buffered
    assert target.counters["accepted"] == 1 and sender.identity.public_key in target.buffer
    assert any(isinstance(m, ReceiptMessage) for m in deliveries(host, 0))


# -- membership ------------------------------------------------------------------------------------


def outsider_node(host: NodeGroup) -> DFLNode:
    """Node 0 with its keys swapped for a key the genesis does not name."""
    node = host.nodes[0]
    node.identity = OUTSIDER
    return node


def test_invalid_transaction_from_a_non_member(host: NodeGroup) -> None:
    sender, target = outsider_node(host), host.nodes[1]
    before = state(target)
    target.on_message(forge(sender, sender.get_vector()))
    assert target.rejected == {"unknown_sender": 1}
    assert state(target) == before and host.transport.inbox == []


def test_invalid_receipt_from_a_non_member_is_not_stored_nor_sealed(host: NodeGroup) -> None:
    owner = host.nodes[0]
    assert owner.store is not None
    owner.train()
    owner.publish()
    host.transport.take_inbox()
    (tx, _), = owner.store.pending_transactions()
    forged = Receipt.create(OUTSIDER, tx_id=tx.tx_id, score=0.9, received_at=time.time(), hop=1)
    owner.on_message(ReceiptMessage(forged.encode()))
    assert owner.rejected == {"unknown_sender": 1}
    assert owner.store.pending_transactions()[0][1] == ()


@pytest.mark.parametrize("field, value, reason", [
    ("score", 1.5, "bad_score"),
    ("score", -0.1, "bad_score"),
    ("hop", 11, "bad_hop"),
    ("received_at", time.time() + 1e9, "from_future"),
])
def test_invalid_receipt_fields_out_of_range(host: NodeGroup, field: str, value: float,
                                             reason: str) -> None:
    owner, peer = host.nodes[0], host.nodes[1]
    assert owner.store is not None
    owner.train()
    owner.publish()
    host.transport.take_inbox()
    (tx, _), = owner.store.pending_transactions()
    fields: dict[str, Any] = {"tx_id": tx.tx_id, "score": 0.9, "received_at": time.time(),
                              "hop": 1, field: value}
    receipt = Receipt.create(peer.identity, **fields)
    owner.on_message(ReceiptMessage(receipt.encode()))
    assert owner.rejected == {reason: 1}
    assert owner.store.pending_transactions()[0][1] == ()


def test_invalid_block_with_non_member_receipts_fails_verify(host: NodeGroup) -> None:
    owner = host.nodes[0]
    assert owner.store is not None
    owner.train()
    owner.publish()
    (tx, _), = owner.store.pending_transactions()
    receipts = tuple(
        Receipt.create(Identity.from_seed(bytes([0x90 + i]) * 32), tx_id=tx.tx_id, score=0.9,
                       received_at=time.time(), hop=1) for i in range(2))
    block = Block.create(owner.identity, height=0, prev_hash=owner.genesis.hash,
                         genesis_hash=owner.genesis.hash, created_at=time.time(),
                         entries=[BlockEntry(tx, receipts)], model_digest_after=tx.model_digest,
                         reputation_digest=tx.model_digest)
    with pytest.raises(ValidationError) as err:
        verify_block(block, genesis=owner.genesis, prev_hash=owner.genesis.hash, height=0)
    assert err.value.reason == "unknown_sender"
    with pytest.raises(ValidationError):
        owner.store.append_block(block)
    assert owner.store.height == -1


# -- lifetimes and ranges from the genesis ---------------------------------------------------------


@pytest.mark.parametrize("case, reason", [
    ("forever", "bad_lifetime"),
    ("backwards", "bad_lifetime"),
    ("too_long", "bad_lifetime"),
    ("ttl", "bad_ttl"),
])
def test_invalid_lifetime_and_ttl(host: NodeGroup, case: str, reason: str) -> None:
    sender, target = host.nodes[0], host.nodes[1]
    now = time.time()
    overrides = {
        "forever": {"expires_at": now + 1e12},
        "backwards": {"created_at": now, "expires_at": now - 1.0},
        "too_long": {"created_at": now - 30.0, "expires_at": now + 31.0},  # 61 s > expiry 60 s
        "ttl": {"ttl": 2**32 - 1},
    }[case]
    before = state(target)
    target.on_message(forge(sender, sender.get_vector(), **overrides))
    assert target.rejected == {reason: 1}
    assert state(target) == before


# -- endorsements ----------------------------------------------------------------------------------


def candidate_with_requests(host: NodeGroup) -> tuple[DFLNode, list[tuple[int, EndorseRequest]]]:
    """Node 0 with a candidate block awaiting its three receipt signers, and the requests."""
    for r in range(2):
        host.begin_round(r)
        if r == 0:
            host.end_round(r)
            host.finish_round()
    owner = host.nodes[0]
    owner.aggregate()
    assert owner.seal_block() and len(owner.awaiting) == 3
    requests = [(d, m) for d, m in host.transport.take_inbox() if isinstance(m, EndorseRequest)]
    assert len(requests) == 3
    return owner, requests


def genuine_replies(host: NodeGroup, requests: list[tuple[int, EndorseRequest]]) -> list[EndorseReply]:
    replies = []
    for dest, request in requests:
        host.nodes[dest].on_message(request)
        replies += [m for m in deliveries(host, 0) if isinstance(m, EndorseReply)]
    assert len(replies) == 3 and all(not r.refusal for r in replies)
    return replies


def test_invalid_forged_endorsement_leaves_the_awaited_signer_waiting(host: NodeGroup) -> None:
    owner, requests = candidate_with_requests(host)
    assert owner.candidate is not None
    peer_key = host.nodes[1].identity.public_key
    forged = EndorseReply(owner.candidate.hash, peer_key,
                          OUTSIDER.sign(endorsement_message(owner.candidate.hash)))
    owner.on_message(forged)
    assert owner.rejected == {"bad_endorsement": 1} and peer_key in owner.awaiting
    for reply in genuine_replies(host, requests):
        owner.on_message(reply)
    assert owner.store is not None and owner.candidate is None
    block = owner.store.tip()
    assert block is not None and len(block.endorsements) == 3
    assert "unexpected_endorsement" not in owner.rejected


def test_invalid_unsigned_or_spoofed_refusals_are_not_counted(host: NodeGroup) -> None:
    owner, requests = candidate_with_requests(host)
    assert owner.candidate is not None
    block_hash = owner.candidate.hash
    for node in (1, 2, 3):
        key = host.nodes[node].identity.public_key
        owner.on_message(EndorseReply(block_hash, key, None, "bad_endorsement"))  # type: ignore[arg-type]
        owner.on_message(EndorseReply(block_hash, key,
                                      OUTSIDER.sign(refusal_message(block_hash, "x")), "x"))
    assert owner.rejected == {"bad_endorsement": 6} and len(owner.awaiting) == 3
    for reply in genuine_replies(host, requests):
        owner.on_message(reply)
    block = owner.store.tip() if owner.store is not None else None
    assert block is not None and len(block.endorsements) == 3
    assert owner.counters["stale_endorsements"] == 0


def test_a_signed_refusal_is_counted_and_the_block_stored(host: NodeGroup) -> None:
    owner, requests = candidate_with_requests(host)
    assert owner.candidate is not None
    block_hash = owner.candidate.hash
    refuser = host.nodes[requests[0][0]]
    refusal = EndorseReply(block_hash, refuser.identity.public_key,
                           refuser.identity.sign(refusal_message(block_hash, "bad_endorsement")),
                           "bad_endorsement")
    owner.on_message(refusal)
    assert owner.counters["refused_endorsements"] == 1 and len(owner.awaiting) == 2
    for dest, request in requests[1:]:
        host.nodes[dest].on_message(request)
    for reply in deliveries(host, 0):
        owner.on_message(reply)
    block = owner.store.tip() if owner.store is not None else None
    assert block is not None and len(block.endorsements) == 2


@pytest.mark.parametrize("requester", [-1, 999, None, 2, "0"])
def test_invalid_endorse_request_requester_gets_no_reply(host: NodeGroup, requester: Any) -> None:
    owner, requests = candidate_with_requests(host)
    dest, request = requests[0]
    peer = host.nodes[dest]
    peer.on_message(EndorseRequest(request.block, requester))
    assert host.transport.take_inbox() == []
    assert sum(peer.rejected.values()) == 1
    peer.on_message(request)  # the real requester, node 0, gets its endorsement
    (reply,) = deliveries(host, 0)
    assert isinstance(reply, EndorseReply) and not reply.refusal


def test_invalid_endorse_request_for_a_block_its_creator_did_not_sign(host: NodeGroup) -> None:
    owner, requests = candidate_with_requests(host)
    dest, request = requests[0]
    data = bytearray(request.block)
    data[-10] ^= 1  # inside the creator's signature (the last 64 bytes before a count of 0)
    host.nodes[dest].on_message(EndorseRequest(bytes(data), 0))
    assert host.nodes[dest].rejected == {"bad_signature": 1}
    assert host.transport.take_inbox() == []


# -- wrong types anywhere --------------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    TxMessage(["not", "bytes"], None, 1, 0),  # type: ignore[arg-type]
    TxMessage(b"x", None, 1, [0]),  # type: ignore[arg-type]
    ReceiptMessage(None),  # type: ignore[arg-type]
    ReceiptMessage(12345),  # type: ignore[arg-type]
    EndorseRequest(b"x", [0]),  # type: ignore[arg-type]
    EndorseRequest(None, 0),  # type: ignore[arg-type]
    EndorseReply(b"\x00" * 32, [b"signer"], b"\x00" * 64),  # type: ignore[arg-type]
    EndorseReply(None, b"\x00" * 32, b"\x00" * 64),  # type: ignore[arg-type]
    EndorseReply(b"\x00" * 32, b"\x00" * 32, b"\x00" * 64, None),  # type: ignore[arg-type]
    "a string",
    None,
])
def test_invalid_types_are_counted_never_raised(host: NodeGroup, message: Any) -> None:
    target = host.nodes[1]
    before = state(target)
    target.on_message(message)
    assert sum(target.rejected.values()) == 1
    assert state(target) == before


def test_a_round_after_the_storm_still_seals_verified_chains(host: NodeGroup, tmp_path: Path) -> None:
    target = host.nodes[1]
    for hop in (-1, None, 99):
        target.on_message(TxMessage(b"junk", None, hop, 0))
    for r in range(2):
        host.begin_round(r)
        host.end_round(r)
        host.finish_round()
    for n in host.nodes:
        assert verify_chain(tmp_path / "chains" / f"node_{n}").height == 0
        assert len(read_chain(tmp_path / "chains" / f"node_{n}").blocks[0].endorsements) == 3
