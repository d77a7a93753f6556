"""The Ray side of the transport: payloads in the object store, messages between host actors."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import ray

from dfl_ray.messages import LocalTransport

PUT_BATCH = 64
"""Vectors per object-store object when a host stores what its nodes share."""
FETCH_TIMEOUT_S = 5.0
"""Longest wait for a received payload. Its owner's process or link may be gone (a host cut off
holds the models it published); waiting on, the receiving host missed the round's deadline
too, and two hosts late of four read as a slow cluster, so the driver waited for both. A
payload not fetched in time is one the node does not accept (`payload_unavailable`), and so
are the copies of it that arrive later (forwarded): each would cost the wait again. A local
object-store read takes milliseconds."""
UNAVAILABLE_KEPT = 1024
"""Payload references given up on that a host remembers (the oldest forgotten first)."""


class Payload:
    """A model vector as it travels: the array inside its own process, an ObjectRef outside it.

    The vector is put in the object store at most once, either alone (the first time a message
    holding it leaves the process) or as row `index` of a list of vectors stored together
    (`HostTransport.flush`). Pickling keeps only the reference and the index, so receivers in
    other processes read the object-store buffer directly (a read-only, zero-copy numpy view).
    """

    __slots__ = ("array", "index", "ref")

    def __init__(
        self, array: np.ndarray | None = None, ref: ray.ObjectRef | None = None, index: int = -1
    ) -> None:
        self.array = array
        self.ref = ref
        self.index = index  # -1: `ref` holds this vector alone, else its row in a stored list

    def ensure_ref(self) -> ray.ObjectRef:
        if self.ref is None:
            if self.array is None:
                raise ValueError("a payload with neither an array nor a reference")
            self.ref = ray.put(self.array)
        return self.ref

    def __reduce__(self) -> tuple[Any, ...]:
        return (Payload, (None, self.ensure_ref(), self.index))


class HostTransport(LocalTransport):
    """Deliveries between nodes of one host by direct call; to other hosts through Ray.

    With `object_store` (set when other hosts exist) shared vectors go into the object store in
    groups of `PUT_BATCH`, one object per group, before any of them is delivered; local receivers
    read the stored copy too. One put per vector would cost an object-store round trip each
    (about 1 ms idle and tens of ms on a busy machine) and keeping the process's own copy for
    local receivers would hold every vector twice.
    """

    def __init__(self, local_ids: set[int] | None = None, *, object_store: bool = False) -> None:
        super().__init__(local_ids)
        self.object_store = object_store
        self._unstored: list[Payload] = []
        # Lists fetched in this wave of deliveries, so a group is read once, not once per row.
        self._fetched: dict[ray.ObjectRef, list[np.ndarray]] = {}
        self._unavailable: OrderedDict[ray.ObjectRef, None] = OrderedDict()

    def share(self, vec: np.ndarray) -> Any:
        vec.setflags(write=False)
        payload = Payload(array=vec)
        if self.object_store:
            self._unstored.append(payload)
            if len(self._unstored) >= PUT_BATCH:
                self.flush()
        return payload

    def flush(self) -> None:
        """Store the vectors shared since the last flush as one object; call before delivering."""
        pending, self._unstored = self._unstored, []
        if not pending:
            return
        ref = ray.put([p.array for p in pending])
        views: list[np.ndarray] = ray.get(ref)  # type: ignore[arg-type]  # Ray's stubs
        for i, (payload, view) in enumerate(zip(pending, views, strict=True)):
            payload.array, payload.ref, payload.index = view, ref, i

    def fetch(self, handle: Any) -> np.ndarray:
        if not isinstance(handle, Payload):
            raise TypeError(f"payload handle must be a Payload, got {type(handle).__name__}")
        if handle.array is None:
            ref = handle.ensure_ref()
            if ref in self._unavailable:
                raise TimeoutError(f"payload {ref} was given up on after {FETCH_TIMEOUT_S} s")
            try:
                if handle.index < 0:
                    handle.array = ray.get(ref, timeout=FETCH_TIMEOUT_S)
                else:
                    group = self._fetched.get(ref)
                    if group is None:
                        group = self._fetched[ref] = ray.get(ref, timeout=FETCH_TIMEOUT_S)
                    handle.array = group[handle.index]
            except ray.exceptions.GetTimeoutError:
                self._unavailable[ref] = None
                if len(self._unavailable) > UNAVAILABLE_KEPT:
                    self._unavailable.popitem(last=False)
                raise
        return handle.array

    def forget_fetched(self) -> None:
        """Drop the fetched groups; rows still in use stay alive through their own views."""
        self._fetched.clear()


def resolve(value: Any) -> Any:
    """An ObjectRef's value (zero-copy for numpy arrays), anything else as it is."""
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value
