"""The ledger: identities, canonical objects, each node's own signed chain and its store."""

from dfl_ray.ledger.block import (
    Block,
    BlockEntry,
    Claims,
    Endorsement,
    endorse,
    endorsement_message,
    refusal_message,
    reputation_digest,
    verify_block,
)
from dfl_ray.ledger.checkpoint import Checkpoint, decode_state, encode_state
from dfl_ray.ledger.errors import (
    REASONS,
    ChainError,
    DecodeError,
    LedgerError,
    StoreError,
    ValidationError,
)
from dfl_ray.ledger.genesis import Genesis
from dfl_ray.ledger.hashing import digest, model_digest, payload_digest
from dfl_ray.ledger.identity import Identity, address_of, short_address, verify_signature
from dfl_ray.ledger.receipt import Receipt, check_receipt, check_receipt_fields
from dfl_ray.ledger.sealing import required_receipts, select_block_entries
from dfl_ray.ledger.store import ChainSnapshot, ChainStore, checkpoint_turn, read_chain
from dfl_ray.ledger.transaction import Transaction, check_payload, check_transaction
from dfl_ray.ledger.verify import ChainSummary, verify_chain

__all__ = [
    "REASONS",
    "Block",
    "BlockEntry",
    "ChainError",
    "ChainSnapshot",
    "ChainStore",
    "ChainSummary",
    "Checkpoint",
    "Claims",
    "DecodeError",
    "Endorsement",
    "Genesis",
    "Identity",
    "LedgerError",
    "Receipt",
    "StoreError",
    "Transaction",
    "ValidationError",
    "address_of",
    "check_payload",
    "check_receipt",
    "check_receipt_fields",
    "check_transaction",
    "checkpoint_turn",
    "decode_state",
    "digest",
    "endorse",
    "endorsement_message",
    "encode_state",
    "refusal_message",
    "model_digest",
    "payload_digest",
    "read_chain",
    "reputation_digest",
    "required_receipts",
    "select_block_entries",
    "short_address",
    "verify_block",
    "verify_chain",
    "verify_signature",
]
