"""A host actor: a `NodeGroup` whose payloads cross the Ray object store; `ray.remote(NodeHost)`."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from dfl_ray.actors.transport import HostTransport, resolve
from dfl_ray.messages import Message
from dfl_ray.node import HostSetup, NodeGroup


class NodeHost(NodeGroup):
    """The nodes of one Ray actor; messages for other hosts are returned (sync schedule) or
    pushed to their actors (async schedule)."""

    transport: HostTransport

    def __init__(self, setup: HostSetup) -> None:
        arrays = {k: resolve(v) for k, v in setup.arrays.items()}
        super().__init__(setup, arrays, HostTransport(set(setup.node_ids)))
        self.peer_hosts: dict[int, Any] = {}
        self.host_of: dict[int, int] = {}
        self.async_thread: threading.Thread | None = None
        self.stop_flag = threading.Event()
        self.async_error: str | None = None

    def connect(  # type: ignore[override]  # adds the other hosts
        self,
        directory: Mapping[bytes, int],
        host_of: Mapping[int, int] | None = None,
        peer_hosts: Mapping[int, Any] | None = None,
    ) -> int:
        """Create the nodes once every node's public key is known; returns how many were made."""
        made = super().connect(directory)
        self.host_of = dict(host_of or {})
        self.peer_hosts = dict(peer_hosts or {})
        self.transport.object_store = any(h != self.setup.host_index for h in self.host_of.values())
        return made

    # ------------------------------------------------------------ async schedule

    def push(self, messages: list[tuple[int, Message]]) -> None:
        """Messages from another host, processed by this host's loop (deque appends are atomic)."""
        self.incoming.extend(messages)

    def _flush_remote(self) -> None:
        by_host: dict[int, list[tuple[int, Message]]] = {}
        for dest, message in self.transport.take_outbox():
            by_host.setdefault(self.host_of[dest], []).append((dest, message))
        for host, batch in by_host.items():
            self.peer_hosts[host].push.remote(batch)

    def start_async(self, rounds: int) -> None:
        """Start this host's loop: each node trains, publishes, receives and aggregates on its own."""
        if self.async_thread is not None:
            raise RuntimeError("the async loop is already running")
        self.async_thread = threading.Thread(target=self._async_loop, args=(rounds,), daemon=True)
        self.async_thread.start()

    def _async_loop(self, rounds: int) -> None:
        try:
            while not self.stop_flag.is_set():
                active = [n for n in self.nodes if self.rounds_done[n] < rounds]
                if not active:
                    break
                for n in active:
                    with self.lock:
                        node = self.nodes[n]
                        node.train()
                        node.publish()
                        self.transport.flush()
                        self._drain()
                        node.aggregate()
                        node.seal_block()
                        self._drain()
                        self.rounds_done[n] += 1
                    self._flush_remote()
            # Keep answering peers (receipts, endorsements) until told to stop.
            while not self.stop_flag.wait(0.05):
                with self.lock:
                    self._drain()
                self._flush_remote()
        except Exception as exc:  # surfaced to the driver through progress()
            self.async_error = f"{type(exc).__name__}: {exc}"

    def progress(self) -> dict[str, Any]:
        return {"rounds_done": dict(self.rounds_done), "error": self.async_error}

    def stop_async(self) -> None:
        self.stop_flag.set()
        if self.async_thread is not None:
            self.async_thread.join()
        with self.lock:
            for node in self.nodes.values():
                node.finish_sealing()

    # ------------------------------------------------------------ observe

    def ray_node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()
