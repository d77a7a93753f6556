"""The DFL node: a plain class whose state changes only through its event handlers (spec section 5)."""

from __future__ import annotations

import copy
import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from dfl_ray.attacks import Attack
from dfl_ray.defense import AggregationInput, get_rule, rule_uses_base, rule_uses_head
from dfl_ray.defense.momentum import check_momentum, momentum_step
from dfl_ray.ledger import (
    Block,
    ChainStore,
    DecodeError,
    Endorsement,
    Genesis,
    Identity,
    LedgerError,
    Receipt,
    Transaction,
    ValidationError,
    check_payload,
    check_transaction,
    endorse,
    endorsement_message,
    model_digest,
    reputation_digest,
    select_block_entries,
    verify_signature,
)
from dfl_ray.messages import (
    EndorseReply,
    EndorseRequest,
    Message,
    ReceiptMessage,
    Transport,
    TxMessage,
)
from dfl_ray.models.flat import ModelSpec, model_to_vector, vector_to_model
from dfl_ray.models.training import SGDSettings, evaluate, make_optimizer, train_steps
from dfl_ray.timing import Stopwatch


@dataclass(frozen=True)
class NodeParams:
    """Everything a node needs to know about its role besides its data, model and keys."""

    node_id: int
    peers: tuple[int, ...]
    local_steps: int
    batch_size: int = 64
    sgd: SGDSettings = field(default_factory=SGDSettings)
    rule: str = "dfl_trust"
    rule_params: Mapping[str, float] = field(default_factory=dict)
    buffer_size: int = 4
    momentum: float = 0.0
    """Server momentum applied to the rule's result (dfl_ray.defense.momentum); 0 turns it off."""
    max_clock_skew_s: float = 5.0
    seed: int = 0
    device: str = "cpu"
    colluders: frozenset[int] = frozenset()
    """The other attackers, for an attacker: their models are not taken as honest observations."""


@dataclass(frozen=True)
class NodeData:
    """A node's view of the data: shared training arrays plus its own indices and validation set."""

    images: torch.Tensor
    """uint8 [N, H, W] training images shared by every node of the process (never written)."""
    labels: torch.Tensor
    train_idx: np.ndarray
    val_images: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int = 10


class CheckMemo:
    """Verdicts of receive checks on immutable inputs, shared by the nodes of one process.

    Every node of a host receives the same transactions with the same payloads. Each still runs
    every check of spec 5.3 in order against its own state (genesis, expiry, replay), but the
    two verdicts that depend on the bytes alone are computed once per process: a transaction's
    signature (keyed by its id, the hash of its whole signed encoding) and a payload's digest,
    shape, dtype and finiteness (keyed by the payload handle, whose array is read-only, and the
    digest the transaction claims). A node alone in its process gets a memo of its own, which
    changes nothing. The host calls `forget` after each wave of deliveries, which bounds it.

    Signatures made in the process are recorded too: a node's own transactions (`vouch`) and
    the receipts its nodes issue (`signed_receipts`, by receipt id, the hash of the whole
    signed encoding), so a creator in the same process takes a receipt with that id as
    verified: the same id means the very bytes a node of this process signed.
    """

    def __init__(self) -> None:
        self.signed_ids: set[bytes] = set()
        self.signed_receipts: set[bytes] = set()
        # (id(handle), claimed digest) -> (handle, error or None); the handle is held so that
        # its id cannot be reused by another object while the entry lives.
        self._payloads: dict[tuple[int, bytes], tuple[Any, ValidationError | None]] = {}

    def check_payload(self, handle: Any, tx: Transaction, *, spec_id: bytes, expected_size: int,
                      vec: np.ndarray) -> None:
        """`check_payload` for the array behind `handle`, run once per (handle, claimed digest)."""
        entry = self._payloads.get((id(handle), tx.model_digest))
        error = (entry[1] if entry is not None
                 else self._record(handle, tx, spec_id=spec_id, expected_size=expected_size,
                                   vec=vec))
        if error is not None:
            raise error

    def vouch(self, handle: Any, tx: Transaction, *, spec_id: bytes, expected_size: int,
              vec: np.ndarray, digest: bytes) -> None:
        """Record the verdict on a payload this process has just hashed itself to `digest`.

        The publisher's peers in this process then skip hashing it again; every other check
        of `check_payload` runs here, and a failing one is recorded for them to count.
        """
        self.signed_ids.add(tx.tx_id)  # signed by a node of this process just now
        self._record(handle, tx, spec_id=spec_id, expected_size=expected_size, vec=vec,
                     known_digest=digest)

    def _record(self, handle: Any, tx: Transaction, *, spec_id: bytes, expected_size: int,
                vec: np.ndarray, known_digest: bytes | None = None) -> ValidationError | None:
        """Run `check_payload` once and keep its verdict (None: passed) for the handle."""
        error: ValidationError | None = None
        try:
            check_payload(tx, spec_id=spec_id, expected_size=expected_size, vec=vec,
                          known_digest=known_digest)
        except ValidationError as err:
            error = err
        self._payloads[(id(handle), tx.model_digest)] = (handle, error)
        return error

    def forget(self) -> None:
        self.signed_ids.clear()
        self.signed_receipts.clear()
        self._payloads.clear()


