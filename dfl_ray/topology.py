"""Peer-to-peer network topologies for DFL: which nodes exchange models with which."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from numbers import Real

import networkx as nx

TOPOLOGY_KINDS: tuple[str, ...] = (
    "full",
    "ring",
    "regular",
    "random",
    "small_world",
    "edges",
    "dfl10",
)

# The fixed 10-node, 19-edge network of the original DFL simulator (Tian, Guo, Zhang, Al-Ars,
# "DFL: High-Performance Blockchain-Based Federated Learning", arXiv 2110.15457, ACM DLT 2023).
DFL10_EDGES: tuple[tuple[int, int], ...] = (
    (0, 2), (0, 3), (0, 8),
    (1, 5), (1, 7), (1, 8), (1, 9),
    (2, 8),
    (3, 4), (3, 5), (3, 7),
    (4, 5), (4, 6), (4, 8), (4, 9),
    (5, 6), (5, 7), (5, 9),
    (6, 7),
)  # fmt: skip

# Random kinds are resampled (seed, seed + 1, ...) until connected; this bounds the search so an
# impossible request (say average degree 1 on 100 nodes) fails instead of looping.
MAX_SAMPLING_ATTEMPTS = 100

# A component listing longer than this is cut short in error messages.
_MAX_COMPONENTS_SHOWN = 5


def build_topology(
    kind: str,
    n: int,
    *,
    degree: int = 4,
    p: float = 0.1,
    edges: Sequence[tuple[int, int]] | None = None,
    seed: int = 0,
) -> nx.Graph:
    """Build a connected undirected graph on nodes 0..n-1.

    Kinds (see `TOPOLOGY_KINDS`):
    - `full`: complete graph.
    - `ring`: cycle 0-1-...-(n-1)-0.
    - `regular`: uniformly random `degree`-regular graph (Steger and Wormald, "Generating random
      regular graphs quickly", Combinatorics, Probability and Computing 8, 1999), as implemented
      by networkx.
    - `random`: Erdős–Rényi G(n, q) with q = degree / (n - 1), so the expected average degree is
      `degree` (Erdős and Rényi, "On random graphs I", Publicationes Mathematicae 6, 1959).
    - `small_world`: Watts–Strogatz ring lattice with `degree` nearest neighbours, each edge
      rewired with probability `p` (Watts and Strogatz, "Collective dynamics of 'small-world'
      networks", Nature 393, 1998).
    - `edges`: exactly the given edge list.
    - `dfl10`: the original DFL's fixed 10-node, 19-edge graph (`DFL10_EDGES`).

    `regular` and `random` are resampled with seeds seed, seed + 1, ... (at most
    `MAX_SAMPLING_ATTEMPTS`) until connected; `small_world` retries likewise inside networkx.
    The result is deterministic for given arguments, with nodes and edges inserted in sorted order.
    Raises ValueError naming the problem, including when the graph is not connected: a DFL node
    only learns from models that can reach it, so the network must be one component.
    """
    _check_common(kind, n, edges, seed)
    if kind == "full":
        g = nx.complete_graph(n)
    elif kind == "ring":
        if n < 3:
            raise ValueError(f"topology 'ring': n too small, a ring needs n >= 3 nodes, got n={n}")
        g = nx.cycle_graph(n)
    elif kind == "regular":
        _check_regular(n, degree)
        g = _first_connected("regular", lambda s: nx.random_regular_graph(degree, n, seed=s), seed)
    elif kind == "random":
        _check_degree("random", n, degree)
        q = degree / (n - 1)
        g = _first_connected("random", lambda s: nx.gnp_random_graph(n, q, seed=s), seed)
    elif kind == "small_world":
        _check_small_world(n, degree, p)
        try:
            g = nx.connected_watts_strogatz_graph(
                n, degree, p, tries=MAX_SAMPLING_ATTEMPTS, seed=seed
            )
        except nx.NetworkXError as exc:
            raise ValueError(
                f"topology 'small_world' (n={n}, degree={degree}, p={p}, seed={seed}): no "
                f"connected graph in {MAX_SAMPLING_ATTEMPTS} attempts ({exc})"
            ) from exc
    elif kind == "edges":
        assert edges is not None  # _check_common guarantees it
        pairs = _checked_edges(edges, n)
        g = nx.Graph()
        g.add_nodes_from(range(n))
        g.add_edges_from(pairs)
    else:  # dfl10
        if n != 10:
            raise ValueError(f"topology 'dfl10' is the fixed 10-node graph; n must be 10, got {n}")
        g = nx.Graph(DFL10_EDGES)
    out = _canonical(g, n)
    _check_connected(out, kind)
    out.graph["kind"] = kind
    return out


def neighbors(g: nx.Graph) -> dict[int, tuple[int, ...]]:
    """Each node's peers, sorted: the introducer hands node i exactly the handles in `[i]`."""
    return {int(v): tuple(sorted(int(u) for u in g.neighbors(v))) for v in sorted(g.nodes)}


def diameter(g: nx.Graph) -> int:
    """Longest shortest path in hops: the TTL at which gossip reaches every node."""
    if g.number_of_nodes() == 0:
        raise ValueError("diameter of an empty graph is undefined")
    _check_connected(g, g.graph.get("kind", "graph"))
    return int(nx.diameter(g))


def _check_common(kind: str, n: int, edges: Sequence[tuple[int, int]] | None, seed: int) -> None:
    if kind not in TOPOLOGY_KINDS:
        raise ValueError(
            f"unknown topology kind {kind!r}; valid kinds: {', '.join(TOPOLOGY_KINDS)}"
        )
    if not _is_int(n):
        raise ValueError(f"topology {kind!r}: n must be an int, got {type(n).__name__}")
    if n < 2:
        raise ValueError(f"topology {kind!r}: n too small, a network needs n >= 2 nodes, got n={n}")
    if not _is_int(seed):
        raise ValueError(f"topology {kind!r}: seed must be an int, got {type(seed).__name__}")
    if kind == "edges" and edges is None:
        raise ValueError("topology 'edges' needs an explicit edge list: edges is missing")
    # An empty list is accepted for other kinds: config trees default the edge list to ().
    if kind != "edges" and edges:
        raise ValueError(f"topology {kind!r} does not take an edge list; use kind='edges'")


def _check_degree(kind: str, n: int, degree: int) -> None:
    if not _is_int(degree):
        raise ValueError(f"topology {kind!r}: degree must be an int, got {type(degree).__name__}")
    if degree < 1:
        raise ValueError(f"topology {kind!r}: degree must be >= 1, got {degree}")
    if degree >= n:
        raise ValueError(
            f"topology {kind!r}: degree must be < n (a node has at most n - 1 peers), "
            f"got degree={degree}, n={n}"
        )


def _check_regular(n: int, degree: int) -> None:
    _check_degree("regular", n, degree)
    if n * degree % 2:
        raise ValueError(
            f"topology 'regular': n * degree must be even (each edge has two ends), "
            f"got n={n}, degree={degree}"
        )
    if degree == 1 and n > 2:
        # A 1-regular graph is a perfect matching: never connected beyond two nodes.
        raise ValueError(f"topology 'regular': degree 1 on n={n} > 2 nodes is never connected")


def _check_small_world(n: int, degree: int, p: float) -> None:
    _check_degree("small_world", n, degree)
    if degree < 2 or degree % 2:
        # networkx silently uses degree // 2 neighbours per side, so an odd degree would not be
        # the degree asked for.
        raise ValueError(
            f"topology 'small_world': degree must be even and >= 2 (k/2 neighbours on each "
            f"side of the ring), got {degree}"
        )
    if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 <= p <= 1.0:
        raise ValueError(
            f"topology 'small_world': rewiring probability p must be in [0, 1], got {p!r}"
        )


def _checked_edges(edges: Sequence[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for i, edge in enumerate(edges):
        try:
            a, b = edge
        except (TypeError, ValueError):
            raise ValueError(
                f"topology 'edges': edge #{i} must be a pair (u, v), got {edge!r}"
            ) from None
        if not (_is_int(a) and _is_int(b)):
            raise ValueError(f"topology 'edges': edge #{i} {edge!r} must hold two ints")
        u, v = operator.index(a), operator.index(b)
        if not (0 <= u < n and 0 <= v < n):
            raise ValueError(
                f"topology 'edges': edge #{i} ({u}, {v}) is out of range, nodes are 0..{n - 1}"
            )
        if u == v:
            raise ValueError(f"topology 'edges': edge #{i} ({u}, {v}) is a self-loop")
        key = (min(u, v), max(u, v))
        if key in seen:
            raise ValueError(f"topology 'edges': edge #{i} ({u}, {v}) is a duplicate")
        seen.add(key)
        pairs.append(key)
    if not pairs:
        raise ValueError("topology 'edges': the edge list is empty")
    return pairs


def _first_connected(kind: str, sample: Callable[[int], nx.Graph], seed: int) -> nx.Graph:
    for attempt in range(MAX_SAMPLING_ATTEMPTS):
        g = sample(seed + attempt)
        if nx.is_connected(g):
            return g
    raise ValueError(
        f"topology {kind!r}: no connected sample in {MAX_SAMPLING_ATTEMPTS} attempts "
        f"(seeds {seed}..{seed + MAX_SAMPLING_ATTEMPTS - 1}); the last had "
        f"{nx.number_connected_components(g)} components; raise degree"
    )


def _canonical(g: nx.Graph, n: int) -> nx.Graph:
    """A fresh graph with plain int nodes 0..n-1 and edges in sorted order, so iteration order
    depends only on the edge set and not on how a generator happened to insert them."""
    out = nx.Graph()
    out.add_nodes_from(range(n))
    out.add_edges_from(sorted((min(int(u), int(v)), max(int(u), int(v))) for u, v in g.edges))
    return out


def _check_connected(g: nx.Graph, kind: str) -> None:
    if nx.is_connected(g):
        return
    components = sorted((sorted(c) for c in nx.connected_components(g)), key=lambda c: c[0])
    shown = "; ".join(_describe(c) for c in components[:_MAX_COMPONENTS_SHOWN])
    more = len(components) - _MAX_COMPONENTS_SHOWN
    if more > 0:
        shown += f"; ... {more} more"
    raise ValueError(
        f"topology {kind!r} is not connected: {len(components)} components ({shown}); "
        f"DFL needs a connected network so every model can reach every node"
    )


def _describe(component: list[int]) -> str:
    nodes = ", ".join(str(v) for v in component[:8])
    if len(component) > 8:
        nodes += ", ..."
    noun = "node" if len(component) == 1 else "nodes"
    return f"{len(component)} {noun} [{nodes}]"


def _is_int(x: object) -> bool:
    # bool is an int subclass but True as a node count or node id is always a mistake.
    if isinstance(x, bool):
        return False
    try:
        operator.index(x)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True
