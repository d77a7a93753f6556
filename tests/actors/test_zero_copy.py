"""A model received from another host is a read-only view of Ray's object store, hashed in place."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from dfl_ray.actors.transport import HostTransport, Payload
from dfl_ray.ledger import (
    Identity,
    Transaction,
    ValidationError,
    check_payload,
    digest,
    model_digest,
)
from dfl_ray.messages import TxMessage

N_PARAMS = 431_080  # the LeNet of the DFL spec: 1.72 MB as float32
SPEC_ID = digest(b"zero-copy test spec")
NOW = 1_700_000_000.0
MAPS = Path("/proc/self/maps")


def mapping_of(address: int) -> str:
    """The /proc/self/maps line of the mapping holding `address` ('' if none)."""
    for line in MAPS.read_text().splitlines():
        low, high = (int(x, 16) for x in line.split()[0].split("-"))
        if low <= address < high:
            return line
    return ""


def base_chain(array: np.ndarray) -> list[str]:
    """Type names from the array down through `.base` to the object owning the memory."""
    names: list[str] = []
    obj: Any = array
    while obj is not None and len(names) < 10:
        names.append(f"{type(obj).__module__}.{type(obj).__qualname__}")
        obj = getattr(obj, "base", None)
    return names


class PayloadProbe:
    """Receives a TxMessage as a host in another process does, and reports how the model arrived."""

    def receive(self, msg: TxMessage, expected_size: int) -> dict[str, Any]:
        transport = HostTransport(set())
        tx = Transaction.decode(msg.header)
        baseline = ray.put(0)
        tracemalloc.start()
        try:
            # Any ray.get has a fixed transient of its own (about 1 MiB in Ray 2.60, whatever
            # the object); measure it on a tiny object to tell it from the payload's cost.
            ray.get(baseline)
            _, baseline_peak = tracemalloc.get_traced_memory()
            tracemalloc.clear_traces()
            vec = transport.fetch(msg.payload)  # then check_payload: DFLNode.on_transaction's order
            fetch_current, fetch_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            digest_of_view = model_digest(SPEC_ID, vec)
            _, digest_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            try:
                check_payload(tx, spec_id=SPEC_ID, expected_size=expected_size, vec=vec)
                verdict = "ok"
            except ValidationError as err:
                verdict = err.reason
            _, check_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            copied = np.array(vec)  # control: a real copy, which tracemalloc must see
            _, copy_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        again = ray.get(msg.payload.ref)
        try:
            vec[0] = 1.0
            wrote = True
        except ValueError:
            wrote = False
        pointer = vec.__array_interface__["data"][0]
        return {
            "verdict": verdict,
            "writeable": bool(vec.flags.writeable),
            "owndata": bool(vec.flags.owndata),
            "wrote": wrote,
            "base_chain": base_chain(vec),
            "mapping": mapping_of(pointer),
            "shares_with_second_get": bool(np.shares_memory(vec, again)),
            "copy_shares": bool(np.shares_memory(vec, copied)),
            "object_id": msg.payload.ref.hex(),
            "baseline_peak": baseline_peak,
            "fetch_current": fetch_current,
            "fetch_peak": fetch_peak,
            "digest_peak": digest_peak,
            "check_peak": check_peak,
            "copy_peak": copy_peak,
            "digest": digest_of_view,
        }


@pytest.fixture(scope="module")
def probes(local_ray: None) -> list[Any]:
    return [ray.remote(PayloadProbe).options(num_cpus=0).remote() for _ in range(2)]


def model() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(N_PARAMS).astype(np.float32)


def signed_tx(vec_digest: bytes) -> Transaction:
    return Transaction.create(
        Identity.from_seed(b"\x07" * 32), genesis_hash=digest(b"genesis"), seq=1,
        created_at=NOW, expires_at=NOW + 60.0, ttl=10, model_digest=vec_digest,
        self_score=0.5, n_samples=100,
    )


def publish(vec: np.ndarray, tx: Transaction) -> TxMessage:
    """What a publishing node sends: the signed header and the transport's payload handle."""
    return TxMessage(tx.encode(), HostTransport({0}).share(vec), hop=1, sender=0)


