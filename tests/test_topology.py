"""Tests for dfl_ray.topology: every kind's shape, determinism, connectivity and validation."""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import pytest

from dfl_ray.topology import (
    DFL10_EDGES,
    TOPOLOGY_KINDS,
    build_topology,
    diameter,
    neighbors,
)

# The original DFL's graph, written the way the spec lists it.
DFL10_SPEC = "0-2 0-3 0-8 1-5 1-7 1-8 1-9 2-8 3-4 3-5 3-7 4-5 4-6 4-8 4-9 5-6 5-7 5-9 6-7"

# (kind, n, kwargs) that build for every kind; used for the properties all graphs share.
CASES: list[tuple[str, int, dict[str, Any]]] = [
    ("full", 7, {}),
    ("ring", 9, {}),
    ("regular", 12, {"degree": 3}),
    ("random", 20, {"degree": 4}),
    ("small_world", 16, {"degree": 4, "p": 0.3}),
    ("edges", 5, {"edges": [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (0, 2)]}),
    ("dfl10", 10, {}),
]


def edge_set(g: nx.Graph) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u, v in g.edges}


def test_cases_cover_every_kind() -> None:
    assert sorted(kind for kind, _, _ in CASES) == sorted(TOPOLOGY_KINDS)


@pytest.mark.parametrize(("kind", "n", "kwargs"), CASES)
def test_every_kind_is_connected_on_nodes_0_to_n(kind: str, n: int, kwargs: dict[str, Any]) -> None:
    g = build_topology(kind, n, seed=3, **kwargs)
    assert list(g.nodes) == list(range(n))
    assert nx.is_connected(g)
    assert nx.number_of_selfloops(g) == 0
    assert g.graph["kind"] == kind


@pytest.mark.parametrize(("kind", "n", "kwargs"), CASES)
def test_every_kind_is_deterministic_for_a_seed(kind: str, n: int, kwargs: dict[str, Any]) -> None:
    a = build_topology(kind, n, seed=11, **kwargs)
    b = build_topology(kind, n, seed=11, **kwargs)
    assert list(a.edges) == list(b.edges)


@pytest.mark.parametrize(
    ("kind", "n", "degree"), [("regular", 30, 4), ("random", 30, 4), ("small_world", 30, 4)]
)
def test_random_kinds_depend_on_the_seed(kind: str, n: int, degree: int) -> None:
    graphs = {frozenset(edge_set(build_topology(kind, n, degree=degree, seed=s))) for s in range(5)}
    assert len(graphs) > 1


def test_full_has_all_pairs() -> None:
    g = build_topology("full", 6)
    assert g.number_of_edges() == 6 * 5 // 2
    assert diameter(g) == 1


def test_ring_is_a_cycle() -> None:
    g = build_topology("ring", 8)
    assert g.number_of_edges() == 8
    assert all(d == 2 for _, d in g.degree)
    assert edge_set(g) == {(i, i + 1) for i in range(7)} | {(0, 7)}
    assert diameter(g) == 4


@pytest.mark.parametrize(("n", "degree"), [(10, 3), (12, 4), (7, 2), (2, 1)])
def test_regular_has_the_degree(n: int, degree: int) -> None:
    g = build_topology("regular", n, degree=degree, seed=5)
    assert g.number_of_edges() == n * degree // 2
    assert {d for _, d in g.degree} == {degree}


def test_random_has_about_the_average_degree() -> None:
    mean_degrees = [
        2 * build_topology("random", 60, degree=6, seed=s).number_of_edges() / 60 for s in range(10)
    ]
    assert 5.0 < float(np.mean(mean_degrees)) < 7.0


def test_random_resamples_until_connected() -> None:
    # At average degree 2 on 40 nodes a G(n, q) sample is almost never connected on the first
    # try, so this only passes if resampling happens.
    assert not nx.is_connected(nx.gnp_random_graph(40, 2 / 39, seed=0))
    g = build_topology("random", 40, degree=2, seed=0)
    assert nx.is_connected(g)


def test_small_world_without_rewiring_is_the_ring_lattice() -> None:
    g = build_topology("small_world", 10, degree=4, p=0.0)
    assert edge_set(g) == {
        (min(i, j), max(i, j)) for i in range(10) for j in ((i + 1) % 10, (i + 2) % 10)
    }


def test_small_world_keeps_the_edge_count() -> None:
    g = build_topology("small_world", 20, degree=4, p=0.5, seed=2)
    assert g.number_of_edges() == 20 * 4 // 2


def test_edges_are_exactly_the_given_list() -> None:
    given = [(3, 0), (0, 1), (1, 2)]
    g = build_topology("edges", 4, edges=given)
    assert edge_set(g) == {(0, 3), (0, 1), (1, 2)}
    assert g.number_of_edges() == 3


def test_dfl10_is_the_original_graph() -> None:
    expected = {tuple(sorted(int(x) for x in e.split("-"))) for e in DFL10_SPEC.split()}
    g = build_topology("dfl10", 10)
    assert g.number_of_nodes() == 10
    assert g.number_of_edges() == 19
    assert edge_set(g) == expected
    assert set(DFL10_EDGES) == expected


def test_dfl10_ignores_the_seed() -> None:
    assert edge_set(build_topology("dfl10", 10, seed=0)) == edge_set(
        build_topology("dfl10", 10, seed=99)
    )


def test_neighbors_are_sorted_and_symmetric() -> None:
    nb = neighbors(build_topology("dfl10", 10))
    assert nb[0] == (2, 3, 8)
    assert nb[5] == (1, 3, 4, 6, 7, 9)
    assert list(nb) == list(range(10))
    for v, peers in nb.items():
        assert list(peers) == sorted(peers)
        assert all(v in nb[u] for u in peers)


