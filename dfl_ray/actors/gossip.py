"""The asynchronous schedule of one process: its nodes train, publish, receive, aggregate and seal
on their own, as the original DFL ran (spec section 5), with stragglers if asked.

Plain Python (no Ray inside): `NodeHost` runs a `GossipLoop` in a thread of its actor and sends
what the loop hands it to the other host actors; tests join two loops directly and step them by
hand. One thread alone touches the nodes (the loop's); other threads hand it messages (`push`)
and requests (`call`), so the node classes need no locks.

Pacing. Left free, nodes run their rounds as fast as their shards allow. A local round is an
epoch of the node's shard, and Dirichlet shards differ many times over in size, so the small
ones finish their rounds while the large ones have run a few: the models they exchange are built
on bases many rounds apart, the defense (which compares models with the receiver's own) rejects
most of them, and accuracy stays far below the sync schedule's (docs/results.md). So a node
starts its next local round only once the peers it waits for have published the round it has
just published, less `slack` rounds: bounded staleness (Ho et al., "More Effective Distributed
ML via a Stale Synchronous Parallel Parameter Server", NeurIPS 2013), decided by each node from
what it has received, with no barrier and no coordinator.

It does not wait for stragglers. Each round it measures the typical round: the time from its own
round start until two thirds of the peers it knows, rounded up (all but one of those it waits
for, when fewer are left), had published that round, or its own training, if longer. That is how
long the peers take to train once a round begins, which waiting for a straggler does not
lengthen (periods between publications would: once all wait for a straggler, every peer's period
is the straggler's), as long as at most a third of the peers are stragglers: four among nine
that are only slower set everyone's pace (a known limit, tested). A quorum of three quarters let
three stragglers among nine set it (docs/results.md, "Stragglers"). The quorum is a share of
every peer it knows, not only of those it still waits for: a straggler left out must not make
the quorum, and so the typical round, shorter, or the next slowest peer (a large shard) would
look late in its turn and drift away. A late peer is waited for while it publishes a round at
least every `patience` typical rounds, so a peer that is only slower (a larger shard, up to
`patience` times the typical round), or held up a moment by its machine, keeps the pace it sets.
One that has published nothing for that long is not waited for that round; late that way in two
waits in a row, it is a straggler, not waited for until it catches up, or until it keeps the
typical pace again at most `patience` rounds behind (a peer held up for a while, a restarted
one). While its quorum has not published but half its peers have, `SILENT` times the time that
half took stands in for the typical round: more than a third of the peers silent are left out
after two such waits (three stragglers among nine that published nothing stalled the others,
with a quorum of three quarters, in a measured run before this rule). Before half its peers are
in, a node waits without a deadline. A node restored after a restart may never hear from peers
that finished while it was down: while its quorum has not published, the last typical round it
measured stands in, or its own training when it measured none, so it never waits without a
deadline.

Level rounds. A peer one round ahead may publish its next model before a node aggregates the
current round; that model waits for the node's next aggregation, so every aggregation takes each
peer's model of the node's own round and round starts stay level across nodes (the defense reads
updates against the round start; `DFLNode.aggregate`).

Staleness. A straggler's models are built on a base as old as its slow round, not as old as its
round number says (it has published fewer rounds than its peers, not older ones). So a node
judges each buffered model by its base: the own rounds since its creator's previous model
arrived (the creator aggregated and started the new model about then), less one, or the
round-number staleness if smaller (`DFLNode.aggregate`). Models staler than `max_staleness`
are left out; the others count with a weight that decays with their staleness, as in FedAsync
(Xie, Koyejo, Gupta, "Asynchronous Federated Optimization", 2019): a model s rounds stale that
the defense accepts as it was sent is moved towards the node's own model, to (1 + s) **
-`STALENESS_DECAY` of its distance. Claiming to be slow buys an attacker nothing: its models
only lose weight. (Moved before the defense saw them, stale near-zero models came within
dfl_guard's radius and were let in: docs/results.md, "Stragglers".)

Reuse. A model aggregated once would otherwise be gone: a straggler publishing every few rounds
would weigh in one aggregation in several, and the classes only its shard holds fade from its
peers' models; a node that outlives its peers (the largest shard, behind them) would train alone
once they finished. So at the end of each wait a node also aggregates, for every peer with no
new model, that peer's latest one, as stale as it has become (MIFA, Gu et al., NeurIPS 2021;
`reuse`, `DFLNode.aggregate`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any, TypeVar

from dfl_ray.messages import Message
from dfl_ray.node.group import NodeGroup
from dfl_ray.node.node import DFLNode

Batch = list[tuple[int, Message]]
"""(destination node id, message) pairs."""


T = TypeVar("T")

QUORUM = Fraction(2, 3)
"""Share of the peers a node knows (rounded up) whose publication of a round times its typical
round."""

PACE_ROUNDS = 2
"""A straggler runs this many rounds at full speed and times them before it slows down."""

SILENT = 4
"""While its quorum has not published, a node takes SILENT x the time half its peers took for
the typical round: peers that slow are silent, not slower."""

STALENESS_DECAY = 0.5
"""A model s rounds stale is aggregated at (1 + s) ** -STALENESS_DECAY of its distance from the
receiver's own model (FedAsync's polynomial staleness function)."""


class Phase(Enum):
    TRAIN = "train"
    """Next: a local round (train, then publish or hold)."""
    HOLD = "hold"
    """A straggler's trained model waits until `hold_until`, then is published."""
    WAIT = "wait"
    """Published; waits for its peers' models of that round, then aggregates."""
    FINISHED = "finished"
    """Its rounds are run; it answers its peers and aggregates full buffers until stopped."""