# The probe's actors import it from this file, which is no package module on a worker's path.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

needs_proc = pytest.mark.skipif(not MAPS.is_file(), reason="needs /proc/self/maps (Linux)")


@pytest.mark.ray
@needs_proc
def test_received_model_is_a_read_only_view_of_the_object_store(probes: list[Any]) -> None:
    vec = model()
    msg = publish(vec, signed_tx(model_digest(SPEC_ID, vec)))
    reports = ray.get([p.receive.remote(msg, N_PARAMS) for p in probes])
    for rep in reports:
        assert rep["verdict"] == "ok"
        assert rep["digest"] == model_digest(SPEC_ID, vec)
        assert not rep["writeable"] and not rep["wrote"]
        assert not rep["owndata"]
        assert rep["base_chain"][-1] == "ray._raylet.SubBuffer", rep["base_chain"]
        # The bytes live in a shared mapping of the object store's file, not on the heap.
        fields = rep["mapping"].split()
        assert fields[1].endswith("s"), rep["mapping"]
        assert "/plasma" in rep["mapping"], rep["mapping"]
        assert rep["shares_with_second_get"] and not rep["copy_shares"]
    # Both receivers map the same file: one buffer in the machine, read by both.
    assert reports[0]["mapping"].split()[5] == reports[1]["mapping"].split()[5]


@pytest.mark.ray
@pytest.mark.parametrize("scale", [1, 16])
def test_fetch_and_digest_allocate_no_copy(probes: list[Any], scale: int) -> None:
    """LeNet and a model 16 times larger cost the same to receive: nothing scales with it."""
    vec = np.tile(model(), scale)
    msg = publish(vec, signed_tx(model_digest(SPEC_ID, vec)))
    rep = ray.get(probes[0].receive.remote(msg, vec.size))
    assert rep["verdict"] == "ok"
    small = 64 * 1024
    assert rep["fetch_current"] < small, rep  # nothing of the model's size is held
    assert rep["fetch_peak"] <= rep["baseline_peak"] + small, rep  # as cheap as getting an int
    assert rep["digest_peak"] < small, rep  # BLAKE3 reads the view in place
    # check_payload's largest allocation is the finiteness check's boolean mask, a quarter of
    # the model; a copy would be the whole model. The control copy shows tracemalloc sees arrays.
    assert rep["check_peak"] < vec.nbytes // 2, rep
    assert rep["copy_peak"] >= vec.nbytes


@pytest.mark.ray
def test_payload_is_put_once_for_all_receivers(probes: list[Any]) -> None:
    vec = model()
    msg = publish(vec, signed_tx(model_digest(SPEC_ID, vec)))
    assert isinstance(msg.payload, Payload) and msg.payload.ref is None  # nothing put yet
    reports = ray.get([p.receive.remote(msg, N_PARAMS) for p in probes])
    assert msg.payload.ref is not None
    assert {r["object_id"] for r in reports} == {msg.payload.ref.hex()}
    # The sender's own view is the same object-store buffer the receivers read.
    assert not ray.get(msg.payload.ref).flags.writeable


@pytest.mark.ray
def test_invalid_payload_digest_is_computed_on_the_received_bytes(probes: list[Any]) -> None:
    vec = model()
    other = vec.copy()
    other[-1] += 1.0  # one value differs: the header promises `other`, the payload is `vec`
    msg = publish(vec, signed_tx(model_digest(SPEC_ID, other)))
    rep = ray.get(probes[0].receive.remote(msg, N_PARAMS))
    assert rep["verdict"] == "digest_mismatch"


def test_same_host_delivery_hands_over_the_array_itself() -> None:
    vec = model()
    transport = HostTransport({0, 1})
    handle = transport.share(vec)
    got = transport.fetch(handle)
    assert got is vec
    assert not got.flags.writeable
    assert handle.ref is None  # never left the process, so never put


def test_invalid_fetch_of_a_foreign_handle() -> None:
    with pytest.raises(TypeError, match="must be a Payload"):
        HostTransport(set()).fetch(model())
