"""The async schedule over Ray: nodes on different host actors gossip, aggregate and seal while
they train, and their chains verify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dfl_ray.ledger import read_chain, verify_chain
from dfl_ray.runner import run_experiment
from tests.conftest import tiny_config

pytestmark = pytest.mark.ray

ROUNDS = 4
HONEST = (0, 1, 2)  # tiny_config's attacker is node 3


def run_async(tmp_path: Path, data_dir: Path, name: str, **runtime: Any) -> dict[str, Any]:
    return run_experiment(
        tiny_config(tmp_path, data_dir, experiment={"name": name, "rounds": ROUNDS},
                    runtime={"schedule": "async", **runtime}),
        quiet=True,
    )


@pytest.mark.parametrize("hosts", [4, 2])
def test_nodes_on_different_hosts_exchange_aggregate_and_seal(
    local_ray: None, tmp_path: Path, data_dir: Path, hosts: int
) -> None:
    summary = run_async(tmp_path, data_dir, f"async{hosts}", hosts=hosts)
    assert summary["schedule"] == "async"
    assert summary["counters"]["published"] == 4 * ROUNDS
    for n in range(4):
        node = summary["per_node"][str(n)]
        assert node["rounds"] == ROUNDS
        # From both ring neighbours, at least one of which lives on another host actor.
        assert node["received"] >= 2 * ROUNDS, (n, node)
    chains = {n: tmp_path / f"async{hosts}" / "chains" / f"node_{n}" for n in range(4)}
    for n in HONEST:
        node = summary["per_node"][str(n)]
        assert node["aggregations"] >= 1, (n, node)
        chain = read_chain(chains[n])
        assert chain.blocks, f"node {n} sealed no block"
        for block in chain.blocks:
            # Receipts its peers issued for its models, endorsed by those who issued them.
            receivers = {r.receiver for e in block.entries for r in e.receipts}
            assert receivers and all(e.receipts for e in block.entries)
            assert block.endorsements
            assert {e.signer for e in block.endorsements} <= receivers
    for path in chains.values():
        verify_chain(path)
    assert summary["rejected"].keys() <= {"replay"}  # gossip may bring an older model late
    assert summary["staleness"]["histogram"]


def test_stragglers_are_not_waited_for(local_ray: None, tmp_path: Path, data_dir: Path) -> None:
    """A node 1000 times slower holds after its first round; the others run theirs, receive
    its model, and it answers them all along: the run ends without it and every chain verifies."""
    summary = run_async(tmp_path, data_dir, "slow", hosts=4, slow_nodes=(0,), slowdown=1000.0)
    per_node = summary["per_node"]
    assert per_node["0"]["rounds"] == 1
    assert all(per_node[str(n)]["rounds"] == ROUNDS for n in (1, 2, 3))
    assert per_node["0"]["received"] >= 2 * ROUNDS  # it kept receiving while it held
    for n in range(4):
        verify_chain(tmp_path / "slow" / "chains" / f"node_{n}")
    for n in (1, 2):
        assert read_chain(tmp_path / "slow" / "chains" / f"node_{n}").blocks
