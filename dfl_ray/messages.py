"""What DFL nodes send each other, and the small transport interface they send it through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class TxMessage:
    """A gossiped model update: the signed transaction header plus a handle to its payload.

    `payload` is whatever the transport's `share` returned (an object-store reference between
    processes, the array itself inside one). `hop` counts the hops travelled so far (1 on the
    first delivery); it is not signed because every forwarder changes it, so a receiver bounds
    it by the genesis TTL and uses it only to decide whether to forward.
    """

    header: bytes
    payload: Any
    hop: int
    sender: int


@dataclass(frozen=True)
class ReceiptMessage:
    """A signed receipt going back to the creator of the transaction it acknowledges."""

    receipt: bytes


@dataclass(frozen=True)
class EndorseRequest:
    """A candidate block sent to the signers of the receipts it holds."""

    block: bytes
    requester: int


@dataclass(frozen=True)
class EndorseReply:
    """An endorsement of `block_hash`, or with `refusal` the reason the signer refused; either
    way signed by `signer` (`endorsement_message` or `refusal_message` of the ledger)."""

    block_hash: bytes
    signer: bytes
    signature: bytes
    refusal: str = ""


Message = TxMessage | ReceiptMessage | EndorseRequest | EndorseReply


class Transport(Protocol):
    """How a node reaches its peers; nodes know peers only by integer node id."""

    def share(self, vec: np.ndarray) -> Any:
        """Make a payload available to peers once; the handle goes into every TxMessage."""
        ...

    def fetch(self, handle: Any) -> np.ndarray:
        """The payload behind a handle, as a read-only array (no copy where possible)."""
        ...

    def send(self, dest: int, message: Message) -> None:
        """Queue or deliver `message` to node `dest`."""
        ...


class LocalTransport:
    """In-process transport: payloads are the arrays themselves; messages are queued per node.

    Used by a node group for deliveries between nodes of one process, and by tests without Ray.
    `outbox` collects messages for nodes this transport does not hold.
    """

    def __init__(self, local_ids: set[int] | None = None) -> None:
        self.local_ids = set(local_ids or ())
        self.inbox: list[tuple[int, Message]] = []
        self.outbox: list[tuple[int, Message]] = []

    def share(self, vec: np.ndarray) -> Any:
        vec.setflags(write=False)
        return vec

    def fetch(self, handle: Any) -> np.ndarray:
        if not isinstance(handle, np.ndarray):
            raise TypeError(f"payload handle must be an array, got {type(handle).__name__}")
        return handle

    def send(self, dest: int, message: Message) -> None:
        (self.inbox if dest in self.local_ids else self.outbox).append((dest, message))

    def flush(self) -> None:
        """Make shared payloads reachable before delivery: nothing to do inside one process."""

    def forget_fetched(self) -> None:
        """Drop what was fetched for the last wave of deliveries: nothing is kept here."""

    def take_inbox(self) -> list[tuple[int, Message]]:
        out, self.inbox = self.inbox, []
        return out

    def take_outbox(self) -> list[tuple[int, Message]]:
        out, self.outbox = self.outbox, []
        return out
