"""Property-based fuzzing of a node's handlers and the ledger's decoders (hypothesis).

Every generated message goes to a live node, with valid traffic interleaved. For each one:
no handler raises; a rejected message leaves the node's protocol state exactly as it was; a
forged or altered message is never accepted. The last test checks that valid traffic is still
accepted after the storm and that more than `MIN_CASES` cases ran.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfl_ray.ledger import (
    Block,
    DecodeError,
    Genesis,
    Identity,
    Receipt,
    Transaction,
    endorsement_message,
    refusal_message,
)
from dfl_ray.messages import EndorseReply, EndorseRequest, ReceiptMessage, TxMessage
from dfl_ray.node import DFLNode, NodeGroup
from tests.helpers import forge, local_host, small_config

MIN_CASES = 10_000
SETTINGS = settings(
    max_examples=500, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
OUTSIDER = Identity.from_seed(b"\x99" * 32)
CASES = {"count": 0, "seconds": 0.0}


class World:
    """One network of four nodes; node 1 is the target of transactions and endorse requests,
    node 0 holds a candidate block awaiting endorsements and receives receipts."""

    def __init__(self, host: NodeGroup) -> None:
        self.host = host
        self.target, self.owner = host.nodes[1], host.nodes[0]
        self.seqs = {n: itertools.count(1000) for n in host.nodes}
        rng = np.random.default_rng(0)
        self.vec = self.owner.get_vector()
        self.bad_vec = (self.vec + rng.standard_normal(self.vec.size).astype(np.float32))
        # Node 0 seals a block: its endorse requests are the valid ones to mutate.
        for r in range(2):
            host.begin_round(r)
            if r == 0:
                host.end_round(r)
                host.finish_round()
        self.owner.aggregate()
        assert self.owner.seal_block()
        self.requests = [m for _, m in host.transport.take_inbox() if isinstance(m, EndorseRequest)]
        assert self.owner.candidate is not None
        self.own_tx = self.owner.store.pending_transactions()[-1][0] if self.owner.store else None

    def tx(self, sender: int = 0, **overrides: Any) -> TxMessage:
        node = self.host.nodes[sender]
        return forge(node, self.vec, seq=next(self.seqs[sender]), **overrides)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(local_host(small_config(), tmp_path_factory.mktemp("fuzz")))


def snapshot(node: DFLNode) -> tuple[Any, ...]:
    """The node's protocol state: what a rejected message must leave as it was."""
    store = node.store
    assert store is not None
    return (
        frozenset(node.seen), dict(node.last_seq), {k: v.seq for k, v in node.buffer.items()},
        len(store.issued_receipt_ids()),
        tuple((tx.tx_id, tuple(r.id for r in rs)) for tx, rs in store.pending_transactions()),
        store.height, node.candidate.hash if node.candidate else None,
        frozenset(node.awaiting), tuple(e.signer for e in node.endorsements),
        dict(node.reputations), node.seq,
    )


def deliver(world: World, node: DFLNode, message: Any, *, forged: bool,
            valid: bool = False) -> None:
    """Hand one message to `node` and check the invariants; a `valid` one must be accepted."""
    before, rejected = snapshot(node), sum(node.rejected.values())
    accepted, receipts = node.counters["accepted"], node.counters["receipts"]
    start = time.perf_counter()
    node.on_message(message)  # must never raise
    CASES["seconds"] += time.perf_counter() - start
    CASES["count"] += 1
    if sum(node.rejected.values()) > rejected:
        assert snapshot(node) == before, f"a rejected message changed the node: {message!r:.200}"
    if forged:
        assert node.counters["accepted"] == accepted, f"forged transaction accepted: {message!r:.200}"
        assert node.counters["receipts"] == receipts, f"forged receipt accepted: {message!r:.200}"
        assert frozenset(node.awaiting) >= before[7] and len(node.endorsements) == len(before[8])
    if valid:
        assert (node.counters["accepted"] + node.counters["receipts"] == accepted + receipts + 1
                and sum(node.rejected.values()) == rejected), f"valid message refused: {node.rejected}"
    world.host.transport.take_inbox()  # receipts and forwards the node sent


# -- byte mutations ---------------------------------------------------------------------------------