@dataclass
class NodeState:
    """Where one node stands in its own loop, kept apart from its protocol state (`DFLNode`).

    A straggler (`slowdown` k > 1) runs its first `PACE_ROUNDS` rounds at full speed and times
    them (P seconds a round: training, waiting for its peers, aggregating, as every node runs
    them); after that it publishes a round every k x P: it holds each trained model until
    k x P after its last publication. With no timing rounds (`GossipLoop.pace_rounds` 0) it
    holds each for (k - 1) x the busy seconds of its work since its last publication
    (scoring, aggregation, ledger work, the training) instead. Two timings that looked
    simpler failed on a machine shared by ten nodes (docs/results.md, "Stragglers"): k times
    its own busy seconds left it under 2 x slower than its peers, whose rounds are mostly
    waiting, and k times its peers' periods as it heard them grew without bound, since peers
    that wait for it slow down. While it holds it still receives, scores, issues receipts and
    endorses, but does not aggregate: its models reach its peers built on a model k rounds old.
    """

    node_id: int
    rounds: int
    """Local rounds to run."""
    slowdown: float = 1.0
    phase: Phase = Phase.TRAIN
    done: int = 0
    """Local rounds published."""
    round_start: float = 0.0
    """Loop-clock time its current local round began."""
    compute_s: float = 0.0
    """Seconds its last local training took."""
    busy_mark: float | None = None
    """The node's busy seconds (`Stopwatch.busy`) at its last publication (a straggler's)."""
    timed_from: tuple[int, float] | None = None
    """A straggler's rounds published and the loop-clock time when it began timing its pace."""
    pace: float | None = None
    """A straggler's seconds per round at full speed (round start to round start), once timed."""
    published_at: float = 0.0
    """Loop-clock time of its last publication."""
    hold_until: float | None = None
    quorum_at: float | None = None
    """When the quorum (`QUORUM` of the peers it waits for) had published its current round
    (WAIT)."""
    half_at: float | None = None
    """When half the peers it knows had published its current round (WAIT)."""
    deadline: float | None = None
    """When it stops waiting for the peers still missing (WAIT, once `quorum_at` or
    `half_at` is known)."""
    stragglers: set[bytes] = field(default_factory=set)
    """Peers it does not wait for, until they catch up."""
    excused: set[bytes] = field(default_factory=set)
    """Late peers it stopped waiting for in the current wait, not (yet) stragglers."""
    misses: dict[bytes, int] = field(default_factory=dict)
    """Each peer's waits in a row that it missed its deadline in."""
    typical_s: float | None = None
    """The last typical round measured."""
    heard: dict[bytes, tuple[int, float]] = field(default_factory=dict)
    """Each peer's latest round and when this node first saw it (loop clock)."""
    period: dict[bytes, float] = field(default_factory=dict)
    """Each peer's seconds per round between its last two rounds seen."""
    heard_at: dict[bytes, int] = field(default_factory=dict)
    """This node's seq when it first saw each peer's latest round."""
    based_at: dict[bytes, int] = field(default_factory=dict)
    """This node's seq when it first saw each peer's round before its latest: about when the
    peer started the model of its latest round."""
    waited_s: float = 0.0
    """Seconds spent in WAIT in total."""
    gave_up: int = 0
    """Waits ended by patience (peers marked as stragglers)."""
    short: int = 0
    """Waits ended with fewer than `buffer_size` models buffered: no aggregation."""


