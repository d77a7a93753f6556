"""From a Config to nodes: genesis, identities, device, parameters, data views, stores, attacks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import blake3
import numpy as np
import torch

from dfl_ray.attacks import make_attack
from dfl_ray.config import Config
from dfl_ray.data import NodeShard
from dfl_ray.ledger import ChainStore, Genesis, Identity, model_digest
from dfl_ray.ledger.store import DB_NAME
from dfl_ray.messages import Transport
from dfl_ray.models.flat import ModelSpec
from dfl_ray.models.registry import build_model
from dfl_ray.models.training import SGDSettings, steps_per_epoch
from dfl_ray.node.faults import FaultPlan, FaultyTransport
from dfl_ray.node.memo import CheckMemo
from dfl_ray.node.node import DFLNode
from dfl_ray.node.params import NodeData, NodeParams

PROTOCOL_VERSION = 2


@dataclass(frozen=True)
class HostSetup:
    """What the driver hands a host: its nodes, their shards and peers, and shared references."""

    host_index: int
    node_ids: tuple[int, ...]
    config: Config
    shards: Mapping[int, NodeShard]
    neighbors: Mapping[int, tuple[int, ...]]
    genesis: bytes
    spec: ModelSpec
    arrays: Mapping[str, Any]
    """train_images, train_labels, test_images, test_labels, initial: ObjectRefs or arrays."""
    run_dir: str | None
    """Folder for the nodes' chain stores (chains/node_<id>); None keeps no store."""
    gpus: float | None = None
    """GPU share the host's actor holds (its Ray num_gpus); None: runtime.gpus_per_node."""


def make_genesis(
    config: Config, spec: ModelSpec, initial: np.ndarray, nodes: int,
    network_id: str | None = None,
) -> Genesis:
    """The genesis every node of one network shares: the common initial model, the protocol
    knobs, and the members, the public keys of nodes 0 to `nodes` - 1 (`node_identity`)."""
    return Genesis(
        network_id=network_id or f"{config.experiment.name}/{config.experiment.seed}",
        protocol_version=PROTOCOL_VERSION,
        model_spec_id=spec.id,
        initial_model_digest=model_digest(spec.id, initial),
        ttl=config.ledger.ttl,
        buffer_size=config.defense.buffer_size,
        block_size=config.ledger.block_size,
        expiry_s=config.ledger.expiry_s,
        members=tuple(sorted(
            node_identity(config.experiment.seed, n).public_key for n in range(nodes))),
    )


def node_identity(seed: int, node_id: int) -> Identity:
    """Deterministic keys for simulations: the same seed gives the same addresses.

    The keys depend on the seed and the node id only, not on the run's name (its network id):
    a node aggregates its buffer in the order of the senders' keys, so keys that changed with
    the name would change the float summation order, and with it the run's results. Runs stay
    apart all the same: every signed object names its genesis, which holds the network id.
    """
    return Identity.from_seed(blake3.blake3(f"dfl/key/{seed}/{node_id}".encode()).digest())


def resolve_device(requested: str, gpus: float) -> str:
    """The torch device of a host holding a `gpus` share of GPUs: cpu, cuda, or auto's choice.

    Ray leaves every GPU visible to an actor that reserved none, so "auto" picks cuda only when
    the actor both holds a share and torch sees a device.
    """
    if requested not in ("cpu", "cuda", "auto"):
        raise ValueError(f"runtime.device must be cpu, cuda or auto, got {requested!r}")
    if not gpus >= 0:  # also rejects NaN
        raise ValueError(f"GPU share must be >= 0, got {gpus}")
    if requested == "cpu":
        return "cpu"
    has_gpu = torch.cuda.is_available() and gpus > 0
    if requested == "cuda" and not has_gpu:
        raise RuntimeError(
            "runtime.device=cuda but this actor holds no GPU (set --gpus-per-node > 0 on a machine "
            "with GPUs, or use --device auto to fall back to the CPU)"
        )
    return "cuda" if has_gpu else "cpu"


def local_steps(config: Config, n_train: int) -> int:
    """SGD steps of one local round on a shard of `n_train` images: `training.local_steps`, or
    `training.local_epochs` passes over the shard."""
    training = config.training
    return training.local_steps or max(
        1, round(training.local_epochs * steps_per_epoch(n_train, training.batch_size))
    )