Mutation = Callable[[bytes], bytes]


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    """A change of some bytes: flip one, cut the tail, append junk, overwrite a run."""
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite", "replace"]))
    where = draw(st.floats(0.0, 1.0))
    junk = draw(st.binary(min_size=1, max_size=24))
    bit = draw(st.integers(0, 7))

    def mutate(data: bytes) -> bytes:
        i = min(int(where * len(data)), max(len(data) - 1, 0))
        if kind == "flip" and data:
            return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:]
        if kind == "truncate":
            return data[:i]
        if kind == "extend":
            return data + junk
        if kind == "overwrite":
            return data[:i] + junk + data[i + len(junk):]
        return junk

    return mutate


GARBAGE = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True), st.text(max_size=8), st.binary(max_size=40),
                    st.lists(st.integers(), max_size=3))


# -- transactions -----------------------------------------------------------------------------------


@SETTINGS
@given(kinds=st.lists(st.sampled_from(["valid", "mutated", "outsider", "fields", "hop", "types"]),
                      min_size=4, max_size=8),
       mutation=mutations(), garbage=GARBAGE, hop=st.one_of(GARBAGE, st.integers(-3, 14)),
       sender=st.sampled_from([0, 2, 3]), when=st.floats(-1e12, 1e12),
       field=st.sampled_from(["created_at", "expires_at", "ttl", "genesis_hash", "digest"]))
def test_transactions(world: World, kinds: list[str], mutation: Mutation, garbage: Any, hop: Any,
                      sender: int, when: float, field: str) -> None:
    node, now = world.target, time.time()
    for kind in kinds:
        if kind == "valid":
            deliver(world, node, world.tx(sender), forged=False, valid=True)
        elif kind == "mutated":
            good = world.tx(sender)
            header = mutation(good.header)
            deliver(world, node, TxMessage(header, good.payload, 1, sender),
                    forged=header != good.header)
        elif kind == "outsider":
            msg = forge(world.host.nodes[0], world.vec, seq=next(world.seqs[0]))
            stranger = Transaction.create(OUTSIDER, **_fields(Transaction.decode(msg.header)))
            deliver(world, node, TxMessage(stranger.encode(), msg.payload, 1, 0), forged=True)
        elif kind == "fields":
            overrides: dict[str, Any] = {
                "created_at": {"created_at": now + when, "expires_at": now + when + 30},
                "expires_at": {"expires_at": now + when},
                "ttl": {"ttl": abs(int(when)) % (2**32)},
                "genesis_hash": {"genesis_hash": bytes(32)},
                "digest": {},
            }[field]
            msg = world.tx(sender, **overrides)
            if field == "digest":  # the payload is not the model the transaction names
                msg = TxMessage(msg.header, world.host.transport.share(world.bad_vec), 1, sender)
            deliver(world, node, msg, forged=field in ("genesis_hash", "digest"))
        elif kind == "hop":
            good = world.tx(sender)
            valid = isinstance(hop, int) and not isinstance(hop, bool) and 0 <= hop <= 10
            deliver(world, node, TxMessage(good.header, good.payload, hop, sender), forged=not valid)
        else:
            deliver(world, node, TxMessage(garbage, garbage, garbage, garbage), forged=True)


def _fields(tx: Transaction) -> dict[str, Any]:
    return {"genesis_hash": tx.genesis_hash, "seq": tx.seq, "created_at": tx.created_at,
            "expires_at": tx.expires_at, "ttl": tx.ttl, "model_digest": tx.model_digest,
            "base_digest": tx.base_digest, "self_score": tx.self_score, "n_samples": tx.n_samples}


# -- receipts ---------------------------------------------------------------------------------------


@SETTINGS
@given(kinds=st.lists(st.sampled_from(["valid", "mutated", "outsider", "range", "types"]),
                      min_size=4, max_size=8),
       mutation=mutations(), garbage=GARBAGE, signer=st.sampled_from([1, 2, 3]),
       score=st.floats(allow_nan=False, allow_infinity=False), hop=st.integers(0, 2**32 - 1),
       ahead=st.floats(0.0, 1e10))