class GossipLoop:
    """Runs the nodes of one `NodeGroup` on their own until stopped.

    Each pass (`step`) answers the requests waiting (evaluation, statistics), hands every
    received message to its node, moves each node on (a held model published, a wait ended by
    its peers' models and followed by an aggregation once the buffer holds `buffer_size`
    models), lets every node propose a block once it can, then runs one local round of the node
    furthest behind. Messages for nodes of other processes go to `send`. A node that has run
    its rounds keeps answering its peers, and aggregates whenever its buffer fills, until the
    loop stops; `wind_down` ends the rounds of the nodes still running (stragglers).

    `slack` < 0 turns the pacing off: a node aggregates whenever its buffer is full between its
    rounds and never waits (the original's free-running schedule).
    """

    def __init__(self, group: NodeGroup, *, rounds: int, send: Callable[[Batch], None],
                 slowdown: Mapping[int, float] | None = None, max_staleness: int | None = None,
                 slack: int = 0, patience: float = 2.0, reuse: bool = True,
                 pace_rounds: int = PACE_ROUNDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.group = group
        self.send = send
        self.max_staleness = max_staleness
        self.slack = slack
        self.patience = patience
        self.reuse = reuse
        self.pace_rounds = pace_rounds
        """Rounds a straggler runs at full speed to time its pace (0: k x its busy seconds)."""
        self.clock = clock
        for node in group.nodes.values():
            node.keep_latest = reuse
        slow = slowdown or {}
        self.states = {n: NodeState(n, rounds, float(slow.get(n, 1.0))) for n in group.nodes}
        # The peers each node waits for: its direct peers, and every creator it has heard from.
        self._keys = {n: {k for k, i in node.directory.items() if i in node.params.peers}
                      for n, node in group.nodes.items()}
        self._sealed_at: dict[int, tuple[int, int, bool]] = {}
        self.handled = 0
        """Received batches handed to the nodes so far."""
        self.idle = False
        """True while the loop waits with nothing to do (read by other threads)."""
        self._cond = threading.Condition()
        self._inbox: deque[Batch] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._winding_down = False
        self._stopping = False
        self._thread: int | None = None

    # ------------------------------------------------------------ any thread

    def push(self, batch: Batch) -> None:
        """Messages from another process, handled by the loop in the order pushed."""
        with self._cond:
            self._inbox.append(batch)
            self._cond.notify()

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()` run by the loop between two passes (directly when the loop is not running)."""
        with self._cond:
            direct = self._thread is None or self._thread == threading.get_ident()
            if not direct:
                future: Future[T] = Future()
                self._calls.append((fn, future))
                self._cond.notify()
        return fn() if direct else future.result()

    def wind_down(self) -> None:
        """No more local rounds: held models are published and every node finishes."""
        with self._cond:
            self._winding_down = True
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def progress(self) -> dict[int, dict[str, Any]]:
        """Each node's rounds published, phase, and seconds waited for its peers."""
        return {n: {"rounds": s.done, "finished": s.phase is Phase.FINISHED,
                    "waited_s": s.waited_s, "stragglers": len(s.stragglers),
                    "gave_up": s.gave_up, "short": s.short}
                for n, s in self.states.items()}

    # ------------------------------------------------------------ the loop's thread

    def run(self) -> None:
        """Run passes until `stop`, waiting while there is nothing to do; from one thread only."""
        with self._cond:
            self._thread = threading.get_ident()
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                if not self.step():
                    self._wait()
        finally:
            with self._cond:
                self._thread = None
                calls = list(self._calls)
                self._calls.clear()
            self._answer(calls)  # requests that came in as the loop ended

    def step(self) -> bool:
        """One pass; returns whether there was anything to do."""
        with self._cond:
            calls = list(self._calls)
            self._calls.clear()
            batches = list(self._inbox)
            self._inbox.clear()
            winding_down = self._winding_down
        self._answer(calls)
        if batches:
            self._deliver([m for batch in batches for m in batch])
            self.handled += len(batches)
        moved = self._advance(winding_down)
        if batches or moved:
            self._settle()
        trained = False
        if not winding_down:
            ready = [s for s in self.states.values() if s.phase is Phase.TRAIN]
            if ready:
                self._local_round(min(ready, key=lambda s: (s.done, s.node_id)))
                trained = True
        return bool(calls or batches or moved or trained)

    def _answer(self, calls: list[tuple[Callable[[], Any], Future[Any]]]) -> None:
        for fn, future in calls:
            try:
                future.set_result(fn())
            except BaseException as exc:  # the caller gets it; the loop goes on
                future.set_exception(exc)

    def _advance(self, winding_down: bool) -> bool:
        """Publish held models that are due, end waits that may end; returns whether any did."""
        moved = False
        now = self.clock()
        for state in self.states.values():
            node = self.group.nodes[state.node_id]
            if state.phase is Phase.HOLD and state.hold_until is not None and (
                    winding_down or now >= state.hold_until):
                self._publish(state, node)
                moved = True
            if state.phase is Phase.TRAIN and winding_down:
                state.phase = Phase.FINISHED
                moved = True
            if state.phase is Phase.WAIT and (winding_down or self._peers_in(state, node, now)):
                state.waited_s += max(0.0, now - state.published_at)  # published this pass
                if not self._aggregate(state, node, reuse=self.reuse):
                    state.short += 1
                finished = winding_down or state.done >= state.rounds
                state.phase = Phase.FINISHED if finished else Phase.TRAIN
                state.quorum_at = state.half_at = state.deadline = None
                state.excused.clear()
                moved = True
        return moved

    def _aggregate(self, state: NodeState, node: DFLNode, *, reuse: bool = False) -> bool:
        """The node's aggregation, each buffered model judged by the age of its base; with
        `reuse` (a wait's end), peers with no new model count with their latest one."""
        if self.max_staleness is None:
            return node.aggregate(None, reuse=reuse)
        models = {**node.latest, **node.buffer} if reuse else node.buffer
        ages = {k: node.seq - state.based_at[k] for k, b in models.items()
                if k in state.based_at and k in state.heard and state.heard[k][0] == b.seq}
        return node.aggregate(self.max_staleness, ages=ages, decay=STALENESS_DECAY, reuse=reuse)

    def _hear(self) -> None:
        """Note when each node first sees each peer's newer rounds."""
        now = self.clock()
        for n, node in self.group.nodes.items():
            state = self.states[n]
            heard = state.heard
            for key, seq in node.last_seq.items():
                last = heard.get(key)
                if last is None or seq > last[0]:
                    if last is not None:
                        state.period[key] = (now - last[1]) / (seq - last[0])
                        if key in state.heard_at:
                            state.based_at[key] = state.heard_at[key]
                    state.heard_at[key] = node.seq
                    heard[key] = (seq, now)

    def _peers_in(self, state: NodeState, node: DFLNode, now: float) -> bool:
        """Whether the node may stop waiting: its peers published its last round, less slack,
        but for stragglers and peers excused this wait; updates who counts as one."""
        if self.slack < 0:
            return True
        keys = self._keys[state.node_id] | node.last_seq.keys()
        need = node.seq - self.slack
        fresh = {k for k in keys if node.last_seq.get(k, -1) >= need}
        state.stragglers -= fresh  # caught up
        if state.typical_s is not None:
            # Keeps the typical pace again, at most `patience` rounds behind (held up for a
            # while, or restarted): waited for while it catches up. A straggler, slower than
            # the typical round, never is: waiting for it would make its pace everyone's.
            state.stragglers -= {
                k for k in state.stragglers
                if k in state.period and state.period[k] <= state.typical_s
                and need - node.last_seq.get(k, -1) <= max(1, int(self.patience))}
        waited = keys - state.stragglers
        late = waited - fresh
        for k in fresh:
            state.misses.pop(k, None)
        # The typical round: from this round's start until the quorum of the peers it knows
        # (all but one of those it waits for, when fewer are left) had published it (their
        # training time once a round begins), or the own training, if longer; the own training
        # alone when the quorum would be every peer.
        quorum = min(len(waited) - 1, math.ceil(QUORUM * len(keys)))
        if state.quorum_at is None and quorum > 0 and len(waited) - len(late) >= quorum:
            state.quorum_at = now
        if state.half_at is None and 2 * len(fresh) >= len(keys):
            state.half_at = now
        typical: float | None
        if quorum <= 0:
            typical = state.compute_s
        elif state.quorum_at is not None:
            typical = max(state.compute_s, state.quorum_at - state.round_start)
            state.typical_s = typical
        elif state.half_at is not None:
            # Half its peers are in, the quorum is not: the peers still missing are silent once
            # they take SILENT times as long as that half (a quarter of the peers silent would
            # otherwise hold the quorum, and every round, forever). Such a wait's typical round
            # is no measure of the pace, so it is not kept.
            typical = SILENT * max(state.compute_s, state.half_at - state.round_start)
        elif node.counters["restored"] > 0:
            # Restored, it may never hear from peers that finished while it was down: the last
            # typical round it measured stands in, or its own training if it measured none, so
            # the wait has a deadline.
            typical = state.typical_s if state.typical_s is not None else state.compute_s
        else:
            typical = None
        state.deadline = None
        pending = late - state.excused
        if not pending:
            return True
        if typical is None:
            return False
        # A late peer is waited for while it publishes a round at least every `patience`
        # typical rounds; one that has published nothing for that long is not waited for this
        # time, and a straggler once that happens in two waits in a row.
        deadlines = {k: max(state.round_start, state.heard[k][1] if k in state.heard else 0.0)
                     + self.patience * typical for k in pending}
        missed = {k for k, t in deadlines.items() if now >= t}
        if missed:
            for k in missed:
                state.misses[k] = state.misses.get(k, 0) + 1
            flagged = {k for k in missed if state.misses[k] >= 2}
            state.stragglers |= flagged
            state.excused |= missed - flagged
            state.gave_up += 1
        if missed == pending:
            return True
        state.deadline = min(t for k, t in deadlines.items() if k not in missed)
        return False

    def _local_round(self, state: NodeState) -> None:
        node = self.group.nodes[state.node_id]
        state.round_start = self.clock()
        if state.slowdown > 1.0 and state.pace is None and self.pace_rounds > 0:
            if state.timed_from is None:
                state.timed_from = (state.done, state.round_start)
            elif state.done - state.timed_from[0] >= self.pace_rounds:
                state.pace = (state.round_start - state.timed_from[1]) / self.pace_rounds
        mark = node.timer.busy() if state.busy_mark is None else state.busy_mark
        node.train()
        now = self.clock()
        state.compute_s = now - state.round_start
        if state.pace is not None:
            state.phase = Phase.HOLD
            state.hold_until = max(now, state.published_at + state.slowdown * state.pace)
        elif state.slowdown > 1.0 and self.pace_rounds == 0:
            state.phase = Phase.HOLD
            work = max(state.compute_s, node.timer.busy() - mark)
            state.hold_until = now + (state.slowdown - 1.0) * work
        else:
            self._publish(state, node)
            self._settle()

    def _publish(self, state: NodeState, node: DFLNode) -> None:
        node.publish()
        self.group.transport.flush()
        if state.slowdown > 1.0:
            state.busy_mark = node.timer.busy()
        state.done += 1
        self.group.rounds_done[state.node_id] = state.done
        state.phase, state.hold_until, state.published_at = Phase.WAIT, None, self.clock()
        self._deliver([])

    def _settle(self) -> None:
        """Finished nodes aggregate full buffers; every node proposes a block if it can."""
        for n, node in self.group.nodes.items():
            if self.states[n].phase is Phase.FINISHED:
                self._aggregate(self.states[n], node)
            # A block needs a new own transaction or receipt, or the last candidate stored,
            # since the last attempt; skipping the others saves a store query each.
            key = (node.counters["published"], node.counters["receipts"], node.candidate is None)
            if self._sealed_at.get(n) != key:
                self._sealed_at[n] = key
                node.seal_block()
        self._deliver([])  # endorsement requests between nodes of this process

    def _deliver(self, messages: Batch) -> None:
        out = self.group.deliver(messages)
        if out:
            self.send(out)
        self._hear()

    def _wait(self) -> None:
        """Sleep until a message, a request, a hold's or a wait's end, or the stop."""
        with self._cond:
            if self._inbox or self._calls or self._stopping:
                return
            times = [t for s in self.states.values() for t in (s.hold_until, s.deadline)
                     if t is not None]
            if self._winding_down and any(s.phase is not Phase.FINISHED
                                          for s in self.states.values()):
                return  # step() finishes them
            timeout = max(0.0, min(times) - self.clock()) if times else None
            self.idle = all(s.phase is Phase.FINISHED for s in self.states.values())
            try:
                self._cond.wait(timeout)
            finally:
                self.idle = False
