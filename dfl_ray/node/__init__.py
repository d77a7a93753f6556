"""The DFL node in plain Python: its handlers, its learning, and how a Config becomes nodes."""

from dfl_ray.node.aggregator import Aggregated, Aggregator, Buffered
from dfl_ray.node.build import (
    HostSetup,
    SharedData,
    build_nodes,
    make_genesis,
    node_identity,
    node_params,
    resolve_device,
)
from dfl_ray.node.group import NodeGroup
from dfl_ray.node.learner import Learner
from dfl_ray.node.memo import CheckMemo
from dfl_ray.node.node import DFLNode
from dfl_ray.node.params import NodeData, NodeParams

__all__ = [
    "Aggregated",
    "Aggregator",
    "Buffered",
    "CheckMemo",
    "DFLNode",
    "HostSetup",
    "Learner",
    "NodeData",
    "NodeGroup",
    "NodeParams",
    "SharedData",
    "build_nodes",
    "make_genesis",
    "node_identity",
    "node_params",
    "resolve_device",
]