def test_diameter_of_dfl10() -> None:
    g = build_topology("dfl10", 10)
    assert diameter(g) == nx.diameter(g) == 3


def test_numpy_ints_are_accepted() -> None:
    g = build_topology("edges", np.int64(3), edges=[(np.int64(0), np.int64(1)), (1, 2)])
    assert edge_set(g) == {(0, 1), (1, 2)}
    assert all(type(v) is int for v in g.nodes)


def test_empty_edge_list_is_ignored_for_other_kinds() -> None:
    assert edge_set(build_topology("ring", 3, edges=())) == {(0, 1), (1, 2), (0, 2)}


def test_invalid_unknown_kind_lists_valid_kinds() -> None:
    with pytest.raises(ValueError, match=r"unknown topology kind 'star'.*full, ring, regular"):
        build_topology("star", 5)


@pytest.mark.parametrize("kind", ["full", "random", "regular", "small_world"])
def test_invalid_n_too_small(kind: str) -> None:
    with pytest.raises(ValueError, match="n too small"):
        build_topology(kind, 1)


def test_invalid_ring_of_two() -> None:
    with pytest.raises(ValueError, match="n too small.*n >= 3"):
        build_topology("ring", 2)


@pytest.mark.parametrize("n", [5.0, True, "5"])
def test_invalid_n_not_an_int(n: Any) -> None:
    with pytest.raises(ValueError, match="n must be an int"):
        build_topology("full", n)


@pytest.mark.parametrize("kind", ["regular", "random", "small_world"])
def test_invalid_degree_not_below_n(kind: str) -> None:
    with pytest.raises(ValueError, match=r"degree must be < n.*degree=6, n=6"):
        build_topology(kind, 6, degree=6)


def test_invalid_regular_odd_degree_sum() -> None:
    with pytest.raises(ValueError, match=r"n \* degree must be even.*n=7, degree=3"):
        build_topology("regular", 7, degree=3)


def test_invalid_regular_degree_one() -> None:
    with pytest.raises(ValueError, match="degree 1 .* never connected"):
        build_topology("regular", 6, degree=1)


@pytest.mark.parametrize("degree", [0, -2])
def test_invalid_degree_not_positive(degree: int) -> None:
    with pytest.raises(ValueError, match="degree must be >= 1"):
        build_topology("random", 10, degree=degree)


def test_invalid_random_never_connected() -> None:
    with pytest.raises(ValueError, match=r"no connected sample in 100 attempts.*components"):
        build_topology("random", 60, degree=1)


@pytest.mark.parametrize("degree", [3, 1])
def test_invalid_small_world_odd_degree(degree: int) -> None:
    with pytest.raises(ValueError, match="degree must be even"):
        build_topology("small_world", 10, degree=degree)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_invalid_small_world_p(p: float) -> None:
    with pytest.raises(ValueError, match=r"rewiring probability p must be in \[0, 1\]"):
        build_topology("small_world", 10, degree=4, p=p)


def test_invalid_edges_missing() -> None:
    with pytest.raises(ValueError, match="edges is missing"):
        build_topology("edges", 4)


def test_invalid_edges_empty() -> None:
    with pytest.raises(ValueError, match="edge list is empty"):
        build_topology("edges", 4, edges=[])


def test_invalid_edges_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"edge #1 \(2, 4\) is out of range, nodes are 0..3"):
        build_topology("edges", 4, edges=[(0, 1), (2, 4)])


def test_invalid_edges_negative_node() -> None:
    with pytest.raises(ValueError, match=r"edge #0 \(-1, 2\) is out of range"):
        build_topology("edges", 4, edges=[(-1, 2)])


def test_invalid_edges_self_loop() -> None:
    with pytest.raises(ValueError, match=r"edge #2 \(2, 2\) is a self-loop"):
        build_topology("edges", 3, edges=[(0, 1), (1, 2), (2, 2)])


def test_invalid_edges_duplicate() -> None:
    with pytest.raises(ValueError, match=r"edge #2 \(1, 0\) is a duplicate"):
        build_topology("edges", 3, edges=[(0, 1), (1, 2), (1, 0)])


@pytest.mark.parametrize("edge", [(0,), (0, 1, 2), 5, (0, 1.0), ("0", "1")])
def test_invalid_edges_malformed(edge: Any) -> None:
    with pytest.raises(ValueError, match="edge #0"):
        build_topology("edges", 3, edges=[edge])


def test_invalid_edges_not_connected_names_components() -> None:
    with pytest.raises(ValueError, match=r"not connected: 3 components") as info:
        build_topology("edges", 6, edges=[(0, 1), (1, 2), (3, 4)])
    message = str(info.value)
    assert "3 nodes [0, 1, 2]" in message
    assert "2 nodes [3, 4]" in message
    assert "1 node [5]" in message


def test_invalid_edges_given_for_another_kind() -> None:
    with pytest.raises(ValueError, match="'ring' does not take an edge list"):
        build_topology("ring", 3, edges=[(0, 1)])


@pytest.mark.parametrize("n", [9, 11])
def test_invalid_dfl10_size(n: int) -> None:
    with pytest.raises(ValueError, match=f"'dfl10'.*n must be 10, got {n}"):
        build_topology("dfl10", n)


def test_invalid_diameter_of_disconnected_graph() -> None:
    g = nx.Graph([(0, 1), (2, 3)])
    with pytest.raises(ValueError, match="not connected: 2 components"):
        diameter(g)
