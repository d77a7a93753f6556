"""The async schedule's loop without Ray: two processes' nodes joined directly, stepped by hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dfl_ray.actors.gossip import PACE_ROUNDS, Batch, GossipLoop, NodeState, Phase
from dfl_ray.actors.host import NodeHost
from dfl_ray.config import Config
from dfl_ray.data import partition
from dfl_ray.ledger import read_chain, verify_chain
from dfl_ray.models import LeNet, ModelSpec, model_to_vector
from dfl_ray.node import HostSetup, NodeGroup
from dfl_ray.node.aggregator import Buffered
from dfl_ray.topology import build_topology, neighbors
from tests.helpers import (
    capture_aggregations,
    capture_rule_calls,
    genesis_for,
    small_config,
    synthetic_arrays,
)

ROUNDS = 4


class FakeClock:
    """The loops' virtual clock: a local training takes one second, nothing else takes time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def two_hosts(config: Config, run_dir: Path | None,
              kind: type[NodeGroup] = NodeGroup) -> list[NodeGroup]:
    """The nodes of `config` (a 4-node ring unless it says otherwise) in two processes'
    groups (`kind`): the first half ({0, 1}) and the second ({2, 3})."""
    torch.manual_seed(0)
    model = LeNet()
    spec = ModelSpec.of(model, "lenet")
    initial = model_to_vector(model)
    n = config.topology.nodes
    arrays: dict[str, Any] = synthetic_arrays(n_train=60 * n)
    shards = partition(arrays["train_labels"], n, kind="iid", seed=0, val_fraction=0.2)
    peers = neighbors(build_topology(config.topology.kind, n, seed=0))
    groups = [
        kind(HostSetup(
            host_index=h, node_ids=ids, config=config, shards={i: shards[i] for i in ids},
            neighbors={i: peers[i] for i in ids},
            genesis=genesis_for(config, initial, spec).encode(), spec=spec,
            arrays={**arrays, "initial": initial},
            run_dir=str(run_dir) if run_dir is not None else None,
        ))
        for h, ids in enumerate([tuple(range(n // 2)), tuple(range(n // 2, n))])
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
        kwargs.setdefault("pace_rounds", 0)  # stragglers: k x their busy seconds, exact holds
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


def test_a_straggler_holds_for_all_its_work_not_only_its_training() -> None:
    """A k times slower node holds each trained model for (k - 1) x the busy seconds of its
    work since its last publication (scoring, aggregation, ledger and training), at least its
    training: a device k times slower at everything."""
    clock = FakeClock()
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, clock, slowdown={0: 3.0})
    node, state = groups[0].nodes[0], loops[0].states[0]
    busy = [100.0]
    node.timer.busy = lambda: busy[0]  # type: ignore[method-assign]
    train, calls = node.train, [0]

    def busier_train() -> None:
        if calls[0] == 1:
            busy[0] += 5.0  # five busy seconds of work since its first publication
        calls[0] += 1
        train()

    node.train = busier_train  # type: ignore[method-assign]
    holds: list[float] = []
    local_round = loops[0]._local_round

    def recorded(s: NodeState) -> None:
        local_round(s)
        if s is state:
            assert s.hold_until is not None
            holds.append(s.hold_until - s.round_start - s.compute_s)

    loops[0]._local_round = recorded  # type: ignore[method-assign]
    run_until(loops, clock, lambda: state.phase is Phase.FINISHED)
    # Its first round: one (fake) second of training, no other work; its second: five busy
    # seconds; then again only its training.
    assert state.done == ROUNDS
    assert holds == pytest.approx([2 * 1.0, 2 * 5.0] + [2 * 1.0] * (ROUNDS - 2))


def test_a_straggler_times_its_pace_then_publishes_k_times_slower() -> None:
    """With timing rounds (the runtime's default), a k times slower node runs its first
    `PACE_ROUNDS` rounds at full speed and times them, P seconds a round from round start to
    round start (waits for its peers included), then publishes a round every k x P."""
    clock = FakeClock()
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, clock, slowdown={0: 3.0}, pace_rounds=PACE_ROUNDS)
    state = loops[0].states[0]
    starts: list[float] = []
    published: list[float] = []
    local_round, publish = loops[0]._local_round, loops[0]._publish

    def started(s: NodeState) -> None:
        local_round(s)
        if s is state:
            starts.append(s.round_start)

    def recorded(s: NodeState, n: Any) -> None:
        if s is state:
            published.append(clock.now)
        publish(s, n)

    loops[0]._local_round = started  # type: ignore[method-assign]
    loops[0]._publish = recorded  # type: ignore[method-assign]
    run_until(loops, clock, lambda: state.phase is Phase.FINISHED)
    assert state.done == ROUNDS == len(published) == len(starts) > PACE_ROUNDS
    assert state.pace == pytest.approx((starts[PACE_ROUNDS] - starts[0]) / PACE_ROUNDS)
    assert state.pace > 1.0  # more than its one-second training: it waited for its peers
    for i in range(PACE_ROUNDS):  # full speed: published as soon as trained
        assert published[i] == pytest.approx(starts[i] + 1.0)
    for i in range(PACE_ROUNDS, ROUNDS):
        assert published[i] - published[i - 1] == pytest.approx(3.0 * state.pace)


def test_a_sync_straggler_holds_its_host_for_its_share_of_the_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Sync: a host trains its nodes one after another, so a k times slower node holds the
    host's round for (k - 1) x n x its busy seconds in the round, n the host's nodes; a host
    without stragglers does not hold."""
    hosts = two_hosts(config(runtime={"slow_nodes": (0,), "slowdown": 3.0}), None, NodeHost)
    slept: list[float] = []
    monkeypatch.setattr("dfl_ray.actors.host.time.sleep", slept.append)
    node = hosts[0].nodes[0]
    busy = [100.0]
    node.timer.busy = lambda: busy[0]  # type: ignore[method-assign]
    train = node.train

    def half_a_second() -> None:
        train()
        busy[0] += 0.5

    node.train = half_a_second  # type: ignore[method-assign]
    assert len(hosts[0].nodes) == 2
    hosts[0].begin_round(0)
    assert slept == [pytest.approx((3.0 - 1.0) * 2 * 0.5)]
    hosts[1].begin_round(0)
    assert len(slept) == 1


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


@pytest.mark.parametrize("reuse", [True, False])
def test_a_node_that_outlives_its_peers_aggregates_their_last_models(reuse: bool) -> None:
    """With `reuse`, each wait's end aggregates the peers' latest models when nothing newer
    came (their final ones, once they finished); without, the node trains alone."""
    clock = FakeClock()
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, clock, slowdown={0: 50.0}, reuse=reuse)
    states = {**loops[0].states, **loops[1].states}
    run_until(loops, clock, lambda: all(states[n].phase is Phase.FINISHED for n in (1, 2, 3)))
    run_until(loops, clock, lambda: states[0].phase is Phase.FINISHED)
    slow = groups[0].nodes[0]
    assert states[0].done == ROUNDS
    if reuse:
        # The first wait takes the three new final models; the later ones reuse them.
        assert slow.counters["aggregations"] == ROUNDS and states[0].short == 0
        assert slow.counters["reused"] == 3 * (ROUNDS - 1)
        assert len(slow.latest) == 3 and not slow.buffer
    else:
        assert slow.counters["aggregations"] == 1 and states[0].short == ROUNDS - 1
        assert "reused" not in slow.counters and not slow.latest


def test_reused_models_count_by_their_staleness_and_leave_the_buffer_new() -> None:
    """DFLNode.aggregate(reuse=True): a creator with no new model counts with its latest,
    weighed by its staleness, left out past the bound without counting as dropped; a buffer
    still short of `buffer_size` aggregates nothing and keeps only its new models."""
    groups = two_hosts(small_config(defense={"rule": "fedavg", "buffer_size": 3}), None)
    node = groups[0].nodes[0]
    node.keep_latest = True
    node.seq = 10
    own = node.learner.vector().copy()
    keys = [k for k, i in node.directory.items() if i != 0]
    models = [own + np.float32(0.01 * (i + 1)) for i in range(3)]
    node.latest = {keys[1]: Buffered(models[1], 0.5, 10), keys[2]: Buffered(models[2], 0.5, 2)}
    node.buffer = {keys[0]: Buffered(models[0], 0.5, 10)}
    node.latest[keys[0]] = node.buffer[keys[0]]
    # keys[2]'s latest is 8 rounds behind, its base 9 old: past the bound, left out; the buffer
    # is short of 3: nothing aggregated, the reused model does not stay in it.
    assert not node.aggregate(4, ages={keys[2]: 10}, decay=0.5, reuse=True)
    assert set(node.buffer) == {keys[0]} and node.counters["stale_dropped"] == 0
    aggregations = capture_aggregations(node)
    assert node.aggregate(4, ages={keys[2]: 3}, decay=0.5, reuse=True)
    seen = aggregations[0]
    assert set(seen) == set(keys) and node.counters["reused"] == 2
    np.testing.assert_array_equal(seen[keys[1]], models[1])  # level with the node: as it is
    expected = own + np.float32(3 ** -0.5) * (models[2] - own)  # base 3 rounds old: 2 stale
    np.testing.assert_allclose(seen[keys[2]], expected, rtol=0, atol=1e-6)
    assert not node.buffer and set(node.latest) == set(keys)


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


def test_a_peer_that_is_only_slower_keeps_the_pace_it_sets() -> None:
    """A node whose rounds take three times as long (a larger shard) is waited for each round,
    not taken for a straggler: every aggregation takes models of the very round (slack 0)."""
    clock = FakeClock()
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, clock)
    slow = groups[0].nodes[0]
    slow.train = seconds_more(slow.train, clock, 2.0)  # type: ignore[method-assign]
    states = {**loops[0].states, **loops[1].states}
    run_until(loops, clock, lambda: all(s.phase is Phase.FINISHED for s in states.values()))
    nodes = {n: node for g in groups for n, node in g.nodes.items()}
    for n, node in nodes.items():
        assert states[n].done == ROUNDS and not states[n].stragglers, n
        assert node.counters["aggregations"] == ROUNDS
        assert set(node.staleness) == {0}, (n, node.staleness)


def seconds_more(train: Callable[[], None], clock: FakeClock, seconds: float) -> Callable[[], None]:
    def timed() -> None:
        train()
        clock.now += seconds
    return timed


def held_once(train: Callable[[], None], state: NodeState, slowdown: float,
              turn: int) -> Callable[[], None]:
    """`train`, its model held for (slowdown - 1) x its training in its `turn`-th round only
    (a machine held up once)."""
    calls = [0]

    def trained() -> None:
        train()
        state.slowdown = slowdown if calls[0] == turn else 1.0
        calls[0] += 1
    return trained


def all_nodes(groups: list[NodeGroup]) -> dict[int, Any]:
    return {n: node for g in groups for n, node in g.nodes.items()}


def test_a_peer_late_once_is_not_taken_for_a_straggler() -> None:
    """Held up in one round, a peer is not waited for in that wait, but it is not taken for a
    straggler: it is waited for again in the next, and catches up."""
    clock = FakeClock()
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, clock)
    states = {**loops[0].states, **loops[1].states}
    late = groups[0].nodes[1]
    late.train = held_once(late.train, states[1], 10.0, turn=1)  # type: ignore[method-assign]
    run_until(loops, clock, lambda: all(s.phase is Phase.FINISHED for s in states.values()))
    assert all(s.done == ROUNDS for s in states.values())
    assert sum(s.gave_up for s in states.values()) >= 2  # its peers stopped waiting for it once
    assert not any(s.stragglers for s in states.values())  # but none took it for a straggler
    assert not any(s.misses for s in states.values())  # and it was in time again afterwards


def test_the_next_slowest_peer_keeps_its_pace_once_a_straggler_is_left_out() -> None:
    """Six nodes, all peers of each other: node 0 is a straggler, node 3 trains three times as
    long as the others. The quorum is a share of every peer known, the straggler counted as
    not in, so the typical round stays that of the slower peers: node 3 is waited for each
    round and never drifts away, however long the others run ahead of node 0."""
    clock = FakeClock()
    groups = two_hosts(config(topology={"kind": "full", "nodes": 6}), None)
    loops = joined_loops(groups, clock, slowdown={0: 50.0})
    slower = groups[1].nodes[3]
    slower.train = seconds_more(slower.train, clock, 2.0)  # type: ignore[method-assign]
    states = {**loops[0].states, **loops[1].states}
    run_until(loops, clock, lambda: all(states[n].phase is Phase.FINISHED for n in range(1, 6)))
    key0, key3 = groups[0].nodes[0].identity.public_key, slower.identity.public_key
    for n in range(1, 6):
        assert states[n].done == ROUNDS
        assert key0 in states[n].stragglers, n
        assert key3 not in states[n].stragglers, n
    assert states[0].done < ROUNDS
    for n, node in all_nodes(groups).items():
        if n:
            # It aggregated after (almost) every round, node 3's models among them (a wait
            # that ended while node 0 was excused could end short of a buffer); but for node
            # 0's, every model it aggregated was of the very round.
            assert node.counters["aggregations"] >= ROUNDS - 1, n
            assert node.staleness[0] >= sum(node.staleness.values()) - 1, (n, node.staleness)
            assert n == 3 or node.last_seq[key3] == ROUNDS - 1


def test_a_third_of_the_peers_silent_does_not_stall_the_others() -> None:
    """Ten nodes, all peers of each other, three of them 500 times slower (silent: their first
    model comes after some fifty of the others' rounds). That is more than a quarter of each
    node's peers, so the quorum that times the typical round never publishes without them.
    Half the peers do: the three are silent once they take `SILENT` times as long, and the
    others flag them and run their rounds without them."""
    clock = FakeClock()
    groups = two_hosts(config(topology={"kind": "full", "nodes": 10}), None)
    slow = (0, 1, 5)
    loops = joined_loops(groups, clock, slowdown=dict.fromkeys(slow, 500.0))
    states = {**loops[0].states, **loops[1].states}
    fast = [n for n in states if n not in slow]
    run_until(loops, clock, lambda: all(states[n].phase is Phase.FINISHED for n in fast))
    keys = {n: node.identity.public_key for n, node in all_nodes(groups).items()}
    for n in fast:
        assert states[n].done == ROUNDS
        assert {keys[k] for k in slow} <= states[n].stragglers, n
        assert states[n].gave_up >= 2, n  # two waits ended by the silent peers' deadlines
    assert all(states[n].done == 0 for n in slow)
    assert clock.now < 499.0  # before the silent peers' first model


@pytest.mark.parametrize("slow", [(0, 1, 5), (0, 1, 5, 6)])
def test_a_third_of_the_peers_slower_is_left_out_more_set_the_pace(slow: tuple[int, ...]) -> None:
    """The other side of `SILENT`: peers 50 times slower than a training, in a world where
    every round of the others takes some seven trainings (one clock for all ten), are some
    seven typical rounds slow: slower, not silent. Three among nine leave the quorum (two
    thirds of the peers) to the others, who time their rounds by it and leave the three out;
    four among nine are in every quorum, and the others wait for them (a known limit)."""
    clock = FakeClock()
    groups = two_hosts(config(topology={"kind": "full", "nodes": 10}), None)
    loops = joined_loops(groups, clock, slowdown=dict.fromkeys(slow, 50.0))
    states = {**loops[0].states, **loops[1].states}
    fast = [n for n in states if n not in slow]
    run_until(loops, clock, lambda: all(states[n].phase is Phase.FINISHED for n in fast))
    keys = {n: node.identity.public_key for n, node in all_nodes(groups).items()}
    assert all(states[n].done == ROUNDS for n in fast)
    if len(slow) == 3:
        assert all({keys[k] for k in slow} <= states[n].stragglers for n in fast)
        assert all(states[n].done < ROUNDS for n in slow)
    else:
        assert all(states[n].done == ROUNDS for n in slow)
        assert not any(states[n].stragglers for n in fast)


@pytest.mark.parametrize("restored", [False, True])
def test_a_restored_node_whose_peers_finished_does_not_wait_forever(restored: bool) -> None:
    """A node restored after a restart, with rounds left to run, knows no typical round and
    never hears its finished peers publish again: its own training stands in for the typical
    round, so its waits end. A node that was not restored waits for its quorum instead."""
    clock = FakeClock()
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, clock)
    everyone = [s for loop in loops for s in loop.states.values()]
    run_until(loops, clock, lambda: all(s.phase is Phase.FINISHED for s in everyone))
    node = groups[0].nodes[0]
    if restored:
        node.counters["restored"] += 1
    # What the host does for a restarted actor: a fresh loop state, its rounds so far done.
    state = loops[0].states[0] = NodeState(0, ROUNDS + 2)
    state.done = ROUNDS
    run_until(loops, clock, lambda: state.phase is Phase.FINISHED)
    if not restored:
        assert state.phase is Phase.WAIT and state.deadline is None and state.done == ROUNDS + 1
        return
    assert state.phase is Phase.FINISHED and state.done == ROUNDS + 2
    assert len(state.stragglers) == 3  # its finished peers, late in two waits in a row


def test_a_straggler_s_models_are_judged_by_their_base_and_weighed_down() -> None:
    """A straggler twelve times slower publishes a fraction of its peers' rounds, but each of
    its models is built on a base only a few of their rounds old: they aggregate its models as
    that stale (within the bound), moved towards their own model, instead of dropping them
    for their round numbers."""
    clock = FakeClock()
    groups = two_hosts(config(), None)
    loops = joined_loops(groups, clock, slowdown={0: 12.0}, max_staleness=4, patience=1.0)
    states = {**loops[0].states, **loops[1].states}
    for s in states.values():
        s.rounds = 16
    run_until(loops, clock, lambda: all(states[n].phase is Phase.FINISHED for n in (1, 2, 3)))
    nodes = all_nodes(groups)
    key0 = nodes[0].identity.public_key
    for n in (1, 2, 3):
        node = nodes[n]
        assert states[n].done == 16 and key0 in states[n].stragglers
        # By round number node 0's last model is far more than the bound behind ...
        assert node.seq - node.last_seq[key0] > 2 * 4
        # ... but none was dropped, and the stale ones were weighed down.
        assert node.counters["stale_dropped"] == 0, (n, node.staleness)
        assert 0 < max(node.staleness) <= 4 and node.counters["decayed"] >= 1, (n, node.staleness)


def node_in_round_ten() -> tuple[Any, np.ndarray, list[bytes]]:
    """Node 0 of a fresh 4-node network, ten rounds published: the node, its model (a copy)
    and its peers' keys."""
    node = two_hosts(config(), None)[0].nodes[0]
    node.seq = 10
    return node, node.learner.vector().copy(), [k for k, i in node.directory.items() if i != 0]


def test_a_stale_model_reaches_the_rule_moved_towards_the_own_model() -> None:
    """DFLNode.aggregate: a model s rounds stale (by the age of its base, when smaller than
    its round-number staleness) is judged by the rule as it was sent, then aggregated at
    (1 + s) ** -decay of its distance from the own model; a fresh one as it is; one staler
    than the bound not at all."""
    node, own, keys = node_in_round_ten()
    rng = np.random.default_rng(0)
    models = [own + rng.normal(0, 0.01, own.shape).astype(np.float32) for _ in keys]
    node.buffer = {keys[0]: Buffered(models[0], 0.5, 10),  # fresh
                   keys[1]: Buffered(models[1], 0.5, 2),   # 8 rounds by number, base 3 old
                   keys[2]: Buffered(models[2], 0.5, 1)}   # 9 by number, age unknown
    calls = capture_rule_calls(node)
    assert node.aggregate(4, ages={keys[1]: 3}, decay=0.5)
    assert node.counters["stale_dropped"] == 1  # keys[2]: 9 rounds stale, no age known
    # First the models as sent, then (both accepted) the stale one moved.
    assert [sorted(c) for c in calls] == [sorted([keys[0], keys[1]])] * 2
    np.testing.assert_array_equal(calls[0][keys[1]], models[1])
    np.testing.assert_array_equal(calls[1][keys[0]], models[0])
    expected = own + np.float32(3 ** -0.5) * (models[1] - own)  # age 3: 2 rounds stale
    np.testing.assert_allclose(calls[1][keys[1]], expected, rtol=0, atol=1e-6)
    assert node.staleness == {0: 1, 2: 1} and node.counters["decayed"] == 1


def test_a_stale_model_the_rule_rejects_as_sent_is_not_moved_into_its_radius() -> None:
    """A near-zero model, stale: as sent it lies a whole model norm off and dfl_guard rejects
    it; moved to (1 + s) ** -0.5 of that distance first, it passed the gate."""
    node, own, keys = node_in_round_ten()
    rng = np.random.default_rng(0)
    body = np.ones(own.shape, dtype=bool)
    body[node.aggregator.head] = False
    step = float(np.linalg.norm(own)) * 0.2 / np.sqrt(body.sum())  # gate: 3 x 0.2 norms
    honest = [own + (rng.normal(0, step, own.shape) * body).astype(np.float32) for _ in range(2)]
    zero = rng.uniform(0.0, 0.001, own.shape).astype(np.float32)
    node.buffer = {keys[0]: Buffered(honest[0], 0.5, 10), keys[1]: Buffered(honest[1], 0.5, 10),
                   keys[2]: Buffered(zero, 0.5, 7)}  # 3 rounds stale: moved to half its distance
    weights = capture_weights(node)
    assert node.aggregate(4, decay=0.5)
    assert weights[keys[2]] == 0.0 and weights[keys[0]] > 0 and weights[keys[1]] > 0
    assert node.counters["decayed"] == 1 and node.reputations[keys[2].hex()] < 1.0


def capture_weights(node: Any) -> dict[bytes, float]:
    """The weight the node's rule gave each sender in its latest aggregation (fills as it runs)."""
    weights: dict[bytes, float] = {}
    real = node.aggregator.aggregate

    def capture(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        weights.update(zip(args[2], result.weights.tolist(), strict=True))
        return result

    node.aggregator.aggregate = capture
    return weights


def test_a_straggler_measures_what_it_received_from_their_median_not_its_stale_model() -> None:
    """DFLNode.aggregate: a node more than the bound behind the models it received (a
    straggler) aggregates them around their coordinate-wise median. Measured from its own stale
    model every fresh model lies far off, dfl_guard's radius (the median distance) grows with
    the lag, and a near-zero model an attacker sent passed the gate."""
    groups = two_hosts(config(), None)
    node = groups[0].nodes[0]
    stale = node.learner.vector().copy()
    rng = np.random.default_rng(0)
    body = np.ones(stale.shape, dtype=bool)
    body[node.aggregator.head] = False  # the output layer as trained: its tests pass
    ahead = rng.normal(0.0, 1.0, stale.shape) * body
    ahead *= 0.5 * float(np.linalg.norm(stale)) / float(np.linalg.norm(ahead))
    fresh = [(stale + ahead + rng.normal(0, 1e-3, stale.shape) * body).astype(np.float32)
             for _ in range(2)]
    zero = rng.uniform(0.0, 0.001, stale.shape).astype(np.float32)
    keys = [k for k, i in node.directory.items() if i != 0]
    node.buffer = {keys[0]: Buffered(fresh[0], 0.5, 10), keys[1]: Buffered(fresh[1], 0.5, 10),
                   keys[2]: Buffered(zero, 0.5, 10)}
    weights = capture_weights(node)
    assert node.aggregate(4)  # node.seq 0: ten rounds behind
    assert node.counters["rebased"] == 1
    assert weights[keys[2]] == 0.0 and weights[keys[0]] > 0 and weights[keys[1]] > 0
    # It left with the fresh models, within their own spread (its stale model lay 5 x that off).
    centre = (fresh[0].astype(np.float64) + fresh[1]) / 2
    spread = float(np.linalg.norm(fresh[0] - fresh[1]))
    assert np.linalg.norm(stale - centre) > 5 * spread
    assert np.linalg.norm(node.learner.vector() - centre) < spread
