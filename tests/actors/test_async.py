"""The async schedule over Ray: nodes on different host actors gossip, aggregate and seal while
they train, and their chains verify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dfl_ray.actors.gossip import PACE_ROUNDS
from dfl_ray.code import fingerprint
from dfl_ray.ledger import read_chain, verify_chain
from dfl_ray.results import cpu_model
from dfl_ray.runner import run_experiment
from tests.conftest import tiny_config
from tests.helpers import own_seqs

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
    assert summary["environment"]["numpy"] == np.__version__  # the versions the run used
    assert summary["environment"]["dfl_ray"] == fingerprint()  # and the code
    assert summary["environment"]["cpu"] == cpu_model()  # and the processor
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
    """A node 1000 times slower runs its timing rounds at full speed, then holds its next
    model; the others run their rounds, receive its models, and it answers them all along: the
    run ends without it (its held model published as it stops) and every chain verifies."""
    summary = run_async(tmp_path, data_dir, "slow", hosts=4, slow_nodes=(0,), slowdown=1000.0)
    per_node = summary["per_node"]
    # Its timing rounds, and its held one unless the others finished before it trained it.
    assert per_node["0"]["rounds"] in (PACE_ROUNDS, PACE_ROUNDS + 1)
    assert PACE_ROUNDS + 1 < ROUNDS
    assert all(per_node[str(n)]["rounds"] == ROUNDS for n in (1, 2, 3))
    assert per_node["0"]["received"] >= 2 * ROUNDS  # it kept receiving while it held
    for n in range(4):
        verify_chain(tmp_path / "slow" / "chains" / f"node_{n}")
    for n in (1, 2):
        assert read_chain(tmp_path / "slow" / "chains" / f"node_{n}").blocks


def test_a_host_killed_mid_run_restarts_and_its_node_runs_its_rounds(
    local_ray: None, tmp_path: Path, data_dir: Path
) -> None:
    """`faults.kill 1@2`: the process holding node 1 SIGKILLs itself as node 1 starts its round
    2. The others go on; the driver restarts the host and node 1 resumes from its chain and
    checkpoint: no seq is skipped or published twice, and every chain verifies. (How many
    rounds it runs after the restart depends on how long the restart takes: the run ends once
    the nodes that are up have run theirs, as a down node is not waited for.)"""
    summary = run_experiment(
        tiny_config(tmp_path, data_dir, experiment={"name": "killed", "rounds": ROUNDS},
                    attack={"kind": "none", "malicious": 0},
                    runtime={"schedule": "async", "hosts": 4}, faults={"kill": "1@2"}),
        quiet=True,
    )
    assert summary["status"] == "ok"
    kinds = [e["kind"] for e in summary["faults"]["events"] if 1 in e.get("nodes", [])]
    assert "restarted" in kinds, summary["faults"]["events"]
    assert summary["faults"]["restored"] == 1
    assert (tmp_path / "killed" / "faults" / "killed_node1_round2").exists()
    assert all(summary["per_node"][str(n)]["rounds"] == ROUNDS for n in (0, 2, 3))
    rounds = summary["per_node"]["1"]["rounds"]
    assert 2 <= rounds <= ROUNDS  # its rounds 0 and 1 before the kill, restored
    assert own_seqs(tmp_path / "killed", 1) == list(range(rounds))
    for n in range(4):
        verify_chain(tmp_path / "killed" / "chains" / f"node_{n}")
