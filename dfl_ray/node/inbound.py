"""Shape checks on incoming messages: every field's type and range, before a handler reads it.

Messages come from peers, and a peer may send anything: a dataclass does not check its field
types, and `hop` and the node ids are unsigned relay metadata. Each function returns the
reason a message must be rejected (counted by the node under that name), or None.
"""

from __future__ import annotations

from dfl_ray.ledger.hashing import DIGEST_SIZE
from dfl_ray.ledger.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE
from dfl_ray.messages import EndorseReply, EndorseRequest, ReceiptMessage, TxMessage

MAX_REFUSAL_CHARS = 200
"""A refusal reason is a short code; anything longer is not one."""


def is_int(value: object) -> bool:
    """An int that is not a bool (True as a hop count or a node id is always a bug)."""
    return isinstance(value, int) and not isinstance(value, bool)


def tx_message_fault(msg: TxMessage, ttl: int) -> str | None:
    """A transaction message needs bytes for its header, an int sender, and a hop count in
    [0, the genesis TTL]: hop is relay metadata, unsigned, used only to decide forwarding."""
    if not isinstance(msg.header, bytes) or not is_int(msg.sender):
        return "bad_message"
    if not is_int(msg.hop) or not 0 <= msg.hop <= ttl:
        return "bad_hop"
    return None


def receipt_message_fault(msg: ReceiptMessage) -> str | None:
    return None if isinstance(msg.receipt, bytes) else "bad_message"


def endorse_request_fault(msg: EndorseRequest) -> str | None:
    if not isinstance(msg.block, bytes) or not is_int(msg.requester):
        return "bad_message"
    return None


def endorse_reply_fault(msg: EndorseReply) -> str | None:
    """A reply names a block hash and its signer, and is signed whether it endorses or refuses:
    an unsigned refusal could come from anyone."""
    if not (isinstance(msg.block_hash, bytes) and len(msg.block_hash) == DIGEST_SIZE
            and isinstance(msg.signer, bytes) and len(msg.signer) == PUBLIC_KEY_SIZE
            and isinstance(msg.refusal, str) and len(msg.refusal) <= MAX_REFUSAL_CHARS):
        return "bad_message"
    if not isinstance(msg.signature, bytes) or len(msg.signature) != SIGNATURE_SIZE:
        return "bad_endorsement"
    return None
