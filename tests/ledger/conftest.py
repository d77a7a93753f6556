"""Fixtures for the ledger tests: a small network, an empty store, a filled one, a closed chain."""

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


@pytest.fixture
def filled(store: ChainStore, net: Net) -> ChainStore:
    """Block 0 (seqs 0, 1), pending seq 2 with one receipt, an issued receipt, a payload."""
    store.append_block(net.chain(1)[0])
    tx = net.tx(2)
    store.add_own_transaction(tx)
    store.add_receipt(net.receipts(tx)[0])
    peer_tx = net.tx(0, creator=net.peers[0])
    store.add_issued_receipt(net.receipts(peer_tx, [net.owner])[0])
    store.put_payload(tx.model_digest, net.vector(2))
    return store


@pytest.fixture
def chain_path(tmp_path: Path, net: Net) -> Path:
    """A closed store with 3 blocks (2 txs x 3 receipts each) and the payloads of its txs."""
    path = tmp_path / "node"
    with ChainStore.create(path, net.genesis, net.owner.public_key) as s:
        for block in net.chain(3):
            for e in block.entries:
                s.add_own_transaction(e.tx)
                s.put_payload(e.tx.model_digest, net.vector(e.tx.seq))
            s.append_block(block)
    return path