@dataclass
class Buffered:
    vec: np.ndarray
    score: float
    seq: int


class DFLNode:
    """One DFL peer: trains, publishes, receives, scores, aggregates and seals its own chain.

    Handlers check everything first and change state second: a rejected message is counted under
    its reason and leaves the node as it was.
    """

    def __init__(
        self,
        params: NodeParams,
        *,
        identity: Identity,
        genesis: Genesis,
        spec: ModelSpec,
        initial: np.ndarray,
        model: nn.Module,
        data: NodeData,
        transport: Transport,
        directory: Mapping[bytes, int],
        store: ChainStore | None = None,
        attack: Attack | None = None,
        scorer: nn.Module | None = None,
        clock: Callable[[], float] = time.time,
        memo: CheckMemo | None = None,
    ) -> None:
        if spec.size != len(initial):
            raise ValueError(f"initial model has {len(initial)} values, spec needs {spec.size}")
        self.params = params
        self.id = params.node_id
        self.identity = identity
        self.genesis = genesis
        self.genesis_hash = genesis.hash
        self.spec = spec
        self.model = model.to(params.device)
        vector_to_model(initial, self.model)
        self.optimizer = make_optimizer(self.model, params.sgd)
        # Received models are scored in a scratch model so the own model is never disturbed.
        self.scorer = (scorer if scorer is not None else copy.deepcopy(model)).to(params.device)
        self.data = data
        self.transport = transport
        # Read-only, so one table can serve every node of a process: a copy per node would
        # cost memory quadratic in the network size.
        self.directory: Mapping[bytes, int] = (
            directory if isinstance(directory, MappingProxyType) else MappingProxyType(dict(directory))
        )
        self.store = store
        self.attack = attack
        self.clock = clock
        self.memo = memo if memo is not None else CheckMemo()
        self.rule = get_rule(params.rule)
        self.rule_uses_base = rule_uses_base(params.rule, params.rule_params)
        self.keeps_base = self.rule_uses_base or attack is not None
        # The output layer (its weights and bias, the model's last two tensors; the bias alone
        # when the weights are not [classes, hidden]), for rules that read the classifier's
        # update; they then get its round-start values instead of a whole base.
        classes = data.num_classes
        shapes = [tuple(shape) for shape in spec.shapes]
        self.head: slice | None = None
        self.head_classes: int | None = None
        if shapes and shapes[-1] == (classes,):
            n = classes
            if len(shapes) >= 2 and len(shapes[-2]) == 2 and shapes[-2][0] == classes:
                n += classes * shapes[-2][1]
                self.head_classes = classes
            self.head = slice(spec.size - n, spec.size)
        self.keeps_head = self.head is not None and rule_uses_head(params.rule, params.rule_params)
        self.round_head: np.ndarray | None = None
        self.rng = np.random.default_rng([params.seed, params.node_id])
        self.attack_rng = np.random.default_rng([params.seed, params.node_id, 1])

        self.seq = -1
        self.turn = 0
        # The model before the latest local training: kept only for attacks (they publish a
        # function of it) and rules that compare update directions; others keep no second copy.
        self.round_base: np.ndarray | None = None
        # For attacks that observe (ALIE, IPM): the honest updates of the last aggregation's
        # buffer, [k, size], colluders' models left out.
        self.observed: np.ndarray | None = None
        self.momentum = check_momentum(params.momentum)
        # With momentum: the model the node left its last aggregation with, and the velocity.
        self.anchor: np.ndarray | None = None
        self.velocity: np.ndarray | None = None
        if self.momentum > 0.0:
            self.anchor = np.array(initial, dtype=np.float32)
            self.velocity = np.zeros_like(self.anchor)
        self.own_score = 0.0
        self.last_digest = b""
        # tx_id -> expires_at of every transaction seen, forgotten once expired: a copy that
        # arrives later fails the expiry check instead, so the set stays bounded by the
        # expiry window rather than growing for the whole run.
        self.seen: dict[bytes, float] = {}
        self._seen_expiry: list[tuple[float, bytes]] = []
        self.last_seq: dict[bytes, int] = {}
        self.buffer: dict[bytes, Buffered] = {}
        self.reputations: dict[str, float] = {}
        self.rejected: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.candidate: Block | None = None
        self.awaiting: set[bytes] = set()
        self.endorsements: list[Endorsement] = []
        self.timer = Stopwatch()

    # ----------------------------------------------------------------- reads

    @property
    def address(self) -> str:
        return self.identity.address

    @property
    def is_attacker(self) -> bool:
        return self.attack is not None and self.attack.name != "none"

    def get_vector(self) -> np.ndarray:
        return model_to_vector(self.model)

    def get_stats(self) -> dict[str, Any]:
        return {
            "node": self.id,
            "attacker": self.is_attacker,
            "rejected": dict(self.rejected),
            "counters": dict(self.counters),
            "seconds": self.timer.snapshot(),
            "height": self.store.height if self.store is not None else -1,
            "reputations": dict(self.reputations),
        }

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Accuracy of the current model on a test set (metrics only, not protocol work)."""
        return evaluate(self.model, images, labels, batch_size=256, device=self.params.device)

    # ----------------------------------------------------------------- local work

    def train(self) -> None:
        """Local SGD on the node's shard (a free-rider skips it), keeping the start when needed.

        Training that diverges (a NaN or infinite weight, as SGD can reach from a model that
        aggregation has pushed far off) is undone: the node goes back to its round-start model
        with fresh optimizer state, counts it under `diverged`, and carries on.
        """
        start = model_to_vector(self.model)
        if self.keeps_base:
            self.round_base = start
        if self.keeps_head:
            assert self.head is not None  # keeps_head needs it
            self.round_head = start[self.head].copy()  # a few values, not a view of the whole
        # An adaptive attacker behaves honestly until its attack turns active.
        attack = self.attack if self.attack is not None and self.attack.active(self.turn) else None
        if attack is not None and not attack.trains:
            return
        poison = None
        if attack is not None and attack.poisons_data:
            rng, classes = self.attack_rng, self.data.num_classes

            def poison(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                px, py = attack.poison_batch(x.numpy(), y.numpy(), rng, classes)
                return torch.from_numpy(np.ascontiguousarray(px)), torch.from_numpy(
                    np.ascontiguousarray(py)
                )

        with self.timer.time("train"):
            train_steps(
                self.model,
                self.optimizer,
                self.data.images,
                self.data.labels,
                indices=self.data.train_idx,
                batch_size=self.params.batch_size,
                steps=self.params.local_steps,
                rng=self.rng,
                device=self.params.device,
                poison=poison,
            )
            with torch.no_grad():
                # A sum is finite only if every weight is (a NaN or inf anywhere propagates).
                finite = bool(torch.isfinite(
                    torch.stack([p.sum() for p in self.model.parameters()])).all())
            if not finite:
                vector_to_model(start, self.model)
                self.optimizer = make_optimizer(self.model, self.params.sgd)
                self.counters["diverged"] += 1

    def publish(self) -> None:
        """Sign a transaction for the current model and send it with the payload to every peer."""
        vec = model_to_vector(self.model)
        if self.attack is not None and self.attack.active(self.turn):
            assert self.round_base is not None  # set by train()
            vec = np.ascontiguousarray(
                self.attack.poison_model(vec, self.round_base, self.attack_rng, self.turn,
                                         observed=self.observed),
                dtype=np.float32,
            )
        self.turn += 1
        with self.timer.time("score"):
            self.own_score = self._score_vector(vec)
        now = self.clock()
        with self.timer.time("ledger"):
            digest = model_digest(self.spec.id, vec)
            tx = Transaction.create(
                self.identity,
                genesis_hash=self.genesis_hash,
                seq=self.seq + 1,
                created_at=now,
                expires_at=now + self.genesis.expiry_s,
                ttl=self.genesis.ttl,
                model_digest=digest,
                base_digest=self.last_digest,
                self_score=float(self.own_score),
                n_samples=int(len(self.data.train_idx)),
            )
            header = tx.encode()
            if self.store is not None:
                with self.store.batch():
                    self.store.add_own_transaction(tx, verified=True)  # signed just above
                    if self.store.keep_payloads != 0:
                        self.store.put_payload(digest, vec, verified=True)  # hashed just above
            self._forget_expired(now)
        self.seq += 1
        self.last_digest = digest
        self._remember(tx.tx_id, tx.expires_at)
        self.counters["published"] += 1
        with self.timer.time("transport"):
            handle = self.transport.share(vec)
        with self.timer.time("ledger"):
            self.memo.vouch(handle, tx, spec_id=self.spec.id, expected_size=self.spec.size,
                            vec=vec, digest=digest)
        with self.timer.time("transport"):
            for peer in self.params.peers:
                self.transport.send(peer, TxMessage(header, handle, 1, self.id))

    def _remember(self, tx_id: bytes, expires_at: float) -> None:
        self.seen[tx_id] = expires_at
        heapq.heappush(self._seen_expiry, (expires_at, tx_id))

    def _forget_expired(self, now: float) -> None:
        heap = self._seen_expiry
        while heap and heap[0][0] < now:
            _, tx_id = heapq.heappop(heap)
            self.seen.pop(tx_id, None)

    def _score_vector(self, vec: np.ndarray) -> float:
        vector_to_model(vec, self.scorer)
        return evaluate(
            self.scorer, self.data.val_images, self.data.val_labels, batch_size=256,
            device=self.params.device,
        )

    # ----------------------------------------------------------------- receive

    @contextmanager
    def ledger_batch(self) -> Iterator[None]:
        """Group the store writes made inside into one SQLite transaction (one commit).

        The commit is timed as ledger work. An exception inside undoes the group's store
        writes and propagates: handlers never raise for bad input (they count it), so this
        only happens on a bug, which ends the run.
        """
        if self.store is None:
            yield
            return
        batch = self.store.batch()
        with self.timer.time("ledger"):
            batch.__enter__()
        try:
            yield
        except BaseException as exc:
            batch.__exit__(type(exc), exc, exc.__traceback__)
            raise
        with self.timer.time("ledger"):
            batch.__exit__(None, None, None)

    def on_messages(self, messages: Iterable[Message]) -> None:
        """Handle messages in order, their ledger writes grouped into one commit."""
        with self.ledger_batch():
            for message in messages:
                self.on_message(message)

    def on_message(self, message: Message) -> None:
        if isinstance(message, TxMessage):
            self.on_transaction(message)
        elif isinstance(message, ReceiptMessage):
            self.on_receipt(message)
        elif isinstance(message, EndorseRequest):
            self.on_endorse_request(message)
        elif isinstance(message, EndorseReply):
            self.on_endorse_reply(message)
        else:
            self.rejected["unknown_message"] += 1

    def on_transaction(self, msg: TxMessage) -> None:
        """Spec 5.3: dedup, then genesis, signature, time, replay, digest, shape/dtype, finiteness."""
        with self.timer.time("ledger"):
            try:
                # A duplicate is dropped on the id alone; decoding waits for a new transaction.
                tx_id = Transaction.id_of(msg.header)
                if tx_id in self.seen:
                    self.counters["duplicates"] += 1
                    return
                tx = Transaction.decode(msg.header)
            except DecodeError:
                self.rejected["malformed"] += 1
                return
            try:
                check_transaction(
                    tx,
                    genesis_hash=self.genesis_hash,
                    now=self.clock(),
                    last_seq=self.last_seq.get(tx.creator),
                    max_clock_skew=self.params.max_clock_skew_s,
                    signed_ids=self.memo.signed_ids,
                )
            except ValidationError as err:
                self.rejected[err.reason] += 1
                return
        with self.timer.time("transport"):
            try:
                vec = self.transport.fetch(msg.payload)
            except Exception:  # a lost or foreign payload handle is the sender's fault, not ours
                self.rejected["payload_unavailable"] += 1
                return
        with self.timer.time("ledger"):
            try:
                self.memo.check_payload(
                    msg.payload, tx, spec_id=self.spec.id, expected_size=self.spec.size, vec=vec
                )
            except ValidationError as err:
                self.rejected[err.reason] += 1
                return
        # Accepted: from here on the node's state changes.
        self._remember(tx_id, tx.expires_at)
        self.last_seq[tx.creator] = tx.seq
        self.counters["accepted"] += 1
        with self.timer.time("score"):
            score = self._score_vector(vec)
        with self.timer.time("ledger"):
            receipt = Receipt.create(
                self.identity, tx_id=tx_id, score=score, received_at=self.clock(), hop=msg.hop
            )
            self.memo.signed_receipts.add(receipt.id)
            if self.store is not None:
                self.store.add_issued_receipt(receipt, verified=True)  # signed just above
            receipt_bytes = receipt.encode()
        previous = self.buffer.get(tx.creator)
        if previous is None or previous.seq < tx.seq:
            self.buffer[tx.creator] = Buffered(vec, score, tx.seq)
        with self.timer.time("transport"):
            creator = self.directory.get(tx.creator)
            if creator is not None:
                self.transport.send(creator, ReceiptMessage(receipt_bytes))
            if msg.hop < tx.ttl:
                forward = TxMessage(msg.header, msg.payload, msg.hop + 1, self.id)
                for peer in self.params.peers:
                    if peer != msg.sender and peer != creator:
                        self.transport.send(peer, forward)

    def on_receipt(self, msg: ReceiptMessage) -> None:
        """A peer's signed receipt for one of our transactions: verify and keep it for sealing."""
        with self.timer.time("ledger"):
            try:
                receipt = Receipt.decode(msg.receipt)
                if receipt.id not in self.memo.signed_receipts:  # else signed in this process
                    receipt.verify()
            except DecodeError:
                self.rejected["malformed"] += 1
                return
            except ValidationError as err:
                self.rejected[err.reason] += 1
                return
            if self.store is None:
                self.counters["receipts"] += 1
                return
            try:
                # The store checks the transaction is an own one in the same statement as the
                # insert; why it refused is looked up only then.
                self.store.add_receipt(receipt, verified=True)  # receipt.verify() above
            except ValidationError as err:
                known = self.store.has_transaction(receipt.tx_id)
                self.rejected[err.reason if known else "unknown_tx"] += 1
                return
            self.counters["receipts"] += 1

    # ----------------------------------------------------------------- aggregate

    def aggregate(self) -> bool:
        """Run the defense rule when the buffer holds `buffer_size` models; returns whether it ran."""
        if len(self.buffer) < self.params.buffer_size:
            return False
        with self.timer.time("aggregate"):
            creators = sorted(self.buffer)  # a fixed order keeps sync runs deterministic
            own = model_to_vector(self.model)
            inp = AggregationInput(
                own=own,
                own_score=float(self.own_score),
                models=tuple(self.buffer[c].vec for c in creators),
                senders=tuple(c.hex() for c in creators),
                scores=np.array([self.buffer[c].score for c in creators], dtype=np.float64),
                reputations=self.reputations,
                base=self.round_base if self.rule_uses_base else None,
                head=self.head,
                head_classes=self.head_classes,
                head_base=self.round_head,
                # Every buffered row passed check_payload (finiteness included) on receipt.
                checked_rows=True,
            )
            if self.attack is not None and self.attack.observes:
                self._observe(creators)
            result = self.rule(inp, self.params.rule_params)
            model = result.model
            if self.anchor is not None and self.velocity is not None:
                model = momentum_step(self.anchor, model, self.velocity, self.momentum)
                self.anchor = model
            vector_to_model(model, self.model)
            self.reputations = dict(result.reputations)
            self.buffer.clear()
            self.counters["aggregations"] += 1
            self.counters["accepted_models"] += int(np.count_nonzero(result.weights))
            self.counters["offered_models"] += len(creators)
        return True

    def _observe(self, creators: list[bytes]) -> None:
        """Keep the updates of the buffered honest models, for an attacker that observes."""
        assert self.round_base is not None  # attackers keep it (set by train())
        honest = [self.buffer[c].vec for c in creators
                  if self.directory.get(c) not in self.params.colluders]
        observed = np.empty((len(honest), self.spec.size), dtype=np.float32)
        for row, vec in zip(observed, honest, strict=True):
            np.subtract(vec, self.round_base, out=row)
        self.observed = observed

    # ----------------------------------------------------------------- seal

    def seal_block(self) -> bool:
        """Propose a block when enough own transactions carry enough receipts (spec section 4).

        The block is signed now and stored once every receipt signer has answered the
        endorsement request (see `on_endorse_reply`). Returns whether a block was proposed.
        """
        if self.store is None or self.candidate is not None:
            return False
        with self.timer.time("ledger"):
            if self.store.pending_count() < self.genesis.block_size:
                return False  # cannot fill a block yet; skip decoding the pending records
            entries = select_block_entries(
                self.store.pending_transactions(),
                n_peers=len(self.params.peers),
                block_size=self.genesis.block_size,
            )
            if entries is None:
                return False
            tip = self.store.tip()
            block = Block.create(
                self.identity,
                height=self.store.height + 1,
                prev_hash=tip.hash if tip is not None else self.genesis_hash,
                genesis_hash=self.genesis_hash,
                created_at=self.clock(),
                entries=entries,
                model_digest_after=model_digest(self.spec.id, model_to_vector(self.model)),
                reputation_digest=reputation_digest(self.reputations),
            )
            signers = {r.receiver for e in entries for r in e.receipts}
            encoded = block.encode()
        self.candidate, self.awaiting, self.endorsements = block, set(signers), []
        with self.timer.time("transport"):
            for signer in sorted(signers):
                dest = self.directory.get(signer)
                if dest is None:
                    self.awaiting.discard(signer)
                else:
                    self.transport.send(dest, EndorseRequest(encoded, self.id))
        if not self.awaiting:
            self._store_candidate()
        return True

    def on_endorse_request(self, msg: EndorseRequest) -> None:
        """Endorse a peer's block if every receipt it attributes to us is one we really issued."""
        with self.timer.time("ledger"):
            try:
                # Only the receipts naming this node are decoded: they are all it vouches for.
                claims = Block.read_claims(msg.block, self.identity.public_key)
            except DecodeError:
                self.rejected["malformed"] += 1
                return
            issued = self.store.issued_receipt_ids() if self.store is not None else set()
            try:
                endorsement = endorse(self.identity, claims, issued)
                reply = EndorseReply(claims.block_hash, endorsement.signer, endorsement.signature)
            except ValidationError as err:
                self.rejected[err.reason] += 1
                reply = EndorseReply(
                    claims.block_hash, self.identity.public_key, None, err.reason
                )
        with self.timer.time("transport"):
            self.transport.send(msg.requester, reply)

    def on_endorse_reply(self, msg: EndorseReply) -> None:
        if self.candidate is None or msg.block_hash != self.candidate.hash:
            self.counters["stale_endorsements"] += 1
            return
        if msg.signer not in self.awaiting:
            self.rejected["unexpected_endorsement"] += 1
            return
        self.awaiting.discard(msg.signer)
        with self.timer.time("ledger"):
            valid = msg.signature is not None and verify_signature(
                msg.signer, msg.signature, endorsement_message(self.candidate.hash)
            )
        if valid:
            assert msg.signature is not None
            self.endorsements.append(Endorsement(signer=msg.signer, signature=msg.signature))
        elif msg.signature is not None:
            self.rejected["bad_endorsement"] += 1
        else:
            self.counters["refused_endorsements"] += 1
        if not self.awaiting:
            self._store_candidate()

    def finish_sealing(self) -> None:
        """Store the candidate with the endorsements received so far (a peer may never answer)."""
        if self.candidate is not None:
            self._store_candidate()

    def _store_candidate(self) -> None:
        assert self.candidate is not None and self.store is not None
        with self.timer.time("ledger"):
            endorsements = tuple(sorted(self.endorsements, key=lambda e: e.signer))
            try:
                # Every signature in it was made or verified by this node: its own, its
                # transactions', the receipts' when they were stored, the endorsements' on reply.
                self.store.append_block(
                    self.candidate.with_endorsements(endorsements), verified=True
                )
                self.counters["blocks"] += 1
            except LedgerError as err:  # the store is unchanged; count it and move on
                self.rejected[f"own_block_{getattr(err, 'reason', 'rejected')}"] += 1
            finally:
                self.candidate, self.awaiting, self.endorsements = None, set(), []
