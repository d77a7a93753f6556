"""The async schedule's loop without Ray: two processes' nodes joined directly, stepped by hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dfl_ray.actors.gossip import Batch, GossipLoop, Phase
from dfl_ray.config import Config
from dfl_ray.data import partition
from dfl_ray.ledger import read_chain, verify_chain
from dfl_ray.models import LeNet, ModelSpec, model_to_vector
from dfl_ray.node import HostSetup, NodeGroup
from dfl_ray.topology import build_topology, neighbors
from tests.helpers import genesis_for, small_config, synthetic_arrays

ROUNDS = 4


class FakeClock:
    """The loops' virtual clock: a local training takes one second, nothing else takes time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def two_hosts(config: Config, run_dir: Path | None) -> list[NodeGroup]:
    """The nodes of `config` (a 4-node ring) in two processes' groups: {0, 1} and {2, 3}."""
    torch.manual_seed(0)
    model = LeNet()
    spec = ModelSpec.of(model, "lenet")
    initial = model_to_vector(model)
    arrays: dict[str, Any] = synthetic_arrays(n_train=240)
    shards = partition(arrays["train_labels"], 4, kind="iid", seed=0, val_fraction=0.2)
    peers = neighbors(build_topology("ring", 4, seed=0))
    groups = [
        NodeGroup(HostSetup(
            host_index=h, node_ids=ids, config=config, shards={i: shards[i] for i in ids},
            neighbors={i: peers[i] for i in ids},
            genesis=genesis_for(config, initial, spec).encode(), spec=spec,
            arrays={**arrays, "initial": initial},
            run_dir=str(run_dir) if run_dir is not None else None,
        ))
        for h, ids in enumerate([(0, 1), (2, 3)])
    ]
    directory = {key: n for g in groups for n, key in g.public_keys().items()}
    for g in groups:
        g.connect(directory)
    return groups


def joined_loops(groups: list[NodeGroup], clock: FakeClock | None = None,
                 **kwargs: Any) -> list[GossipLoop]:
    """One loop per group on one fake clock; what a loop sends is pushed to the other's inbox."""
    loops: list[GossipLoop] = []
    clock = clock or FakeClock()

    def sender(h: int) -> Any:
        def send(batch: Batch) -> None:
            assert all(dest in groups[1 - h].nodes for dest, _ in batch)
            loops[1 - h].push(batch)
        return send

    for h, g in enumerate(groups):
        for node in g.nodes.values():
            node.train = one_second(node.train, clock)  # type: ignore[method-assign]
        loops.append(GossipLoop(g, rounds=ROUNDS, send=sender(h), clock=clock, **kwargs))
    return loops


def one_second(train: Callable[[], None], clock: FakeClock) -> Callable[[], None]:
    def timed() -> None:
        train()
        clock.now += 1.0
    return timed


def step_until_quiet(loops: list[GossipLoop], limit: int = 1000) -> int:
    """Step the loops in turn until neither has anything to do; returns the passes made."""
    for passes in range(limit):
        if not any([loop.step() for loop in loops]):
            return passes
    raise AssertionError("the loops never went quiet")


def run_until(loops: list[GossipLoop], clock: FakeClock, done: Callable[[], bool]) -> None:
    """Step until `done`; when every loop waits, move the clock to the next hold's or wait's
    end (a discrete-event simulation: the same steps in the same order every time)."""
    while not done():
        step_until_quiet(loops)
        timers = [t for loop in loops for s in loop.states.values()
                  for t in (s.hold_until, s.deadline) if t is not None and t > clock.now]
        if done() or not timers:
            break
        clock.now = min(timers)


def config(**sections: dict[str, Any]) -> Config:
    return small_config(defense={"rule": "dfl_guard", "buffer_size": 2},
                        ledger={"block_size": 2}, **sections)


def test_nodes_exchange_models_aggregate_and_seal_endorsed_blocks(tmp_path: Path) -> None:
    groups = two_hosts(config(), tmp_path)
    loops = joined_loops(groups)
    step_until_quiet(loops)
    assert all(s.phase is Phase.FINISHED for loop in loops for s in loop.states.values())
    nodes = {n: node for g in groups for n, node in g.nodes.items()}
    for n, node in nodes.items():
        assert node.counters["published"] == ROUNDS
        # Every peer's models arrive, from this host and the other: the last of each is taken,
        # and all of the two ring neighbours' (sent directly, in order).
        assert {node.directory[c]: s for c, s in node.last_seq.items()} == {
            p: ROUNDS - 1 for p in nodes if p != n}
        assert node.counters["accepted"] >= 2 * ROUNDS
        # One aggregation after each round, of models of that very round (slack 0).
        assert node.counters["aggregations"] == ROUNDS
        assert set(node.staleness) == {0}
        assert node.counters["receipts"] >= ROUNDS  # receipts came back for its models
        assert set(node.reputations) >= {nodes[p].identity.public_key.hex()
                                         for p in node.params.peers}
        assert node.store is not None and node.store.height >= 0
    for g in groups:
        g.close()
    for n in nodes:
        summary = verify_chain(tmp_path / "chains" / f"node_{n}")
        assert summary.height >= 0
        chain = read_chain(tmp_path / "chains" / f"node_{n}")
        assert all(block.endorsements for block in chain.blocks)
        issued = {r.receiver for b in chain.blocks for e in b.entries for r in e.receipts}
        assert issued >= {nodes[p].identity.public_key for p in nodes[n].params.peers}


