"""A host actor: a `NodeGroup` whose payloads cross the Ray object store; `ray.remote(NodeHost)`."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dfl_ray.actors.gossip import Batch, GossipLoop
from dfl_ray.actors.transport import HostTransport, resolve
from dfl_ray.code import describe
from dfl_ray.messages import Message
from dfl_ray.node import HostSetup, NodeGroup
from dfl_ray.node.faults import FaultPlan
from dfl_ray.node.node import TraceRead

IN_FLIGHT_MAX = 64
"""async: most batches sent to one peer host and not yet taken by it."""
KILL_POLL_S = 0.02
"""How often an async host checks whether `faults.kill` names one of its nodes' rounds."""


def _reconstructed() -> bool:
    """Whether Ray restarted this actor after its process died (False outside an actor)."""
    try:
        import ray

        with warnings.catch_warnings():  # Ray's own property reads a deprecated actor-id API
            warnings.simplefilter("ignore", DeprecationWarning)
            return ray.is_initialized() and bool(
                ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not in a Ray worker
        return False


class NodeHost(NodeGroup):
    """The nodes of one Ray actor; messages for other hosts are returned (sync schedule) or
    pushed to their actors (async schedule, run by a `GossipLoop` in a thread of the actor).

    Between two hosts the async schedule keeps the order in which batches were sent: a threaded
    actor may run two `push` calls from one caller in either order, so each batch carries its
    number on that channel and waits here until the ones before it have arrived.
    """

    transport: HostTransport

    def __init__(self, setup: HostSetup) -> None:
        arrays = {k: resolve(v) for k, v in setup.arrays.items()}
        super().__init__(setup, arrays, HostTransport(set(setup.node_ids)))
        runtime = setup.config.runtime
        self.busy_marks: dict[int, float] = {}
        """Each straggler's busy seconds when its last hold ended (sync)."""
        self.slowdown = {n: runtime.slowdown for n in runtime.slow_nodes
                         if n in setup.node_ids and runtime.slowdown > 1.0}
        self.plan = FaultPlan(setup.config.faults, setup.config.experiment.seed)
        self.restarted = _reconstructed()
        self._killer: threading.Thread | None = None
        self.peer_hosts: dict[int, Any] = {}
        self.host_of: dict[int, int] = {}
        self.loop: GossipLoop | None = None
        self.loop_thread: threading.Thread | None = None
        self.loop_error: str | None = None
        self.sent: dict[int, int] = {}
        """Batches sent to each other host so far (the async schedule)."""
        self._in_flight: dict[int, list[Any]] = {}
        self.dropped_to_silent = 0
        """Messages not sent to a peer host that left IN_FLIGHT_MAX batches unanswered."""
        self._order = threading.Lock()
        self._expected: dict[int, int] = {}
        self._early: dict[int, dict[int, Batch]] = {}

    def connect(  # type: ignore[override]  # adds the other hosts
        self,
        directory: Mapping[bytes, int],
        host_of: Mapping[int, int] | None = None,
        peer_hosts: Mapping[int, Any] | None = None,
    ) -> int:
        """Create the nodes once every node's public key is known; returns how many were made."""
        made = super().connect(directory)
        me = self.setup.host_index
        self.host_of = dict(host_of or {})
        self.peer_hosts = dict(peer_hosts or {})
        self.transport.object_store = any(h != me for h in self.host_of.values())
        self.sent = {h: 0 for h in set(self.host_of.values()) if h != me}
        runtime = self.config.runtime
        if runtime.schedule == "async":
            self.loop = GossipLoop(
                self, rounds=self.config.experiment.rounds, send=self._send,
                slowdown=self.slowdown,
                max_staleness=None if runtime.max_staleness < 0 else runtime.max_staleness,
                slack=runtime.slack, patience=runtime.patience, reuse=runtime.reuse,
            )
            for n, state in self.loop.states.items():  # nodes restored from their chains
                state.done = self.rounds_done[n]
        return made

    # ------------------------------------------------------------ faults

    def code(self) -> dict[str, str]:
        """Which dfl_ray code this actor runs (`dfl_ray.code.describe`)."""
        return describe()

    def ping(self) -> dict[str, Any]:
        """Whether this actor is up, whether Ray restarted it, and whether it has its nodes."""
        return {"pid": os.getpid(), "restarted": self.restarted, "connected": bool(self.nodes)}

    def _kill_if_planned(self, nodes_rounds: Mapping[int, int]) -> None:
        """SIGKILL this process if `faults.kill` names one of its nodes at its round; once per
        entry (a marker file in the run folder, or the first incarnation without one)."""
        for n, r in nodes_rounds.items():
            if not self.plan.kills_at(n, r):
                continue
            if self.setup.run_dir is None:
                if self.restarted:
                    continue
            else:
                marker = Path(self.setup.run_dir) / "faults" / f"killed_node{n}_round{r}"
                if marker.exists():
                    continue
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(f"pid {os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)

    def _watch_kills(self) -> None:
        """async: kill this process when a node named by `faults.kill` reaches its round."""
        while self.loop_thread is not None and self.loop_thread.is_alive():
            self._kill_if_planned(dict(self.rounds_done))
            time.sleep(KILL_POLL_S)

    def deliver(self, messages: list[tuple[int, Message]]) -> list[tuple[int, Message]]:
        if messages and self.plan.delay_s and self.loop is None:  # async: push() delays
            time.sleep(self.plan.delay_s)  # the link's latency (faults.delay_ms)
        return super().deliver(messages)

    # ------------------------------------------------------------ sync schedule

    def begin_round(self, round_index: int) -> list[tuple[int, Message]]:
        """Train and publish; a straggler then holds for (k - 1) x n x the busy seconds of its
        work since its last hold (the last round's scoring, aggregation and ledger work, this
        round's training), n the nodes this host runs one after another, so the round (every
        host waits for the slowest) takes k times as long, as its node's share of the host
        k times slower would."""
        self._kill_if_planned(dict.fromkeys(self.nodes, round_index))
        marks = {n: self.busy_marks.get(n, self.nodes[n].timer.busy()) for n in self.slowdown}
        out = super().begin_round(round_index)
        hold = max(((k - 1.0) * len(self.nodes) * (self.nodes[n].timer.busy() - marks[n])
                    for n, k in self.slowdown.items()), default=0.0)
        if hold > 0.0:
            time.sleep(hold)
        self.busy_marks = {n: self.nodes[n].timer.busy() for n in self.slowdown}
        return out

    # ------------------------------------------------------------ async schedule

    def push(self, source: int, number: int, batch: Batch) -> None:
        """The `number`-th batch host `source` sent here; handed to the loop in sending order."""
        loop = self._require_loop()
        if self.plan.delay_s:
            time.sleep(self.plan.delay_s)  # the link's latency (faults.delay_ms)
        with self._order:
            early = self._early.setdefault(source, {})
            # A restarted host (or one whose sender restarted) starts from the first batch it
            # gets; older ones that arrive later are dropped.
            expected = self._expected.setdefault(source, 0 if number == 0 or not self.restarted
                                                 else number)
            if number < expected and number != 0:
                return
            if number == 0 and expected > 0:  # the sender restarted: a new channel
                early.clear()
                expected = 0
            early[number] = batch
            while expected in early:
                loop.push(early.pop(expected))
                expected += 1
            self._expected[source] = expected

    def _send(self, messages: Batch) -> None:
        by_host: dict[int, Batch] = {}
        for dest, message in messages:
            by_host.setdefault(self.host_of[dest], []).append((dest, message))
        import ray

        for host, batch in by_host.items():
            # A silent peer (stalled, cut off) answers no push: past IN_FLIGHT_MAX unanswered
            # batches, new ones for it are dropped here rather than queued without bound.
            waiting = self._in_flight.setdefault(host, [])
            if waiting:
                _, waiting[:] = ray.wait(waiting, num_returns=len(waiting), timeout=0)
            if len(waiting) >= IN_FLIGHT_MAX:
                self.dropped_to_silent += len(batch)
                continue
            number = self.sent[host]
            self.sent[host] = number + 1
            waiting.append(self.peer_hosts[host].push.remote(self.setup.host_index, number, batch))

    def _require_loop(self) -> GossipLoop:
        if self.loop is None:
            raise RuntimeError("this host was not set up for the async schedule")
        return self.loop

    def start_async(self, rounds: int) -> None:
        """Start this host's loop: each node trains, publishes, receives and aggregates on its own."""
        loop = self._require_loop()
        if self.loop_thread is not None:
            raise RuntimeError("the async loop is already running")
        for state in loop.states.values():
            state.rounds = rounds
        self.loop_thread = threading.Thread(target=self._run_loop, daemon=True,
                                            name=f"dfl-host-{self.setup.host_index}")
        self.loop_thread.start()
        if self.plan.kills:
            self._killer = threading.Thread(target=self._watch_kills, daemon=True,
                                            name=f"dfl-kill-{self.setup.host_index}")
            self._killer.start()

    def _run_loop(self) -> None:
        assert self.loop is not None
        torch.set_num_threads(self.config.runtime.torch_threads)  # per thread under OpenMP
        try:
            self.loop.run()
        except Exception as exc:  # surfaced to the driver through progress()
            self.loop_error = f"{type(exc).__name__}: {exc}"

    def progress(self) -> dict[str, Any]:
        """Local rounds done per node, and what the driver needs to tell when all is quiet."""
        loop = self._require_loop()
        with self._order:
            waiting = sum(len(early) for early in self._early.values())
        return {
            "nodes": loop.progress(),
            "error": self.loop_error,
            "sent": sum(self.sent.values()),
            "handled": loop.handled,
            "dropped_to_silent": self.dropped_to_silent,
            "idle": loop.idle and waiting == 0,
        }

    def wind_down(self) -> None:
        """End the local rounds (stragglers' too); the nodes keep answering until `stop_async`."""
        self._require_loop().wind_down()

    def stop_async(self) -> None:
        """Stop the loop, then store each pending block with the endorsements it has."""
        if self.loop is not None:
            self.loop.stop()
        if self.loop_thread is not None:
            self.loop_thread.join()
        with self.lock:
            for node in self.nodes.values():
                node.finish_sealing()

    # ------------------------------------------------------------ observe

    def evaluate(self) -> dict[int, float]:
        if self.loop is None:
            return super().evaluate()
        return self.loop.call(super().evaluate)

    def trace(self, cursors: Mapping[int, tuple[str, int]]) -> dict[int, TraceRead]:
        if self.loop is None:
            return super().trace(cursors)
        return self.loop.call(lambda: super(NodeHost, self).trace(cursors))

    def stats(self) -> dict[int, dict[str, Any]]:
        def read() -> dict[int, dict[str, Any]]:
            out = super(NodeHost, self).stats()
            loop = self.loop.progress() if self.loop is not None else {}
            for n, st in out.items():
                st["rounds"] = self.rounds_done[n]
                for key in ("waited_s", "stragglers", "gave_up", "short"):
                    st[key] = loop[n][key] if n in loop else 0
            return out

        return read() if self.loop is None else self.loop.call(read)

    def ray_node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()
