"""Many nodes in one host without Ray: a full round, shared data, bounded memory per node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dfl_ray.config import Config
from dfl_ray.messages import Message, TxMessage
from dfl_ray.node import DFLNode, NodeGroup
from tests.helpers import local_host, small_config

NODES = 50
SMALL = 10  # for the tests that need a few nodes only
DEGREE = 4


class FakeClock:
    """A clock the test moves by hand, shared by every node of a host."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def big_host(config: Config, run_dir: Path | None, clock: FakeClock | None = None) -> NodeGroup:
    """`config`'s nodes on a random DEGREE-regular graph in one host, on synthetic data."""
    n = config.topology.nodes
    return local_host(config, run_dir, n_train=12 * n, val_fraction=0.25, clock=clock)


def regular_config(nodes: int = NODES, **ledger: Any) -> Config:
    return small_config(
        topology={"kind": "regular", "nodes": nodes, "degree": DEGREE},
        defense={"rule": "fedavg", "buffer_size": DEGREE},
        training={"local_steps": 1, "batch_size": 8},
        ledger={"ttl": 1, "keep_payloads": 0, **ledger},
    )


def run_round(host: NodeGroup, r: int) -> None:
    assert host.begin_round(r) == []  # one host: nothing leaves it
    assert host.end_round(r) == []
    host.finish_round()


def owned_bytes(node: DFLNode) -> int:
    """Bytes of the arrays and tensors that belong to this node alone."""
    tensors = [p for p in node.learner.model.parameters()]
    tensors += [p.grad for p in node.learner.model.parameters() if p.grad is not None]
    tensors += [t for st in node.learner.optimizer.state.values() for t in st.values()
                if isinstance(t, torch.Tensor)]
    tensors += [node.data.val_images, node.data.val_labels]
    total = sum(t.numel() * t.element_size() for t in tensors)
    total += node.data.train_idx.nbytes
    if node.aggregator.round_base is not None:
        total += node.aggregator.round_base.nbytes
    if node.aggregator.round_head is not None:
        total += node.aggregator.round_head.nbytes
    return total


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> NodeGroup:
    h = big_host(regular_config(), tmp_path_factory.mktemp("big"))
    run_round(h, 0)
    return h


def test_fifty_nodes_in_one_host_complete_a_round(host: NodeGroup) -> None:
    assert len(host.nodes) == NODES
    for node in host.nodes.values():
        assert not node.rejected
        assert node.counters["published"] == 1
        assert node.counters["accepted"] == DEGREE  # ttl 1: direct peers only
        assert node.counters["receipts"] == DEGREE
        assert node.counters["aggregations"] == 1
        assert node.buffer == {}
        assert node.store is not None
        (_, receipts), = node.store.pending_transactions()
        assert len(receipts) == DEGREE
        assert list((node.store.path / "payloads").iterdir()) == []  # keep_payloads 0


def test_nodes_share_the_data_set_and_the_scorer(host: NodeGroup) -> None:
    nodes = list(host.nodes.values())
    assert all(n.data.images.data_ptr() == host.data.train_images.data_ptr() for n in nodes)
    assert all(n.data.labels.data_ptr() == host.data.train_labels.data_ptr() for n in nodes)
    assert len({id(n.learner.scorer) for n in nodes}) == 1
    assert len({id(n.directory) for n in nodes}) == 1
    assert len({id(n.learner.model) for n in nodes}) == NODES


def test_memory_per_node_is_bounded(host: NodeGroup) -> None:
    nbytes = host.setup.spec.nbytes
    for node in host.nodes.values():
        # The model and its SGD momentum; no gradients, no round-base copy, no buffered model.
        assert all(p.grad is None for p in node.learner.model.parameters())
        assert node.aggregator.round_base is None
        val = node.data.val_images.numel() + 8 * node.data.val_labels.numel()
        assert owned_bytes(node) <= 2 * nbytes + val + 8 * len(node.data.train_idx)
        assert len(node.seen) == 1 + DEGREE  # own transaction and the peers' of this round


def test_seen_set_forgets_expired_transactions(tmp_path: Path) -> None:
    clock = FakeClock()
    h = big_host(regular_config(SMALL, expiry_s=60.0), tmp_path, clock)
    node = h.nodes[0]
    for n in h.nodes.values():
        n.train()
        n.publish()
    old_tx = next(m for dest, m in h.transport.inbox if dest == 0 and isinstance(m, TxMessage))
    assert h._drain() == []
    h.end_round(0)
    h.finish_round()
    first = set(node.seen)
    assert len(first) == 1 + DEGREE
    clock.now += 61.0  # every transaction of round 0 has expired
    run_round(h, 1)
    assert len(node.seen) == 1 + DEGREE and not first & set(node.seen)
    # A late copy of a forgotten transaction fails the expiry check: never accepted twice.
    accepted = node.counters["accepted"]
    node.on_transaction(TxMessage(old_tx.header, old_tx.payload, 1, old_tx.sender))
    assert node.rejected == {"expired": 1} and node.counters["accepted"] == accepted


def first_wave(tmp_path: Path) -> tuple[DFLNode, list[Message]]:
    """Node 0 of a fresh host and the messages every node's first publication sends it."""
    h = big_host(regular_config(SMALL), tmp_path)
    for node in h.nodes.values():
        node.train()
        node.publish()
    inbox = h.transport.take_inbox()
    return h.nodes[0], [m for dest, m in inbox if dest == 0]


def test_a_wave_of_messages_commits_once(tmp_path: Path) -> None:
    node, mine = first_wave(tmp_path)
    assert len(mine) == DEGREE
    assert node.store is not None
    statements: list[str] = []
    node.store._conn.set_trace_callback(statements.append)
    node.on_messages(mine)
    assert node.counters["accepted"] == DEGREE
    assert statements.count("RELEASE sp0") == 1  # one outermost commit for the whole wave
    assert len(node.store.issued_receipt_ids()) == DEGREE


def test_invalid_message_in_a_wave_is_counted_and_the_rest_stored(tmp_path: Path) -> None:
    node, mine = first_wave(tmp_path)
    assert all(isinstance(m, TxMessage) for m in mine)
    broken = TxMessage(b"not a transaction", mine[0].payload, 1, mine[0].sender)
    node.on_messages([broken, *mine])
    assert node.rejected == {"malformed": 1}
    assert node.counters["accepted"] == DEGREE
    assert node.store is not None and len(node.store.issued_receipt_ids()) == DEGREE
    assert np.isfinite(node.get_vector()).all()
