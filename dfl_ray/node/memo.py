"""Receive-check verdicts on immutable inputs, computed once per process (`CheckMemo`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dfl_ray.ledger import Transaction, ValidationError, check_payload


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
