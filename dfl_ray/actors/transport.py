"""The Ray side of the transport: payloads in the object store, messages between host actors."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from dfl_ray.messages import LocalTransport


class Payload:
    """A model vector as it travels: the array inside its own process, an ObjectRef outside it.

    The vector is put in the object store at most once, the first time a message holding it leaves
    the process; pickling keeps only the reference, so receivers in other processes read the
    object-store buffer directly (a read-only, zero-copy numpy view).
    """

    __slots__ = ("array", "ref")

    def __init__(self, array: np.ndarray | None = None, ref: ray.ObjectRef | None = None) -> None:
        self.array = array
        self.ref = ref

    def ensure_ref(self) -> ray.ObjectRef:
        if self.ref is None:
            assert self.array is not None
            self.ref = ray.put(self.array)
        return self.ref

    def __reduce__(self) -> tuple[Any, ...]:
        return (Payload, (None, self.ensure_ref()))


class HostTransport(LocalTransport):
    """Deliveries between nodes of one host by direct call; to other hosts through Ray.

    With `eager_put` (set when other hosts exist) a shared vector goes into the object store at
    once and local receivers read that copy too: otherwise a vector that also leaves the process
    lives twice, in the process heap for local receivers and in the object store for the rest.
    """

    def __init__(self, local_ids: set[int] | None = None, *, eager_put: bool = False) -> None:
        super().__init__(local_ids)
        self.eager_put = eager_put

    def share(self, vec: np.ndarray) -> Any:
        vec.setflags(write=False)
        if not self.eager_put:
            return Payload(array=vec)
        ref = ray.put(vec)
        return Payload(array=ray.get(ref), ref=ref)  # a read-only view of the stored copy

    def fetch(self, handle: Any) -> np.ndarray:
        if not isinstance(handle, Payload):
            raise TypeError(f"payload handle must be a Payload, got {type(handle).__name__}")
        if handle.array is None:
            handle.array = ray.get(handle.ensure_ref())
        return handle.array


def resolve(value: Any) -> Any:
    """An ObjectRef's value (zero-copy for numpy arrays), anything else as it is."""
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value
