"""Fixtures for the ledger tests: a small network and an empty store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ledger_factories import Net, identity, make_genesis, store_state

from dfl_ray.ledger import ChainStore


@pytest.fixture
def net() -> Net:
    return Net(make_genesis(), identity(1), [identity(i) for i in range(2, 5)])


@pytest.fixture
def store(tmp_path: Path, net: Net) -> Iterator[ChainStore]:
    with ChainStore.create(tmp_path / "node", net.genesis, net.owner.public_key) as s:
        yield s


@pytest.fixture
def state() -> Callable[[ChainStore], tuple[object, ...]]:
    return store_state