def test_receipts(world: World, kinds: list[str], mutation: Mutation, garbage: Any, signer: int,
                  score: float, hop: int, ahead: float) -> None:
    owner, tx = world.owner, world.own_tx
    assert tx is not None
    now = time.time()
    for kind in kinds:
        ident = world.host.nodes[signer].identity
        if kind == "valid":
            receipt = Receipt.create(ident, tx_id=tx.tx_id, score=0.5, received_at=now, hop=1)
            deliver(world, owner, ReceiptMessage(receipt.encode()), forged=False, valid=True)
        elif kind == "mutated":
            good = Receipt.create(ident, tx_id=tx.tx_id, score=0.5, received_at=now, hop=2).encode()
            data = mutation(good)
            deliver(world, owner, ReceiptMessage(data), forged=data != good)
        elif kind == "outsider":
            receipt = Receipt.create(OUTSIDER, tx_id=tx.tx_id, score=0.5, received_at=now, hop=1)
            deliver(world, owner, ReceiptMessage(receipt.encode()), forged=True)
        elif kind == "range":
            receipt = Receipt.create(ident, tx_id=tx.tx_id, score=score, received_at=now + ahead,
                                     hop=hop)
            # The clock moves on while the test runs: a receipt up to 10 s ahead may pass the
            # 5 s skew check, and only one further ahead must fail it.
            out_of_range = not 0.0 <= score <= 1.0 or hop > 10 or ahead > 10.0
            deliver(world, owner, ReceiptMessage(receipt.encode()), forged=out_of_range)
        else:
            deliver(world, owner, ReceiptMessage(garbage), forged=True)


# -- endorsements -----------------------------------------------------------------------------------


@SETTINGS
@given(kinds=st.lists(st.sampled_from(["request", "requester", "reply", "refusal", "types"]),
                      min_size=4, max_size=8),
       mutation=mutations(), garbage=GARBAGE, requester=GARBAGE, peer=st.sampled_from([1, 2, 3]),
       reason=st.text(max_size=12), signature=st.binary(min_size=64, max_size=64))
def test_endorsements(world: World, kinds: list[str], mutation: Mutation, garbage: Any,
                      requester: Any, peer: int, reason: str, signature: bytes) -> None:
    owner = world.owner
    assert owner.candidate is not None
    block_hash = owner.candidate.hash
    peer_key = world.host.nodes[peer].identity.public_key
    for kind in kinds:
        if kind == "request":  # to a receipt signer, the block altered
            request = world.requests[0]
            data = mutation(request.block)
            deliver(world, world.target, EndorseRequest(data, 0), forged=False)
        elif kind == "requester":
            deliver(world, world.target, EndorseRequest(world.requests[0].block, requester),
                    forged=False)
        elif kind == "reply":  # an endorsement under a peer's key that the peer never made
            forged = OUTSIDER.sign(endorsement_message(block_hash))
            deliver(world, owner, EndorseReply(block_hash, peer_key, forged), forged=True)
            deliver(world, owner, EndorseReply(block_hash, peer_key, signature), forged=True)
        elif kind == "refusal":  # an unsigned or foreign refusal
            deliver(world, owner, EndorseReply(block_hash, peer_key, None, reason),  # type: ignore[arg-type]
                    forged=True)
            foreign = OUTSIDER.sign(refusal_message(block_hash, reason or "x"))
            deliver(world, owner, EndorseReply(block_hash, peer_key, foreign, reason or "x"),
                    forged=True)
        else:
            deliver(world, owner, EndorseReply(garbage, garbage, garbage, garbage), forged=True)
            deliver(world, world.target, EndorseRequest(garbage, garbage), forged=True)
            deliver(world, world.target, garbage, forged=True)


# -- decoders ---------------------------------------------------------------------------------------


def _decoders(world: World) -> Iterator[tuple[Callable[[bytes], object], bytes]]:
    yield Transaction.decode, world.tx().header
    yield Receipt.decode, Receipt.create(world.target.identity, tx_id=bytes(32), score=0.5,
                                         received_at=1.0, hop=1).encode()
    yield Block.decode, world.requests[0].block
    yield (lambda data: Block.read_claims(data, world.target.identity.public_key),
           world.requests[0].block)
    yield Genesis.decode, world.owner.genesis.encode()


@SETTINGS
@given(mutation=mutations(), data=st.binary(max_size=300))
def test_decoders_raise_only_decode_errors(world: World, mutation: Mutation, data: bytes) -> None:
    for decode, good in _decoders(world):
        for candidate in (mutation(good), data):
            CASES["count"] += 1
            with contextlib.suppress(DecodeError):
                decode(candidate)


def test_valid_traffic_still_accepted_after_the_storm(world: World) -> None:
    node = world.target
    deliver(world, node, world.tx(2), forged=False, valid=True)
    assert CASES["count"] >= MIN_CASES, CASES
    rate = CASES["count"] / max(CASES["seconds"], 1e-9)
    print(f"\nfuzz: {CASES['count']} cases, {rate:.0f} per second of handler time")
