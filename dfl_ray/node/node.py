"""The DFL node: a plain class whose state changes only through its event handlers (spec section 5).

`DFLNode` runs the ledger protocol (publish, receive, receipts, sealing, endorsements) and
delegates the learning to its `Learner` (training and scoring) and its `Aggregator` (the
defense rule and momentum). Nothing here imports Ray: a transport carries the messages.
"""

from __future__ import annotations

import heapq
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from dfl_ray.attacks import Attack
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
    check_receipt,
    check_transaction,
    endorse,
    endorsement_message,
    model_digest,
    refusal_message,
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
from dfl_ray.models.flat import ModelSpec
from dfl_ray.node.aggregator import Aggregated, Aggregator, Buffered
from dfl_ray.node.inbound import (
    endorse_reply_fault,
    endorse_request_fault,
    receipt_message_fault,
    tx_message_fault,
)
from dfl_ray.node.learner import Learner, Poison
from dfl_ray.node.memo import CheckMemo
from dfl_ray.node.params import NodeData, NodeParams
from dfl_ray.node.resume import restore, save_checkpoint
from dfl_ray.timing import Stopwatch

TraceRead = tuple[str, int, list[dict[str, float]]]
"""What `DFLNode.trace_rows` returns: (the trace's epoch, how many rows it holds, its rows from
the cursor on)."""


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
        self.data = data
        self.learner = Learner(params, model=model, data=data, initial=initial, scorer=scorer)
        self.aggregator = Aggregator(params, spec=spec, num_classes=data.num_classes,
                                     initial=initial, keep_base=attack is not None,
                                     probe=self.learner.loss)
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
        self.attack_rng = np.random.default_rng([params.seed, params.node_id, 1])

        self.seq = -1
        self.turn = 0
        # For attacks that observe (ALIE, IPM): the honest updates of the last aggregation's
        # buffer, [k, size], colluders' models left out.
        self.observed: np.ndarray | None = None
        # For the trigger scan: the model received at the last aggregation that a found patch
        # read highest, searched on odd turns instead of the own model (see
        # `_refuse_triggered`); not checkpointed.
        self.suspect: np.ndarray | None = None
        self.own_score = 0.0
        self.last_digest = b""
        # tx_id -> expires_at of every transaction seen, forgotten once expired: a copy that
        # arrives later fails the expiry check instead, so the set stays bounded by the
        # expiry window rather than growing for the whole run.
        self.seen: dict[bytes, float] = {}
        self._seen_expiry: list[tuple[float, bytes]] = []
        self.last_seq: dict[bytes, int] = {}
        self.buffer: dict[bytes, Buffered] = {}
        # A creator's model of a round after the buffered one, kept for the next aggregation
        # while the buffered one is of this node's round (see `aggregate`).
        self.ahead: dict[bytes, Buffered] = {}
        self.keep_latest = False
        """Whether to keep each creator's latest model after aggregating it (`latest`; the
        async schedule's `aggregate(reuse=True)` aggregates it again until a newer one comes)."""
        self.latest: dict[bytes, Buffered] = {}
        self.reputations: dict[str, float] = {}
        self.rejected: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        # Staleness of every model aggregated -> how many: own seq minus the model's seq at
        # aggregation (0 when its creator is level or ahead). Always 0 in sync rounds.
        self.staleness: Counter[int] = Counter()
        self.candidate: Block | None = None
        self.awaiting: set[bytes] = set()
        self.endorsements: list[Endorsement] = []
        # A candidate restored from the store, whose endorsement requests go out again.
        self.resend_candidate = False
        self.checkpointed_turn: int | None = None
        self.timer = Stopwatch()
        # With `params.trace`: one row per model aggregated not yet read (`trace_rows`), the
        # first of them row `trace_start` of the trace; not checkpointed, so a node rebuilt
        # after a restart starts a new trace, under a new `trace_epoch`.
        self.trace: list[dict[str, float]] = []
        self.trace_start = 0
        self.trace_epoch = uuid.uuid4().hex

    # ----------------------------------------------------------------- reads

    @property
    def address(self) -> str:
        return self.identity.address

    @property
    def is_attacker(self) -> bool:
        return self.attack is not None and self.attack.name != "none"

    def get_vector(self) -> np.ndarray:
        return self.learner.vector()

    def get_stats(self) -> dict[str, Any]:
        return {
            "node": self.id,
            "attacker": self.is_attacker,
            "rejected": dict(self.rejected),
            "counters": dict(self.counters),
            "seconds": self.timer.snapshot(),
            "height": self.store.height if self.store is not None else -1,
            "reputations": dict(self.reputations),
            "seq": self.seq,
            "staleness": dict(self.staleness),
        }

    def trace_rows(self, epoch: str, cursor: int) -> TraceRead:
        """(this trace's epoch, how many rows it has had, its rows from `cursor` on): the
        aggregation trace a caller reads in parts, passing back what it got. The rows before
        `cursor` are forgotten: the caller has them. A caller that last read another epoch
        (the node was rebuilt since, and its old rows died with the process) gets every row
        held."""
        if epoch == self.trace_epoch and cursor > self.trace_start:
            del self.trace[:cursor - self.trace_start]
            self.trace_start = cursor
        return self.trace_epoch, self.trace_start + len(self.trace), list(self.trace)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Accuracy of the current model on a test set (metrics only, not protocol work)."""
        return self.learner.evaluate(images, labels)

    # ----------------------------------------------------------------- local work

    def checkpoint(self) -> None:
        """Store a signed checkpoint of the node's local state, once per local round."""
        if self.store is None or self.checkpointed_turn == self.turn:
            return
        with self.timer.time("checkpoint"):
            save_checkpoint(self)
        self.checkpointed_turn = self.turn

    def restore(self) -> bool:
        """Resume from the node's store (chain, checkpoint, candidate); False if it is new."""
        restored = restore(self)
        if restored:
            self.checkpointed_turn = self.turn
        return restored

    def train(self) -> None:
        """Local SGD on the node's shard (a free-rider skips it), keeping the start when needed.

        The state it starts from is checkpointed first (once per local round). Training that
        diverges is tried again (counted under `retrained`) and, when it diverges again,
        undone by the learner (counted under `diverged` too).
        """
        self.checkpoint()
        start = self.learner.vector()
        self.aggregator.start_round(start)
        # An adaptive attacker behaves honestly until its attack turns active.
        attack = self.attack if self.attack is not None and self.attack.active(self.turn) else None
        if attack is not None and not attack.trains:
            return
        poison: Poison | None = None
        if attack is None and self.learner.triggers is not None:
            with self.timer.time("scan"):
                found = self.learner.scan(self.suspect if self.turn % 2 else None)
            if found:
                self.counters["trigger_found"] += found
            poison = self.learner.unlearning()
        if attack is not None and attack.poisons_data:
            rng, classes = self.attack_rng, self.data.num_classes

            def poison(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                px, py = attack.poison_batch(x.numpy(), y.numpy(), rng, classes)
                return torch.from_numpy(np.ascontiguousarray(px)), torch.from_numpy(
                    np.ascontiguousarray(py)
                )

        with self.timer.time("train"):
            tries = self.learner.train(start, poison)
        if tries != 1:
            self.counters["retrained"] += 1
        if tries == 0:
            self.counters["diverged"] += 1

    # ----------------------------------------------------------------- publish

    def publish(self) -> None:
        """Sign a transaction for the current model and send it with the payload to every peer."""
        vec = self.learner.vector()
        if self.attack is not None and self.attack.active(self.turn):
            base = self.aggregator.round_base
            assert base is not None  # attackers keep it (set by train())
            vec = np.ascontiguousarray(
                self.attack.poison_model(
                    vec, base, self.attack_rng, self.turn, observed=self.observed,
                    loss=self._attack_oracle() if self.attack.uses_loss else None),
                dtype=np.float32,
            )
        self.turn += 1
        with self.timer.time("score"):
            self.own_score = self.learner.score(vec)
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
        """Hand a message to its handler; anything else is counted as `unknown_message`."""
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
        """Spec 5.3: shape, dedup, then genesis, membership, ranges, signature, time, replay,
        digest, shape/dtype, finiteness; the node changes only once all of them passed."""
        with self.timer.time("ledger"):
            fault = tx_message_fault(msg, self.genesis.ttl)
            if fault is not None:
                self.rejected[fault] += 1
                return
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
                    genesis=self.genesis,
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
            score = self.learner.score(vec)
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
            entry = Buffered(vec, score, tx.seq)
            if previous is not None and previous.seq >= self.seq:
                # The buffered one may be of the round this node aggregates next: keep both.
                self.ahead[tx.creator] = entry
            else:
                self.buffer[tx.creator] = entry
            if self.keep_latest:
                self.latest[tx.creator] = entry
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
        """A peer's signed receipt for one of our transactions: check and keep it for sealing."""
        with self.timer.time("ledger"):
            fault = receipt_message_fault(msg)
            if fault is not None:
                self.rejected[fault] += 1
                return
            try:
                receipt = Receipt.decode(msg.receipt)
                check_receipt(
                    receipt, genesis=self.genesis, now=self.clock(),
                    max_clock_skew=self.params.max_clock_skew_s,
                    verified=receipt.id in self.memo.signed_receipts,  # signed in this process
                )
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
                self.store.add_receipt(receipt, verified=True)  # check_receipt above
            except ValidationError as err:
                known = self.store.has_transaction(receipt.tx_id)
                self.rejected[err.reason if known else "unknown_tx"] += 1
                return
            self.counters["receipts"] += 1

    # ----------------------------------------------------------------- aggregate

    def aggregate(self, max_staleness: int | None = None, *,
                  ages: Mapping[bytes, int] | None = None, decay: float = 0.0,
                  reuse: bool = False) -> bool:
        """Run the defense rule when the buffer holds `buffer_size` models; returns whether it ran.

        A buffered model's staleness is how many local rounds this node has published since
        its creator published it: own seq minus its seq, 0 when the creator is level or ahead
        (every model's is 0 in sync rounds). `ages` (the async schedule's) says, for creators
        it knows, how many own rounds ago the model's creator started it (about when its
        previous model arrived); a model's staleness is then that age less one when smaller: a
        straggler has published fewer rounds than this node, but its model is only as stale as
        its base. With `max_staleness` (the async schedule's bound), staler models are dropped
        first, counted under `stale_dropped`, and do not count towards `buffer_size`. With
        `decay` > 0, a model s rounds stale that the rule accepts as sent is aggregated moved
        towards the own model, to (1 + s) ** -decay of its distance (FedAsync's staleness
        weighting; `Aggregator.aggregate`): it only loses weight. With `reuse` (needs
        `keep_latest`), a creator with no new model since the last aggregation counts with its
        latest one, as stale as it has become (MIFA: Gu et al., "Fast Federated Learning in the
        Presence of Arbitrary Device Unavailability", NeurIPS 2021): a slow creator's data keeps
        its share of every aggregation, and a node that outlives its peers keeps aggregating
        their last models instead of training alone; reused models past `max_staleness` are left
        out without being counted as dropped again.
        """
        def staleness(creator: bytes, seq: int) -> int:
            stale = max(0, self.seq - seq)
            if ages is not None and creator in ages:
                stale = min(stale, max(0, ages[creator] - 1))
            return stale

        # Every model of this node's last published round was built on a base like its own
        # round start. A creator's next model, one round ahead (async), was built on the
        # creator's newer aggregate: aggregated now, it moves this node's next round start a
        # step its peers have not taken, and the defense, which reads every update of that
        # round against it, sees reversed updates less clearly (sign flippers passed dfl_guard's
        # reversal test that way in async runs under load). So a creator's model of this
        # node's round is aggregated now and its next one kept for the next aggregation. A node
        # behind (no model of its round, or a creator further ahead, which bounded staleness
        # never lets a peer it waits for be) takes each creator's newest, to catch up.
        for creator in list(self.ahead):
            if self.buffer[creator].seq != self.seq or self.ahead[creator].seq != self.seq + 1:
                self.buffer[creator] = self.ahead.pop(creator)
        reused = set()
        if reuse:
            for creator, kept in self.latest.items():
                if creator not in self.buffer:
                    self.buffer[creator] = kept
                    reused.add(creator)
        stale_of = {c: staleness(c, b.seq) for c, b in self.buffer.items()}
        if max_staleness is not None:
            stale = [c for c, s in stale_of.items() if s > max_staleness]
            for creator in stale:
                del self.buffer[creator]
            dropped = [c for c in stale if c not in reused]
            if dropped:
                self.counters["stale_dropped"] += len(dropped)
            reused.difference_update(stale)
        if len(self.buffer) < self.params.buffer_size:
            for creator in reused:  # not aggregated: the buffer holds new models only
                del self.buffer[creator]
            return False
        with self.timer.time("aggregate"):
            creators = sorted(self.buffer)  # a fixed order keeps sync runs deterministic
            for creator in creators:
                self.staleness[stale_of[creator]] += 1
            own = self.learner.vector()
            if max_staleness is not None and self._lags(creators, max_staleness):
                # This node is the stale one (a straggler): its model and round start are
                # older than the models it received by more than the bound. Their
                # coordinate-wise median stands in for both (robust while fewer than half of
                # them are an attacker's): measured from its own stale model, every fresh model
                # lay far off, the rule's radius (set by those distances) grew with the lag and
                # let random models in, and the straggler passed the damage on. Its own update
                # is not lost: its published model carries it to its peers.
                rows = np.stack([self.buffer[c].vec for c in creators])
                own = np.median(rows, axis=0).astype(np.float32)
                self.aggregator.start_round(own)
                self.counters["rebased"] += 1
            if self.attack is not None and self.attack.observes:
                self._observe(creators)
            if self.attack is None and self.learner.triggers is not None:
                creators = self._refuse_triggered(creators)
            if not creators:  # every model carried a found trigger: keep the own one
                self.buffer, self.ahead = self.ahead, {}
                self.counters["aggregations"] += 1
                return True
            buffered = [self.buffer[c] for c in creators]
            shrink = [(1.0 + stale_of[c]) ** -decay if decay > 0.0 else 1.0 for c in creators]
            self.counters["decayed"] += sum(1 for f in shrink if f < 1.0)
            result = self.aggregator.aggregate(
                own, self.own_score, creators, buffered, self.reputations, shrink=shrink,
            )
            self.learner.load(result.model)
            self.reputations = result.reputations
            if self.params.trace:
                self._record(creators, result)
            self.buffer = self.ahead
            self.ahead = {}
            self.counters["aggregations"] += 1
            self.counters["accepted_models"] += int(np.count_nonzero(result.weights))
            self.counters["offered_models"] += len(creators)
            if result.step < 1.0:  # the acceptance test cut the step short
                self.counters["accept_shortened"] += 1
            if reused:
                self.counters["reused"] += len(reused)
        return True

    def _record(self, creators: list[bytes], result: Aggregated) -> None:
        """Append one trace row per aggregated model: the rule's weight, the sender's new
        reputation and what the rule measured of the model (`Aggregated.details`)."""
        for i, creator in enumerate(creators):
            row = {"round": float(self.seq), "receiver": float(self.id),
                   "sender": float(self.directory.get(creator, -1)),
                   "weight": float(result.weights[i]),
                   "reputation": float(result.reputations.get(creator.hex(), math.nan))}
            row.update((name, float(values[i])) for name, values in result.details.items())
            self.trace.append(row)

    def _attack_oracle(self) -> Callable[[np.ndarray], float]:
        """What an attacker that reads its own validation split measures a model vector by."""
        assert self.attack is not None
        if self.attack.loss_kind == "trigger_rate":
            return self.learner.trigger_rate(self.attack)
        return self.learner.loss

    def _refuse_triggered(self, creators: list[bytes]) -> list[bytes]:
        """The creators whose buffered model carries no trigger the scan found; the others are
        counted and dropped. A model carries one when a found patch sends at least the refusal
        share of this node's validation images to its class and the scan's `gap` more than
        the median buffered model does (dfl_ray.node.triggers).

        It also keeps the buffered model a found patch reads highest as `suspect`, which the
        next odd turn's scan searches instead of the own model: once the own model has unlearnt
        the backdoor, the colluders' models still carry it, and their trigger drifts away from
        the patch found last; searching what is received keeps the patch on it."""
        triggers = self.learner.triggers
        assert triggers is not None
        self.suspect = None
        if not triggers.found or not creators:
            return creators
        rates = np.stack([self.learner.carried(self.buffer[c].vec) for c in creators])
        self.suspect = self.buffer[creators[int(np.argmax(rates.max(axis=1)))]].vec
        settings = triggers.settings
        limit = np.maximum(settings.refuse, np.median(rates, axis=0) + settings.gap)
        carriers = (rates >= limit).any(axis=1)
        if carriers.any():
            self.counters["trigger_refused"] += int(carriers.sum())
        return [c for c, hit in zip(creators, carriers, strict=True) if not hit]

    def _lags(self, creators: list[bytes], max_staleness: int) -> bool:
        """Whether the median buffered model is more than `max_staleness` rounds ahead of us."""
        seqs = sorted(self.buffer[c].seq for c in creators)
        return seqs[len(seqs) // 2] - self.seq > max_staleness

    def _observe(self, creators: list[bytes]) -> None:
        """Keep the updates of the buffered honest models, for an attacker that observes."""
        base = self.aggregator.round_base
        assert base is not None  # attackers keep it (set by train())
        honest = [self.buffer[c].vec for c in creators
                  if self.directory.get(c) not in self.params.colluders]
        observed = np.empty((len(honest), self.spec.size), dtype=np.float32)
        for row, vec in zip(observed, honest, strict=True):
            np.subtract(vec, base, out=row)
        self.observed = observed

    # ----------------------------------------------------------------- seal

    def seal_block(self) -> bool:
        """Propose a block when enough own transactions carry enough receipts (spec section 4).

        The block is signed now and stored once every receipt signer has answered the
        endorsement request (see `on_endorse_reply`). Returns whether a block was proposed.
        """
        if self.store is None:
            return False
        if self.candidate is not None:
            if self.resend_candidate:  # restored after a restart: ask its endorsers again
                self.resend_candidate = False
                self._request_endorsements(self.candidate.encode())
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
                model_digest_after=model_digest(self.spec.id, self.learner.vector()),
                reputation_digest=reputation_digest(self.reputations),
            )
            signers = {r.receiver for e in entries for r in e.receipts}
            encoded = block.encode()
            # Stored before any request goes out, so a restart can still seal it.
            self.store.put_candidate(block, verified=True)  # made from verified records
        self.candidate, self.awaiting, self.endorsements = block, set(signers), []
        self._request_endorsements(encoded)
        return True

    def _request_endorsements(self, encoded: bytes) -> None:
        with self.timer.time("transport"):
            for signer in sorted(self.awaiting):
                dest = self.directory.get(signer)
                if dest is None:
                    self.awaiting.discard(signer)
                else:
                    self.transport.send(dest, EndorseRequest(encoded, self.id))
        if not self.awaiting:
            self._store_candidate()

    def on_endorse_request(self, msg: EndorseRequest) -> None:
        """Endorse a member's block if every receipt it attributes to us is one we really issued.

        Only a block of this network, signed by its creator, sent by the node that creator
        is, gets an answer: a signed endorsement, or a signed refusal naming the reason.
        """
        with self.timer.time("ledger"):
            fault = endorse_request_fault(msg)
            if fault is not None:
                self.rejected[fault] += 1
                return
            try:
                # Only the receipts naming this node are decoded: they are all it vouches for.
                claims = Block.read_claims(msg.block, self.identity.public_key)
            except DecodeError:
                self.rejected["malformed"] += 1
                return
            if claims.genesis_hash != self.genesis_hash:
                self.rejected["wrong_genesis"] += 1
                return
            if (not self.genesis.is_member(claims.creator)
                    or self.directory.get(claims.creator) != msg.requester):
                self.rejected["unknown_sender"] += 1
                return
            if not claims.creator_signed:
                self.rejected["bad_signature"] += 1
                return
            issued = self.store.issued_receipt_ids() if self.store is not None else set()
            try:
                endorsement = endorse(self.identity, claims, issued)
                reply = EndorseReply(claims.block_hash, endorsement.signer, endorsement.signature)
            except ValidationError as err:
                self.rejected[err.reason] += 1
                reply = EndorseReply(
                    claims.block_hash, self.identity.public_key,
                    self.identity.sign(refusal_message(claims.block_hash, err.reason)), err.reason,
                )
        with self.timer.time("transport"):
            self.transport.send(msg.requester, reply)

    def on_endorse_reply(self, msg: EndorseReply) -> None:
        """An endorsement or a refusal of the candidate block; the awaited set changes only
        once its signature verified, so a forged reply cannot stand in for the real one."""
        with self.timer.time("ledger"):
            fault = endorse_reply_fault(msg)
            if fault is not None:
                self.rejected[fault] += 1
                return
            if self.candidate is None or msg.block_hash != self.candidate.hash:
                self.counters["stale_endorsements"] += 1
                return
            if msg.signer not in self.awaiting:
                self.rejected["unexpected_endorsement"] += 1
                return
            message = (refusal_message(self.candidate.hash, msg.refusal) if msg.refusal
                       else endorsement_message(self.candidate.hash))
            assert msg.signature is not None  # endorse_reply_fault
            if not verify_signature(msg.signer, msg.signature, message):
                self.rejected["bad_endorsement"] += 1
                return
        self.awaiting.discard(msg.signer)
        if msg.refusal:
            self.counters["refused_endorsements"] += 1
        else:
            self.endorsements.append(Endorsement(signer=msg.signer, signature=msg.signature))
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