def sgd_settings(config: Config) -> SGDSettings:
    """The config's local SGD settings."""
    t = config.training
    return SGDSettings(t.lr, t.momentum, t.weight_decay, t.grad_clip)


def node_params(config: Config, node_id: int, peers: tuple[int, ...], n_train: int,
                device: str) -> NodeParams:
    """A node's role from the config: local steps from its shard size, rule, momentum, colluders."""
    cfg = config
    steps = local_steps(cfg, n_train)
    attackers = set(cfg.attackers)
    return NodeParams(
        node_id=node_id,
        peers=peers,
        local_steps=steps,
        batch_size=cfg.training.batch_size,
        sgd=sgd_settings(cfg),
        rule=cfg.defense.rule,
        rule_params=dict(cfg.defense.params),
        buffer_size=cfg.defense.buffer_size,
        momentum=cfg.defense.effective_momentum,
        accept=math.inf if cfg.defense.accept is None else float(cfg.defense.accept),
        probe_classes=cfg.defense.effective_probe_classes,
        max_loss_rise=float(cfg.training.max_loss_rise),
        max_move=float(cfg.training.max_move),
        trigger=None if node_id in attackers else cfg.defense.trigger_settings(),
        max_clock_skew_s=cfg.ledger.max_clock_skew_s,
        seed=cfg.experiment.seed,
        device=device,
        colluders=frozenset(attackers - {node_id}) if node_id in attackers else frozenset(),
        trace=cfg.experiment.trace,
    )


@dataclass(frozen=True)
class SharedData:
    """The data set as the nodes of one process share it: read-only tensors, one copy."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    initial: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.train_labels.max()) + 1


def build_nodes(
    setup: HostSetup,
    data: SharedData,
    *,
    genesis: Genesis,
    identities: Mapping[int, Identity],
    directory: Mapping[bytes, int],
    transport: Transport,
    memo: CheckMemo,
    device: str,
) -> dict[int, DFLNode]:
    """The nodes of one host, sharing one data set, one scorer model, one directory and one memo.

    A node whose store exists already (its host restarted, or the run is resumed) opens it and
    resumes from it (`DFLNode.restore`); the others start new stores.
    """
    cfg = setup.config
    image_shape = tuple(data.train_images.shape[1:])
    channels = 1 if len(image_shape) == 2 else image_shape[0]
    num_classes = data.num_classes

    def new_model() -> torch.nn.Module:
        return build_model(cfg.model.name, in_channels=channels, num_classes=num_classes,
                           image_size=image_shape[-1])

    scorer = new_model().to(device)
    plan = FaultPlan(cfg.faults, cfg.experiment.seed)
    shared_directory = MappingProxyType(dict(directory))
    nodes: dict[int, DFLNode] = {}
    for n in setup.node_ids:
        shard = setup.shards[n]
        val = torch.from_numpy(shard.val)
        node_data = NodeData(
            images=data.train_images,
            labels=data.train_labels,
            train_idx=shard.train,
            val_images=data.train_images[val],
            val_labels=data.train_labels[val],
            num_classes=num_classes,
        )
        store = None
        if setup.run_dir is not None:
            folder = Path(setup.run_dir) / "chains" / f"node_{n}"
            if (folder / DB_NAME).exists():  # a restarted host, or a resumed run
                store = ChainStore.open(folder, expected_genesis=genesis)
            else:
                keep = None if cfg.ledger.keep_payloads < 0 else cfg.ledger.keep_payloads
                store = ChainStore.create(folder, genesis, identities[n].public_key,
                                          keep_payloads=keep)
        attack = None
        if n in cfg.attackers:
            attack = make_attack(cfg.attack.kind, **dict(cfg.attack.params))
        nodes[n] = DFLNode(
            node_params(cfg, n, tuple(setup.neighbors[n]), len(shard.train), device),
            identity=identities[n],
            genesis=genesis,
            spec=setup.spec,
            initial=data.initial,
            model=new_model(),
            data=node_data,
            transport=transport,
            directory=shared_directory,
            store=store,
            attack=attack,
            scorer=scorer,
            memo=memo,
        )
        if plan.touches_messages:
            nodes[n].transport = FaultyTransport(transport, plan, nodes[n])
        nodes[n].restore()
    return nodes
