"""A node rebuilt from its store resumes where it was: same model, seq and state; chain whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dfl_ray.ledger import ChainStore, verify_chain
from dfl_ray.node import NodeGroup
from tests.helpers import local_host, small_config


def run_round(host: NodeGroup, r: int) -> None:
    host.begin_round(r)
    host.end_round(r)
    host.finish_round()


def chains(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "chains").iterdir())


def test_restart_after_a_round_continues_as_if_nothing_happened(tmp_path: Path) -> None:
    cfg = small_config(experiment={"rounds": 4})
    straight = local_host(cfg, tmp_path / "straight")
    for r in range(4):
        run_round(straight, r)
    expected = {n: node.get_vector() for n, node in straight.nodes.items()}
    straight.close()

    first = local_host(cfg, tmp_path / "restarted")
    for r in range(2):
        run_round(first, r)
    before = {n: (node.seq, dict(node.reputations), node.counters["aggregations"],
                  list(node.learner.moves)) for n, node in first.nodes.items()}
    first.close()  # the process ends; only the stores remain

    second = local_host(cfg, tmp_path / "restarted")
    assert second.rounds_done == dict.fromkeys(second.nodes, 2)
    for n, node in second.nodes.items():
        assert (node.seq, node.reputations, node.counters["aggregations"],
                list(node.learner.moves)) == before[n]
        assert len(node.learner.moves) == 2  # the divergence tests' history came back too
        assert node.counters["restored"] == 1
    for r in range(2, 4):
        run_round(second, r)
    for n, node in second.nodes.items():
        # Model, momentum, optimizer and random generators all came back: bit for bit.
        np.testing.assert_array_equal(node.get_vector(), expected[n])
        assert node.seq == 3
    second.close()
    for path in chains(tmp_path / "restarted"):
        summary = verify_chain(path)
        assert summary.n_blocks >= 1
        with ChainStore.open(path) as store:
            seqs = sorted(tx.seq for block in store.blocks() for tx in
                          (e.tx for e in block.entries))
            assert store.last_own_seq == 3
        assert seqs == list(range(len(seqs)))  # no gap, nothing sealed twice


def test_a_block_proposed_before_the_crash_is_sealed_after_the_restart(tmp_path: Path) -> None:
    cfg = small_config(experiment={"rounds": 3})
    host = local_host(cfg, tmp_path)
    run_round(host, 0)
    host.begin_round(1)
    # Endorsement requests go out at end_round; the local ones are answered at once, so keep
    # them from arriving: the process dies with every candidate proposed, none stored.
    for node in host.nodes.values():
        node.aggregate()
        node.seal_block()
    proposed = {n: node.candidate.hash for n, node in host.nodes.items()
                if node.candidate is not None}
    assert proposed, "the setting must fill a block by round 1"
    heights = {n: node.store.height for n, node in host.nodes.items()}
    host.transport.take_inbox()  # the requests are lost with the process
    host.close()

    again = local_host(cfg, tmp_path)
    for n, block_hash in proposed.items():
        node = again.nodes[n]
        assert node.candidate is not None and node.candidate.hash == block_hash
    again.end_round(1)  # the restored candidates ask for their endorsements again
    again.finish_round()
    for n in proposed:
        store = again.nodes[n].store
        assert store.height == heights[n] + 1
        tip = store.tip()
        assert tip.hash == proposed[n] and tip.endorsements  # sealed, endorsed this time
        assert store.candidate() is None
    again.close()
    for path in chains(tmp_path):
        verify_chain(path)
