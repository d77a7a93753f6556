"""Model payloads: through the chain store (put, get, retention, trusted digests) and the
`PayloadStore` alone (atomic writes, pruning, rollback, corruption)."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from ledger_factories import SPEC_ID, Net, rejected, vector

from dfl_ray.ledger import (
    ChainStore,
    StoreError,
    ValidationError,
    model_digest,
    payload_digest,
    verify_chain,
)
from dfl_ray.ledger import payloads as payloads_module
from dfl_ray.ledger.payloads import SCHEMA, SPARE_NAME, PayloadStore

State = Callable[[ChainStore], tuple[object, ...]]


def test_payload_put_and_get(store: ChainStore, net: Net) -> None:
    vec = net.vector(1)
    d = model_digest(net.spec_id, vec)
    assert store.get_payload(d) is None
    frozen = np.frombuffer(vec.tobytes(), dtype=np.float32)
    store.put_payload(d, frozen)
    assert store.get_payload(d) == vec.tobytes()
    store.put_payload(d, vec.tobytes())  # same content again: harmless
    assert np.array_equal(np.frombuffer(store.get_payload(d) or b"", np.float32), vec)
    assert [p.name for p in (store.path / "payloads").iterdir()] == [d.hex()]


def test_invalid_payload_digest_mismatch(filled: ChainStore, net: Net, state: State) -> None:
    vec = net.vector(1)
    wrong = model_digest(net.spec_id, net.vector(2))
    assert rejected(filled, state, lambda: filled.put_payload(wrong, vec)) == "digest_mismatch"


def test_invalid_payload_file_corrupted_on_disk(store: ChainStore, net: Net) -> None:
    vec = net.vector(1)
    d = model_digest(net.spec_id, vec)
    store.put_payload(d, vec)
    path = store.path / "payloads" / d.hex()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt"):
        store.get_payload(d)
    store.put_payload(d, vec)  # putting it again repairs the file
    assert store.get_payload(d) == vec.tobytes()


def test_retention_keeps_the_last_k_payloads(tmp_path: Path, net: Net) -> None:
    with ChainStore.create(tmp_path / "n", net.genesis, net.owner.public_key,
                           keep_payloads=2) as s:
        digests = []
        for seed in range(5):
            vec = net.vector(seed)
            digests.append(model_digest(net.spec_id, vec))
            with s.batch():
                s.put_payload(digests[-1], vec)
        s.put_payload(digests[3], net.vector(3))  # re-putting refreshes, so 4 is now oldest
        s.put_payload(model_digest(net.spec_id, net.vector(9)), net.vector(9))
        kept = sorted(p.name for p in (s.path / "payloads").iterdir())
        # One dropped payload's file stays as the unlisted spare the next payload overwrites.
        assert kept == sorted([".spare", digests[3].hex(),
                               model_digest(net.spec_id, net.vector(9)).hex()])
        assert s.get_payload(digests[0]) is None and s.get_payload(digests[3]) is not None


def test_retention_zero_writes_no_payload_file(tmp_path: Path, net: Net) -> None:
    with ChainStore.create(tmp_path / "n", net.genesis, net.owner.public_key,
                           keep_payloads=0) as s:
        vec = net.vector(1)
        digest = model_digest(net.spec_id, vec)
        with s.batch():
            s.put_payload(digest, vec)
        s.put_payload(digest, vec.tobytes())
        assert s.get_payload(digest) is None
        assert list((s.path / "payloads").iterdir()) == []


def test_invalid_payload_with_retention_zero(tmp_path: Path, net: Net) -> None:
    with ChainStore.create(tmp_path / "n", net.genesis, net.owner.public_key,
                           keep_payloads=0) as s:
        wrong = model_digest(net.spec_id, net.vector(2))
        with pytest.raises(ValidationError) as err:
            s.put_payload(wrong, net.vector(1))
        assert err.value.reason == "digest_mismatch"


def test_verified_payload_is_not_hashed_again(
    tmp_path: Path, net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[int] = []
    real = payloads_module.payload_digest

    def counted(spec_id: bytes, data: object) -> bytes:
        hashed.append(1)
        return real(spec_id, data)  # type: ignore[arg-type]

    monkeypatch.setattr(payloads_module, "payload_digest", counted)
    with ChainStore.create(tmp_path / "n", net.genesis, net.owner.public_key,
                           keep_payloads=2) as s:
        vec = net.vector(3)
        digest = model_digest(net.spec_id, vec)
        s.put_payload(digest, vec, verified=True)
        assert hashed == []
        s.put_payload(model_digest(net.spec_id, net.vector(4)), net.vector(4))
        assert len(hashed) == 1
        assert s.get_payload(digest) == vec.tobytes()
        with pytest.raises(ValueError, match="float32"):
            s.put_payload(digest, vec.astype(np.float64), verified=True)


def test_dropped_payload_files_are_recycled(tmp_path: Path, net: Net) -> None:
    with ChainStore.create(tmp_path / "n", net.genesis, net.owner.public_key,
                           keep_payloads=1) as s:
        folder = s.path / "payloads"
        digests = [model_digest(net.spec_id, net.vector(i)) for i in range(3)]
        s.put_payload(digests[0], net.vector(0))
        first = (folder / digests[0].hex()).stat().st_ino
        s.put_payload(digests[1], net.vector(1))
        assert (folder / ".spare").stat().st_ino == first  # the dropped file, kept aside
        s.put_payload(digests[2], net.vector(2))
        assert (folder / digests[2].hex()).stat().st_ino == first  # ...and overwritten
        # A shorter payload in a longer spare: the file is cut to the new length.
        short = b"\7" * 12
        short_digest = payload_digest(net.spec_id, short)
        s.put_payload(short_digest, short)
        assert s.get_payload(short_digest) == short
        assert sorted(p.name for p in folder.iterdir()) == [".spare", short_digest.hex()]
        assert verify_chain(s.path).n_blocks == 0  # the spare is never read as a payload


# -- the payload store alone ---------------------------------------------------------------


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "payloads.sqlite", isolation_level=None)
    conn.executescript(SCHEMA)
    yield conn
    conn.close()


def _payload_store(tmp_path: Path, conn: sqlite3.Connection, keep: int | None) -> PayloadStore:
    folder = tmp_path / "payloads"
    folder.mkdir(exist_ok=True)
    return PayloadStore(folder, conn, SPEC_ID, keep)


_savepoints = itertools.count()


@contextmanager
def _transaction(conn: sqlite3.Connection, payloads: PayloadStore) -> Iterator[None]:
    """What `ChainStore` does around every change: a savepoint the payload store is told of."""
    name = f"t{next(_savepoints)}"
    conn.execute(f"SAVEPOINT {name}")
    payloads.begin()
    try:
        yield
    except BaseException:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
        payloads.rollback()
        raise
    conn.execute(f"RELEASE {name}")
    payloads.release()


def _put(conn: sqlite3.Connection, payloads: PayloadStore, *seeds: int) -> list[bytes]:
    """Put the test vectors of `seeds`, each in its own transaction; return their digests."""
    digests = []
    for seed in seeds:
        vec = vector(seed)
        digests.append(model_digest(SPEC_ID, vec))
        payloads.check(digests[-1], vec)
        with _transaction(conn, payloads):
            payloads.put(digests[-1], vec)
    return digests


def _files(payloads_dir: Path) -> list[str]:
    return sorted(p.name for p in payloads_dir.iterdir())


def test_put_writes_a_file_named_by_its_digest(tmp_path: Path, conn: sqlite3.Connection) -> None:
    payloads = _payload_store(tmp_path, conn, keep=None)
    digests = _put(conn, payloads, 0, 1)
    assert payloads.digests() == digests
    assert _files(tmp_path / "payloads") == sorted(d.hex() for d in digests)
    for seed, d in enumerate(digests):
        assert (tmp_path / "payloads" / d.hex()).read_bytes() == vector(seed).tobytes()
        assert payloads.get(d) == vector(seed).tobytes()
    assert payloads.get(model_digest(SPEC_ID, vector(2))) is None


def test_put_again_makes_a_payload_the_newest(tmp_path: Path, conn: sqlite3.Connection) -> None:
    payloads = _payload_store(tmp_path, conn, keep=None)
    first, second = _put(conn, payloads, 0, 1)
    _put(conn, payloads, 0)
    assert payloads.digests() == [second, first]


@pytest.mark.parametrize("with_spare", [False, True])
def test_invalid_write_is_never_seen_half_done(
    tmp_path: Path, conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch, with_spare: bool
) -> None:
    # The bytes go to a dot file (a fresh one, or the spare) and a rename publishes them; a
    # failure before the rename leaves no file under the payload's name.
    payloads = _payload_store(tmp_path, conn, keep=1)
    kept = _put(conn, payloads, 0, 1)[-1] if with_spare else _put(conn, payloads, 1)[-1]
    before = _files(tmp_path / "payloads")
    assert (SPARE_NAME in before) == with_spare

    def no_rename(src: object, dst: object) -> None:
        raise OSError("disk gone")

    d = model_digest(SPEC_ID, vector(2))
    with monkeypatch.context() as m:
        m.setattr(payloads_module.os, "replace", no_rename)
        with pytest.raises(OSError, match="disk gone"), _transaction(conn, payloads):
            payloads.put(d, vector(2))
    assert d.hex() not in _files(tmp_path / "payloads")
    assert payloads.get(d) is None and payloads.digests() == [kept]
    assert payloads.get(kept) == vector(1).tobytes()
    assert not [n for n in _files(tmp_path / "payloads") if n.endswith(".tmp")]


def test_put_rewrites_a_torn_file(tmp_path: Path, conn: sqlite3.Connection) -> None:
    payloads = _payload_store(tmp_path, conn, keep=None)
    d = model_digest(SPEC_ID, vector(0))
    (tmp_path / "payloads" / d.hex()).write_bytes(vector(0).tobytes()[:100])  # a power cut
    _put(conn, payloads, 0)
    assert payloads.get(d) == vector(0).tobytes()


def test_prune_keeps_the_n_newest(tmp_path: Path, conn: sqlite3.Connection) -> None:
    payloads = _payload_store(tmp_path, conn, keep=2)
    digests = _put(conn, payloads, 0, 1, 2, 3, 4)
    assert payloads.digests() == digests[-2:]
    # One dropped payload's file stays as the unlisted spare the next payload overwrites.
    assert _files(tmp_path / "payloads") == sorted([SPARE_NAME, *(d.hex() for d in digests[-2:])])
    assert all(payloads.get(d) is None for d in digests[:-2])


def test_prune_unlists_now_and_removes_files_after_the_outermost_release(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    payloads = _payload_store(tmp_path, conn, keep=None)
    digests = _put(conn, payloads, 0, 1, 2, 3)
    with _transaction(conn, payloads):
        with _transaction(conn, payloads):
            payloads.prune(1)
            assert payloads.digests() == digests[-1:]
        # Committed only with the outer transaction: every file is still there.
        assert _files(tmp_path / "payloads") == sorted(d.hex() for d in digests)
    assert _files(tmp_path / "payloads") == sorted([SPARE_NAME, digests[-1].hex()])


def test_rollback_undoes_puts_and_prunes(tmp_path: Path, conn: sqlite3.Connection) -> None:
    payloads = _payload_store(tmp_path, conn, keep=1)
    kept = _put(conn, payloads, 0)
    with pytest.raises(RuntimeError, match="boom"), _transaction(conn, payloads):
        _put(conn, payloads, 1, 2)  # nested: each prunes the one before
        raise RuntimeError("boom")
    assert payloads.digests() == kept
    assert _files(tmp_path / "payloads") == [kept[0].hex()]
    assert payloads.get(kept[0]) == vector(0).tobytes()


def test_invalid_changed_byte_is_detected(tmp_path: Path, conn: sqlite3.Connection) -> None:
    payloads = _payload_store(tmp_path, conn, keep=None)
    (d,) = _put(conn, payloads, 0)
    path = tmp_path / "payloads" / d.hex()
    good = path.read_bytes()
    for pos in (0, len(good) // 2, len(good) - 1):
        changed = bytearray(good)
        changed[pos] ^= 0x01
        path.write_bytes(bytes(changed))
        with pytest.raises(StoreError, match="corrupt"):
            payloads.get(d)
        with pytest.raises(ValidationError) as err:
            payloads.check(d, bytes(changed))
        assert err.value.reason == "digest_mismatch"
    path.write_bytes(good)
    assert payloads.get(d) == good


def test_invalid_put_or_prune_outside_a_transaction(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    payloads = _payload_store(tmp_path, conn, keep=None)
    d = model_digest(SPEC_ID, vector(0))
    with pytest.raises(StoreError, match="inside a transaction"):
        payloads.put(d, vector(0))
    with pytest.raises(StoreError, match="inside a transaction"):
        payloads.prune(0)
    assert payloads.digests() == [] and _files(tmp_path / "payloads") == []


def test_invalid_check_inputs(tmp_path: Path, conn: sqlite3.Connection) -> None:
    payloads = _payload_store(tmp_path, conn, keep=None)
    d = model_digest(SPEC_ID, vector(0))
    with pytest.raises(TypeError, match="numpy array or bytes"):
        payloads.check(d, vector(0).tolist())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="float32"):
        payloads.check(d, vector(0).astype(np.float64))
    with pytest.raises(ValueError, match="digest must be 32 bytes"):
        payloads.check(d[:31], vector(0))
    payloads.check(d, vector(0).tobytes())
    payloads.check(d, memoryview(bytearray(vector(0).tobytes())))
