"""One config tree of frozen dataclasses, validated on construction, loaded from YAML and flags."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from dfl_ray.node.triggers import TriggerSettings


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the field and what is allowed."""


def _check_choice(where: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{where} must be one of {list(choices)}, got {value!r}")


def _check_range(
    where: str, value: float, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
) -> None:
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{where} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where} must be <= {hi}, got {value!r}")


def _check_params(where: str, owner: str, params: Mapping[str, Any], allowed: Mapping[str, Any]) -> None:
    for key in params:
        if key not in allowed:
            raise ConfigError(
                f"{where}: {owner} has no parameter {key!r}; its parameters are {sorted(allowed)}"
            )


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "lenet_noniid"
    """Run name; outputs go to <out>/<name>."""
    seed: int = 0
    """Seed for data partitioning (unless data.partition_seed), initial model, keys, training order and attacks."""
    rounds: int = 40
    """Synchronous rounds, or local rounds per node in the async schedule."""
    eval_every: int = 5
    """Evaluate every node on the global test set every this many rounds (the last round always)."""
    out: str = "runs"
    """Parent folder of the run folder."""
    overwrite: bool = False
    """Allow reusing an existing run folder (its chain stores are replaced)."""
    progress: bool = True
    """Show a progress bar with the current honest mean accuracy."""
    trace: bool = False
    """Write one row per model each node aggregated (the rule's weight, the sender's reputation,
    what the rule measured of it) to <run>/aggregations.csv, at every evaluation."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"experiment.name must be a non-empty folder name, got {self.name!r}")
        _check_range("experiment.rounds", self.rounds, 1)
        _check_range("experiment.eval_every", self.eval_every, 1)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"
    """mnist or fashion_mnist."""
    data_dir: str | None = None
    """Folder in torchvision's layout; default $DFL_DATA_DIR, else the user cache folder."""
    download: bool = True
    """Download through torchvision when the files are absent."""
    partition: str = "dirichlet"
    """iid, dirichlet (alpha) or labels_per_node (k)."""
    alpha: float = 0.1
    """Dirichlet concentration; smaller is more skewed."""
    labels_per_node: int = 2
    """Labels each node holds with partition=labels_per_node (the original's 1node2label is 2)."""
    val_fraction: float = 0.1
    """Share of each node's shard kept to score received models."""
    partition_seed: int | None = None
    """Seed for the shards alone (None: experiment.seed), to vary everything else on fixed shards
    (a random topology's graph still follows experiment.seed)."""

    def __post_init__(self) -> None:
        _check_choice("data.dataset", self.dataset, ["mnist", "fashion_mnist"])
        if self.partition_seed is not None:
            _check_range("data.partition_seed", self.partition_seed, 0)
        _check_choice("data.partition", self.partition, ["iid", "dirichlet", "labels_per_node"])
        _check_range("data.alpha", self.alpha, 0.0, lo_open=True)
        _check_range("data.labels_per_node", self.labels_per_node, 1, 10)
        _check_range("data.val_fraction", self.val_fraction, 0.0, lo_open=True)
        if self.val_fraction >= 0.5:
            raise ConfigError(f"data.val_fraction must be < 0.5, got {self.val_fraction!r}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "lenet"
    """Registered model architecture."""

    def __post_init__(self) -> None:
        from dfl_ray.models.registry import MODELS

        _check_choice("model.name", self.name, sorted(MODELS))


@dataclass(frozen=True)
class TrainingConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    local_epochs: float = 1.0
    """Local work per round in passes over the node's training shard (used when local_steps = 0)."""
    local_steps: int = 0
    """Local SGD steps per round; 0 means local_epochs passes."""
    grad_clip: float = 0.0
    """Largest L2 norm of a local SGD step's gradient (longer ones are scaled down); 0: none."""
    max_loss_rise: float = 0.5
    """Local training that raises the node's validation loss by more than this many nats has
    diverged: it is tried once more, then undone (the node keeps its round start); inf: off."""
    max_move: float = 4.0
    """Local training whose update is longer than this x the median of the node's last kept
    ones, and that did not lower its validation loss, has diverged, as with max_loss_rise;
    inf: off."""

    def __post_init__(self) -> None:
        _check_range("training.lr", self.lr, 0.0, lo_open=True)
        _check_range("training.momentum", self.momentum, 0.0, 1.0)
        _check_range("training.weight_decay", self.weight_decay, 0.0)
        _check_range("training.batch_size", self.batch_size, 1)
        _check_range("training.local_epochs", self.local_epochs, 0.0, lo_open=True)
        _check_range("training.local_steps", self.local_steps, 0)
        _check_range("training.grad_clip", self.grad_clip, 0.0)
        _check_range("training.max_loss_rise", self.max_loss_rise, 0.0)
        _check_range("training.max_move", self.max_move, 1.0)


@dataclass(frozen=True)
class TopologyConfig:
    kind: str = "dfl10"
    """dfl10 (the original's 10-node, 19-edge graph), full, ring, regular, random, small_world, edges."""
    nodes: int = 10
    """Number of DFL nodes."""
    degree: int = 4
    """Degree for regular, average degree for random, k for small_world."""
    p: float = 0.1
    """Rewiring probability for small_world."""
    edges: tuple[tuple[int, int], ...] = ()
    """Explicit edge list for kind=edges (flag form: 0-1,1-2,...)."""
    absent: tuple[int, ...] = ()
    """Nodes removed from the network after partitioning (their shards unused): the run with attackers removed."""

    def __post_init__(self) -> None:
        _check_choice(
            "topology.kind",
            self.kind,
            ["dfl10", "full", "ring", "regular", "random", "small_world", "edges"],
        )
        _check_range("topology.nodes", self.nodes, 2)
        _check_range("topology.degree", self.degree, 1)
        _check_range("topology.p", self.p, 0.0, 1.0)
        if self.kind == "dfl10" and self.nodes != 10:
            raise ConfigError(f"topology.kind=dfl10 needs topology.nodes=10, got {self.nodes}")
        if self.kind == "edges" and not self.edges:
            raise ConfigError("topology.kind=edges needs topology.edges")


@dataclass(frozen=True)
class DefenseConfig:
    rule: str = "dfl_guard"
    """Aggregation rule (see dfl_ray.defense.RULES)."""
    buffer_size: int = 4
    """Aggregate once this many received models are buffered (one per sender, newest kept)."""
    params: Mapping[str, float] = field(default_factory=dict)
    """Rule parameters (flag form: name=value,name=value)."""
    momentum: float | None = None
    """Server momentum beta in [0, 1) on each aggregation's result (FedAvgM); none: 0.5 for dfl_guard, dfl_shield and dfl_sentinel, 0 for the other rules."""
    accept: float | None = None
    """Acceptance test (dfl_ray.defense.accept): a node keeps the longest step towards the
    aggregate whose loss on its own validation split is at most this many nats above its
    freshly trained model's; none: off."""
    probe_classes: str | None = None
    """What the validation loss that probe rules (dfl_guard's `probe`, dfl_shield,
    dfl_sentinel's `tolerance`) and the acceptance test read: "all" (cross-entropy over every
    class) or "own" (over the logits of the classes in the node's own shard only, so that a
    peer who teaches other classes is not read as a loss); none: "own" for dfl_guard, "all"
    for the other rules."""
    trigger_scan: float | None = None
    """Trigger scan (dfl_ray.node.triggers): each honest node searches its own model for a
    patch of at most `trigger_budget` pixels that sends at least this share of its validation
    images of other classes to one class, unlearns what it finds, and refuses received models
    that the patch sends there `trigger_refuse` of the time; none: off."""
    trigger_refuse: float = 0.5
    """Share of the validation images of other classes that a received model must send to a
    found patch's class for the trigger scan to refuse it."""
    trigger_gap: float = 0.25
    """How far above the median received model's flip rate under a found patch a model's must
    lie for the trigger scan to refuse it (-1: the refusal share alone decides)."""
    trigger_budget: float = 12.0
    """Largest patch the trigger scan searches, in pixels."""
    trigger_steps: int = 10
    """Optimisation steps of the trigger scan per round."""
    trigger_share: float = 0.5
    """Share of each local training batch stamped with a found patch, labels kept."""

    def trigger_settings(self) -> TriggerSettings | None:
        """The nodes' trigger scan settings; None when the scan is off."""
        from dfl_ray.node.triggers import TriggerSettings

        if self.trigger_scan is None:
            return None
        return TriggerSettings(threshold=self.trigger_scan, refuse=self.trigger_refuse,
                               gap=self.trigger_gap, budget=self.trigger_budget,
                               steps=self.trigger_steps, share=self.trigger_share)

    @property
    def effective_momentum(self) -> float:
        """The momentum nodes apply: `momentum` when set, else the rule's default."""
        from dfl_ray.defense.momentum import default_momentum

        return default_momentum(self.rule) if self.momentum is None else float(self.momentum)

    @property
    def effective_probe_classes(self) -> str:
        """The validation loss nodes read: `probe_classes` when set, else the rule's default."""
        from dfl_ray.defense import default_probe_classes

        return default_probe_classes(self.rule) if self.probe_classes is None else self.probe_classes

    def __post_init__(self) -> None:
        from dfl_ray.defense import RULES, check_rule_params, rule_params
        from dfl_ray.defense.momentum import check_momentum

        _check_choice("defense.rule", self.rule, sorted(RULES))
        _check_range("defense.buffer_size", self.buffer_size, 1)
        if self.probe_classes is not None:
            _check_choice("defense.probe_classes", self.probe_classes, ["all", "own"])
        _check_params("defense.params", f"rule {self.rule!r}", self.params, rule_params(self.rule))
        try:  # values too, so a bad parameter fails now rather than at the first aggregation
            check_rule_params(self.rule, self.params)
        except ValueError as exc:
            raise ConfigError(f"defense.params: {exc}") from exc
        if self.momentum is not None:
            try:
                check_momentum(self.momentum)
            except ValueError as exc:
                raise ConfigError(f"defense.{exc}") from exc
        try:
            self.trigger_settings()
        except ValueError as exc:
            raise ConfigError(f"defense.{exc}") from exc
        if self.accept is not None:
            from dfl_ray.defense.accept import check_tolerance

            try:
                check_tolerance(self.accept)
            except ValueError as exc:
                raise ConfigError(f"defense.{exc}") from exc


@dataclass(frozen=True)
class AttackConfig:
    kind: str = "random_model"
    """Attack of the malicious nodes: none, random_model, random_model_by_turn, minus_uniform,
    free_rider, label_shuffle, label_shift, label_swap, blank_images, sign_flip, scaled_update,
    gaussian_noise, alie, ipm, min_max, min_sum, mimic (omniscient: built from the honest models
    the attackers received), gate_edge, kin_edge, probe_edge, reversal_edge and reversal_fit
    (white-box against dfl_guard), shield_edge (white-box against dfl_shield), sentinel_edge
    (white-box against dfl_sentinel), backdoor (dfl_ray.attacks), byzfl_sign_flip, byzfl_ipm,
    byzfl_alie, byzfl_opt_ipm, byzfl_opt_alie, byzfl_mimic, byzfl_inf, byzfl_gaussian (ByzFL's
    attacks, dfl_ray.attacks.byzfl_attacks)."""
    malicious: int = 3
    """Number of attacker nodes (the last ones, unless attack.nodes names them)."""
    nodes: tuple[int, ...] = ()
    """Explicit attacker node ids (flag form: 1,4,7)."""
    params: Mapping[str, float | str] = field(default_factory=dict)
    """Attack parameters (flag form: name=value,...). Every kind takes honest_turns (0:
    publications made honestly before attacking); sign_flip scale (1), keep_last (0);
    scaled_update scale (10); gaussian_noise std (0.1); alie z (1); ipm epsilon (0.5); min_max
    and min_sum gamma_init (10, start of the search for the perturbation's size); mimic
    iterations (20, power iterations for the direction of largest honest variance); gate_edge
    gate (3, the gate attacked), fraction (0.95 of the gate radius), keep_last (5010, trailing
    coordinates published as trained: LeNet's output layer), oppose (1: off; below 1, the
    opposition test attacked, kept passing by padding the push); kin_edge the same and share
    (1/3 of the coordinates each colluder pushes on, against dfl_guard's kin test); probe_edge
    gate_edge's and probe (2), probe_step (0.5), probe_slack (0.05) (dfl_guard's validation
    probe attacked, read on the attacker's own split), safety (0.8 of that threshold), burst (0;
    every this many publications the unshortened gate_edge model, against forgive);
    reversal_edge keep_last (5010, the output layer: classes rows of weights, then the biases),
    classes (10), skew (0.5, the skew its output-layer readings are lifted to); reversal_fit the
    same and head_clip (3, the bound attacked), fit (0.9 of it), floor (0.05, the least skew);
    shield_edge clip (2, the clip attacked), fraction (0.95), keep_last (5010); sentinel_edge z
    (1, honest standard deviations below the honest mean), clip (2, the clip attacked), fraction
    (0.95), keep_last (5010); backdoor target (0), size (3, trigger side in pixels), fraction
    (0.5 of each batch triggered), scale (1, update boost), blend (0; above 0, a whole-image
    noise trigger mixed in with that weight), evade (0; above 0, the backdoor success on its own
    validation split to stay under, against the trigger scan);
    byzfl_ipm tau (2); byzfl_alie tau (1.5, sample standard deviations added to the honest mean),
    up (1: every coordinate shifted up; below it, the shift mirrored on 1 - up of the
    coordinates, against dfl_guard's sign test);
    byzfl_opt_ipm and byzfl_opt_alie rule (nnm_trmean, the ByzFL rule the search for tau is run
    against: median, trmean, krum, multikrum, cc, nnm_trmean or nnm_median), f (3, colluders),
    evals (20);
    byzfl_mimic epsilon (0, index of the honest update copied); byzfl_gaussian mu (0), sigma (1);
    every byzfl_ kind keep_sum (0; 10 shifts LeNet's output-bias update to sum to zero, an
    attacker that knows dfl_guard's balance test)."""

    def __post_init__(self) -> None:
        from dfl_ray.attacks import ATTACK_KINDS, attack_params, make_attack

        _check_choice("attack.kind", self.kind, list(ATTACK_KINDS))
        _check_range("attack.malicious", self.malicious, 0)
        if self.nodes and len(self.nodes) != self.malicious:
            raise ConfigError(
                f"attack.nodes lists {len(self.nodes)} nodes but attack.malicious is {self.malicious}"
            )
        if len(set(self.nodes)) != len(self.nodes):
            raise ConfigError(f"attack.nodes has duplicates: {list(self.nodes)}")
        allowed = attack_params(self.kind)
        _check_params("attack.params", f"attack {self.kind!r}", self.params, allowed)
        for key, value in self.params.items():
            if isinstance(value, str) != isinstance(allowed[key], str):
                raise ConfigError(f"attack.params.{key} must be "
                                  f"{'a name' if isinstance(allowed[key], str) else 'a number'}"
                                  f", got {value!r}")
        try:
            make_attack(self.kind, **dict(self.params))
        except ValueError as exc:
            raise ConfigError(f"attack.params: {exc}") from exc


@dataclass(frozen=True)
class LedgerConfig:
    ttl: int = 10
    """Gossip hops a transaction travels."""
    expiry_s: float = 60.0
    """Seconds a transaction stays valid after creation."""
    max_clock_skew_s: float = 5.0
    """How far in the future a transaction's creation time may lie."""
    block_size: int = 10
    """Own transactions per sealed block."""
    keep_payloads: int = 2
    """Own model payloads kept on disk per node (-1 keeps all); the chain keeps every digest."""

    def __post_init__(self) -> None:
        _check_range("ledger.ttl", self.ttl, 1)
        _check_range("ledger.expiry_s", self.expiry_s, 0.0, lo_open=True)
        _check_range("ledger.max_clock_skew_s", self.max_clock_skew_s, 0.0)
        _check_range("ledger.block_size", self.block_size, 1)
        _check_range("ledger.keep_payloads", self.keep_payloads, -1)


@dataclass(frozen=True)
class RuntimeConfig:
    schedule: str = "sync"
    """sync (rounds, deterministic for a seed whatever the run's name or host layout) or async (each node loops on its own)."""
    address: str | None = None
    """Ray address to join (auto for a running cluster); default starts a local Ray."""
    num_cpus: int = 0
    """CPUs for a local Ray instance (0: all of this machine's)."""
    hosts: int = 0
    """Host actors for the nodes (0: one per node up to 32 nodes, else one per cluster CPU)."""
    cpus_per_host: float = 0.0
    """CPUs each host actor requests (0: the cluster's CPUs divided by the number of hosts)."""
    gpus_per_node: float = 0.0
    """GPU share each node's actor requests (fractions allowed)."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when the actor holds a GPU)."""
    placement: str = "pack"
    """pack (Ray's default) or spread (one host actor per Ray node, a placement group)."""
    torch_threads: int = 1
    """torch threads per actor."""
    slow_nodes: tuple[int, ...] = ()
    """Stragglers (flag form: 0,4). Sync: after each round these nodes hold their host for (slowdown - 1) x n x the busy seconds of their work since the last hold (training, scoring, aggregation, ledger), n the nodes the host actor runs one after another, as their share of the host slowdown times slower would; sync rounds wait for them. Async: each runs its first two rounds at full speed and times them (round start to round start, waits included), then publishes a round every slowdown x that time; an async run ends when the other nodes have run their rounds."""
    slowdown: float = 5.0
    """How many times slower runtime.slow_nodes run (>= 1)."""
    slack: int = 0
    """async: a node starts its next local round once the peers it waits for have published the round it just published, less this many rounds (bounded staleness), then aggregates; -1: never wait (free running, aggregate whenever the buffer is full)."""
    patience: float = 2.0
    """async: a node waits for a late peer while it publishes a round at least every this many typical rounds (the time from the node's round start until two thirds of the peers it knows had published that round, or its own training if longer); a peer silent that long in two waits in a row is a straggler, not waited for until it catches up, or until it keeps the typical pace again at most this many rounds behind."""
    max_staleness: int = 4
    """async: a node leaves out of its aggregation a buffered model staler than this many of its rounds; its defense judges the others as they were sent, and weighs those it keeps down by (1 + staleness) ** -0.5 (FedAsync); a model's staleness is how many fewer rounds its creator has published, or, when smaller, the age of its base: the node's rounds since the creator's previous model arrived, less one (a straggler's model is as stale as its slow round, not as its round number). A node more than this many rounds behind the median of its buffered models (a straggler itself) aggregates them around their coordinate-wise median instead of its own, stale, model; -1: none of this (sync rounds never have stale models)."""

    reuse: bool = True
    """async: a node ending a wait also aggregates, for every peer with no new model since its last aggregation, that peer's latest model, weighed down and left out by its staleness as above (MIFA), so a straggler's data keeps its share and a node that outlives its peers aggregates their last models instead of training alone; false: new models only."""

    round_timeout_s: float = 0.0
    """sync: longest a round may take; hosts that have not answered by then are marked down for the round, which closes without them, and rejoin when they answer. 0: auto, 4 x the median round so far and at least 10 s (300 s until two rounds have been timed)."""
    max_restarts: int = 3
    """Times Ray restarts a host actor whose process died; a restarted host resumes its nodes from their chains. -1: no limit."""

    def __post_init__(self) -> None:
        _check_choice("runtime.schedule", self.schedule, ["sync", "async"])
        _check_choice("runtime.device", self.device, ["cpu", "cuda", "auto"])
        _check_choice("runtime.placement", self.placement, ["pack", "spread"])
        _check_range("runtime.num_cpus", self.num_cpus, 0)
        _check_range("runtime.hosts", self.hosts, 0)
        _check_range("runtime.cpus_per_host", self.cpus_per_host, 0.0)
        _check_range("runtime.gpus_per_node", self.gpus_per_node, 0.0)
        _check_range("runtime.torch_threads", self.torch_threads, 1)
        _check_range("runtime.slowdown", self.slowdown, 1.0)
        _check_range("runtime.max_staleness", self.max_staleness, -1)
        _check_range("runtime.slack", self.slack, -1)
        _check_range("runtime.patience", self.patience, 0.0, lo_open=True)
        _check_range("runtime.round_timeout_s", self.round_timeout_s, 0.0)
        _check_range("runtime.max_restarts", self.max_restarts, -1)
        if len(set(self.slow_nodes)) != len(self.slow_nodes):
            raise ConfigError(f"runtime.slow_nodes has duplicates: {list(self.slow_nodes)}")


@dataclass(frozen=True)
class FaultsConfig:
    drop: float = 0.0
    """Probability that a message is lost on its way (each delivery decided on its own, the same for a seed)."""
    duplicate: float = 0.0
    """Probability that a message arrives twice."""
    delay_ms: float = 0.0
    """Latency added to every batch of messages a host receives, in milliseconds."""
    partition: str = ""
    """Nodes cut off from the rest for a range of rounds, NODES@START-END: 3,4@10-20 cuts nodes 3 and 4 off from round 10 up to round 20 (they still reach each other); several separated by ';'."""
    kill: str = ""
    """Host processes really killed (SIGKILL), NODE@ROUND: 3@5 kills the process holding node 3 as its round 5 starts; several separated by ';'. The host restarts (runtime.max_restarts) and resumes its nodes from their chains."""

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate"):
            _check_range(f"faults.{name}", getattr(self, name), 0.0, 1.0)
        _check_range("faults.delay_ms", self.delay_ms, 0.0)
        self.partitions()
        self.kills()

    def partitions(self) -> tuple[tuple[frozenset[int], int, int], ...]:
        """(nodes, first round, round they are back) of each `partition` entry."""
        out = []
        for part in _entries(self.partition):
            try:
                nodes_text, rounds = part.split("@")
                start, end = (int(x) for x in rounds.split("-"))
                nodes = frozenset(int(x) for x in nodes_text.split(",") if x.strip())
            except ValueError:
                raise ConfigError(f"faults.partition entry {part!r} is not NODES@START-END, "
                                  "e.g. 3,4@10-20") from None
            if not nodes or start < 0 or end <= start:
                raise ConfigError(f"faults.partition entry {part!r} needs nodes and "
                                  "0 <= START < END")
            out.append((nodes, start, end))
        return tuple(out)

    def kills(self) -> tuple[tuple[int, int], ...]:
        """(node, round) of each `kill` entry."""
        out = []
        for part in _entries(self.kill):
            try:
                node, round_index = (int(x) for x in part.split("@"))
            except ValueError:
                raise ConfigError(f"faults.kill entry {part!r} is not NODE@ROUND, e.g. 3@5") from None
            if node < 0 or round_index < 0:
                raise ConfigError(f"faults.kill entry {part!r}: node and round must be >= 0")
            out.append((node, round_index))
        return tuple(out)


def _entries(text: str) -> list[str]:
    return [p.strip() for p in text.replace(" ", "").split(";") if p.strip()]


@dataclass(frozen=True)
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)

    def __post_init__(self) -> None:
        n = self.topology.nodes
        if self.attack.kind != "none" and self.attack.malicious >= n:
            raise ConfigError(
                f"attack.malicious ({self.attack.malicious}) must be below topology.nodes ({n})"
            )
        for node in self.attack.nodes:
            if not 0 <= node < n:
                raise ConfigError(f"attack.nodes: node {node} is not in 0..{n - 1}")
        for node in self.topology.absent:
            if not 0 <= node < n:
                raise ConfigError(f"topology.absent: node {node} is not in 0..{n - 1}")
        if self.topology.absent and self.attackers:
            raise ConfigError("topology.absent is for runs without attackers (attack.kind none)")
        if n - len(set(self.topology.absent)) < 2:
            raise ConfigError("topology.absent leaves fewer than 2 nodes")
        if self.runtime.hosts > n:
            raise ConfigError(f"runtime.hosts ({self.runtime.hosts}) exceeds topology.nodes ({n})")
        present = n - len(set(self.topology.absent))
        named = [n for nodes, _, _ in self.faults.partitions() for n in nodes]
        for node in named + [n for n, _ in self.faults.kills()]:
            if not 0 <= node < present:
                raise ConfigError(f"faults: node {node} is not in 0..{present - 1}")
        for node in self.runtime.slow_nodes:
            if not 0 <= node < present:
                raise ConfigError(f"runtime.slow_nodes: node {node} is not in 0..{present - 1}")

    @property
    def attackers(self) -> tuple[int, ...]:
        """Ids of the malicious nodes (none when attack.kind is none)."""
        if self.attack.kind == "none" or self.attack.malicious == 0:
            return ()
        if self.attack.nodes:
            return tuple(sorted(self.attack.nodes))
        n = self.topology.nodes
        return tuple(range(n - self.attack.malicious, n))

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, Mapping):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {
            name: {f.name: plain(getattr(section, f.name)) for f in dataclasses.fields(section)}
            for name, section in ((s.name, getattr(self, s.name)) for s in dataclasses.fields(self))
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS: dict[str, type] = dict(typing.get_type_hints(Config))

# Short flags for the options users reach for most.
ALIASES: dict[str, str] = {
    "name": "experiment.name",
    "seed": "experiment.seed",
    "rounds": "experiment.rounds",
    "eval-every": "experiment.eval_every",
    "out": "experiment.out",
    "overwrite": "experiment.overwrite",
    "dataset": "data.dataset",
    "data-dir": "data.data_dir",
    "partition": "data.partition",
    "alpha": "data.alpha",
    "labels-per-node": "data.labels_per_node",
    "nodes": "topology.nodes",
    "topology": "topology.kind",
    "defense": "defense.rule",
    "buffer-size": "defense.buffer_size",
    "attack": "attack.kind",
    "malicious": "attack.malicious",
    "schedule": "runtime.schedule",
    "address": "runtime.address",
    "hosts": "runtime.hosts",
    "gpus-per-node": "runtime.gpus_per_node",
    "device": "runtime.device",
    "placement": "runtime.placement",
}


def _field_doc(cls: type, name: str) -> str:
    """The docstring written under a dataclass field (read from the source), if any."""
    import ast
    import inspect

    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return ""
    body = tree.body[0].body  # type: ignore[attr-defined]
    for i, node in enumerate(body[:-1]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == name
            and isinstance(body[i + 1], ast.Expr)
            and isinstance(body[i + 1].value, ast.Constant)
        ):
            return str(body[i + 1].value.value)
    return ""


def _convert(where: str, hint: Any, value: Any) -> Any:
    """Convert a YAML or flag value to the field's type, or raise ConfigError naming the field."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(where, inner[0], value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            parts = [p for p in value.replace(" ", "").split(",") if p]
            if args and typing.get_origin(args[0]) is tuple:  # edge list "0-1,1-2"
                value = [p.split("-") for p in parts]
            else:
                value = parts
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = args[0]
        return tuple(_convert(f"{where}[{i}]", item, v) for i, v in enumerate(value))
    if origin in (Mapping, dict) or hint is Mapping:
        if isinstance(value, str):
            pairs = [p for p in value.replace(" ", "").split(",") if p]
            out: dict[str, Any] = {}
            for p in pairs:
                if "=" not in p:
                    raise ConfigError(f"{where} must look like name=value,name=value; got {value!r}")
                k, v = p.split("=", 1)
                out[k] = v
            value = out
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        if len(args) == 2 and str in typing.get_args(args[1]):  # numbers, or names
            return {str(k): _number_or_name(f"{where}.{k}", v) for k, v in value.items()}
        return {str(k): _convert(f"{where}.{k}", float, v) for k, v in value.items()}
    if typing.get_origin(hint) is tuple or hint is tuple:
        return tuple(value)
    raise ConfigError(f"{where}: unsupported field type {hint!r}")  # pragma: no cover


def _number_or_name(where: str, value: Any) -> float | str:
    """A parameter that is a number, or a name where no number is written (e.g. a rule)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return typing.cast(float, _convert(where, float, value))


def _build_section(name: str, values: Mapping[str, Any]) -> Any:
    cls = SECTIONS[name]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(
            f"unknown config key {name}.{unknown[0]}; {name} has keys {sorted(hints)}"
        )
    kwargs = {k: _convert(f"{name}.{k}", hints[k], v) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the unknown-key check above
        raise ConfigError(f"{name}: {exc}") from exc


def config_from_dict(tree: Mapping[str, Any]) -> Config:
    """Build a validated Config from a nested mapping; unknown sections or keys are errors."""
    if not isinstance(tree, Mapping):
        raise ConfigError(f"config must be a mapping of sections, got {type(tree).__name__}")
    unknown = sorted(set(tree) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section {unknown[0]!r}; sections are {list(SECTIONS)}")
    sections = {}
    for name in SECTIONS:
        values = tree.get(name) or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"config section {name!r} must be a mapping, got {values!r}")
        sections[name] = _build_section(name, values)
    return Config(**sections)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return data


def merge(tree: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = dotted.split(".", 1)
    tree.setdefault(section, {})
    tree[section][key] = value


def add_config_arguments(parser: argparse.ArgumentParser, base: Config | None = None) -> None:
    """Add --config and a --section.field flag for every field (plus the short aliases)."""
    base = base or Config()
    parser.add_argument("--config", metavar="YAML", help="YAML file of config sections; flags override it")
    by_target = {v: k for k, v in ALIASES.items()}
    for section in SECTIONS:
        group = parser.add_argument_group(f"{section} options")
        cls = SECTIONS[section]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            dotted = f"{section}.{f.name}"
            default = getattr(getattr(base, section), f.name)
            doc = _field_doc(cls, f.name)
            names = [f"--{dotted}"]
            if dotted in by_target:
                names.insert(0, f"--{by_target[dotted]}")
            # A yes/no option works as a bare switch too: `--overwrite` means `--overwrite true`.
            switch: dict[str, Any] = {"nargs": "?", "const": "true"} if hints[f.name] is bool else {}
            group.add_argument(
                *names,
                dest=dotted,
                default=argparse.SUPPRESS,
                metavar="V",
                help=f"{doc} (default: {_show_default(default)})".strip(),
                **switch,
            )


def _show_default(value: Any) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "{}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "()"
    return str(value)


def config_from_args(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> Config:
    """Resolve defaults <- `base` <- YAML (--config) <- flags into one validated Config."""
    tree: dict[str, Any] = {k: dict(v) for k, v in (base or {}).items()}
    config_path = getattr(args, "config", None)
    if config_path:
        for section, values in load_yaml(config_path).items():
            if isinstance(values, Mapping):
                tree.setdefault(section, {}).update(values)
            else:
                tree[section] = values
    for dotted, value in vars(args).items():
        if "." in dotted:
            merge(tree, dotted, value)
    return config_from_dict(tree)