def test_receiving_is_interleaved_with_training() -> None:
    """A node handles what arrived while it trained before its next local round."""
    groups = two_hosts(config(), None)
    loops = joined_loops(groups)
    assert loops[0].step()  # node 0 trains and publishes; its tx goes to node 1 and to node 3
    assert loops[0].states[0].done == 1 and loops[0].states[1].done == 0
    assert groups[1].nodes[3].counters["accepted"] == 0  # pushed, not yet handled
    assert loops[1].step()  # handles node 0's model first, then runs node 2's round
    key0 = groups[0].nodes[0].identity.public_key
    assert all(groups[1].nodes[n].last_seq.get(key0) == 0 for n in (2, 3))
    assert groups[1].nodes[3].counters["accepted"] == 2  # node 0's, then node 2's (local)
    assert loops[1].states[2].done == 1
    assert loops[0].step()  # node 1 trains next, after handling node 2's
    assert loops[0].states[1].done == 1 and loops[0].states[0].done == 1
    assert groups[0].nodes[1].counters["accepted"] >= 2  # node 0's (local) and node 2's


def test_a_node_waits_for_its_peers_round_before_its_next() -> None:
    groups = two_hosts(config(), None)
    loops = joined_loops(groups)
    loops[0].step()
    loops[0].step()  # nodes 0 and 1 published round 0; node 3 (node 0's peer) has not
    assert loops[0].states[0].phase is Phase.WAIT
    assert not loops[0].step()  # nothing to do: node 0 waits, node 1 too
    loops[1].step()  # node 2's round
    loops[1].step()  # node 3's round
    assert loops[0].step()  # their models arrive: nodes 0 and 1 aggregate, node 0 trains
    assert loops[0].states[0].done == 2 and groups[0].nodes[0].counters["aggregations"] == 1


def test_free_running_nodes_never_wait() -> None:
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, slack=-1)
    for _ in range(ROUNDS):
        loops[0].step()
    assert loops[0].states[0].done + loops[0].states[1].done == ROUNDS
    assert all(s.done == 0 for s in loops[1].states.values())


def test_a_straggler_is_not_waited_for_and_keeps_answering() -> None:
    clock = FakeClock()
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, clock, slowdown={0: 50.0})
    states = {**loops[0].states, **loops[1].states}
    run_until(loops, clock, lambda: all(states[n].phase is Phase.FINISHED for n in (1, 2, 3)))
    assert all(states[n].done == ROUNDS for n in (1, 2, 3))
    slow = groups[0].nodes[0]
    key0 = slow.identity.public_key
    assert key0 in states[1].stragglers and key0 in states[3].stragglers
    # Node 0 still holds its first model. It received, scored and issued receipts all along,
    # but aggregates nothing while it holds, however full its buffer.
    assert states[0].phase is Phase.HOLD and states[0].done == 0
    assert slow.counters["accepted"] >= 2 * ROUNDS
    assert len(slow.buffer) == 3 and slow.counters["aggregations"] == 0
    for n in (1, 2, 3):
        assert groups[n // 2].nodes[n].counters["receipts"] >= ROUNDS  # node 0's among them
    # Its hold ends: it publishes (its finished peers take the model), aggregates, trains on.
    run_until(loops, clock, lambda: states[0].done == 1)
    step_until_quiet(loops)
    assert slow.counters["aggregations"] == 1 and states[0].phase is Phase.HOLD
    for n in (1, 3):
        assert groups[n // 2].nodes[n].last_seq[key0] == 0


def test_models_staler_than_the_bound_are_dropped() -> None:
    clock = FakeClock()
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, clock, slowdown={0: 50.0}, max_staleness=1)
    states = {**loops[0].states, **loops[1].states}
    run_until(loops, clock, lambda: all(states[n].phase is Phase.FINISHED for n in (1, 2, 3)))
    run_until(loops, clock, lambda: states[0].done == 1)
    step_until_quiet(loops)
    nodes = {n: node for g in groups for n, node in g.nodes.items()}
    # Node 0's first model (seq 0) came when its peers had published seq 3: they dropped it,
    # and aggregated nothing staler than the bound.
    assert all(nodes[n].counters["stale_dropped"] == 1 for n in (1, 2, 3))
    # Node 0, three rounds behind what it received, read their updates against their median.
    assert nodes[0].counters["rebased"] == 1 and nodes[0].counters["aggregations"] == 1
    for n in (1, 2, 3):
        assert max(nodes[n].staleness) <= 1


def test_wind_down_publishes_held_models_and_finishes_every_node() -> None:
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, slowdown={0: 5.0})
    loops[0].step()
    assert loops[0].states[0].phase is Phase.HOLD
    for loop in loops:
        loop.wind_down()
    step_until_quiet(loops)
    assert loops[0].states[0].done == 1
    assert loops[0].states[1].done == 0 and loops[1].states[2].done == 0
    assert all(s.phase is Phase.FINISHED for loop in loops for s in loop.states.values())
