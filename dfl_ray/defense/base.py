"""Input and output of every aggregation rule, validated on construction."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from dfl_ray.ledger.transaction import is_finite


@dataclass(frozen=True, eq=False)
class AggregationInput:
    """What a node hands its aggregation rule: its own model and the buffered received ones.

    Any input array may be a read-only view (Ray object store); rules never write to one.
    Rules read the received models through `rows` (each row where it lies) or `matrix` (one
    [k, d] array, stacked on first use when the models came as rows).
    """

    own: np.ndarray
    """float32 [d]: this node's model now (after its local training)."""
    own_score: float
    """Accuracy of the own model on the node's own validation data, in [0, 1]."""
    models: np.ndarray | tuple[np.ndarray, ...]
    """The k >= 1 buffered received models, as given: a float32 [k, d] array, or a tuple of k
    float32 [d] rows (a node hands the rows it buffered, so that rules which only weigh or
    measure rows read them in place instead of copying them into one array first)."""
    senders: tuple[str, ...]
    """k distinct sender addresses, one per received model."""
    scores: np.ndarray
    """float64 [k]: this node's accuracy of each received model on its validation data, in [0, 1]."""
    reputations: Mapping[str, float]
    """Current reputation per sender, in [0, 1]; a missing sender has the rule's initial value."""
    base: np.ndarray | None = None
    """float32 [d] or None: this node's model at the start of the round, before its local training.

    Rules that compare update directions (model minus base) need it; the others ignore it.
    """
    head: slice | None = None
    """Where the output layer lies in the model vector, or None: its bias alone (one coordinate
    per class), or with `head_classes` set its weights then its bias. Rules that read the
    classifier's update need it; a node sets it when its model's last tensors are that layer's
    weights and bias (every model in the registry)."""
    head_classes: int | None = None
    """None: `head` is the output bias alone. Else the number of classes c, and `head` covers
    the output layer's weights [c, hidden] (row-major) followed by its bias [c]."""
    head_base: np.ndarray | None = None
    """float32 [len(head)] or None: the round-start model on the `head` coordinates, for rules
    that read only the classifier's update (a node then keeps these few values instead of a
    whole `base`). `start_head` falls back to `base[head]`."""
    tensors: tuple[int, ...] | None = None
    """The sizes of the model's tensors in vector order (summing to d), or None: rules that
    test each layer apart (dfl_guard's sign test) read them; a node sets `ModelSpec.sizes`."""
    checked_rows: bool = False
    """True when every received model is known finite already, so construction skips only
    the finiteness scan of `models` (every other check still runs).

    A node buffers a received model only after `check_payload` found it finite on receipt,
    and rows are read-only from then on, so a second scan of every row per aggregation would
    find nothing new. Anyone else leaves it False.
    """
    probe: Callable[[np.ndarray], float] | None = None
    """None, or the validation loss (lower is better) of a float32 [d] model vector on this
    node's own held-out data, which no sender has seen: rules that test candidate models
    against data an attacker cannot fit (dfl_shield) call it; a node passes `Learner.loss`."""

    def __post_init__(self) -> None:
        own, models, scores = self.own, self.models, self.scores
        if not isinstance(own, np.ndarray) or own.dtype != np.float32 or own.ndim != 1:
            raise ValueError(f"own must be a 1-D float32 array, got {_describe(own)}")
        d = own.shape[0]
        if isinstance(models, tuple):
            k = len(models)
        elif isinstance(models, np.ndarray) and models.dtype == np.float32 and models.ndim == 2:
            k = models.shape[0]
        else:
            raise ValueError(f"models must be a 2-D float32 array [k, d] or a tuple of k 1-D "
                             f"float32 rows, got {_describe(models)}")
        if k < 1:
            raise ValueError("models must hold at least one received model (k >= 1), got k = 0")
        if isinstance(models, tuple):
            for i, row in enumerate(models):
                if not isinstance(row, np.ndarray) or row.dtype != np.float32 or row.ndim != 1:
                    raise ValueError(f"models row {i} must be a 1-D float32 array, "
                                     f"got {_describe(row)}")
                if row.shape[0] != d:
                    raise ValueError(f"models row {i} has length {row.shape[0]} but own has "
                                     f"length {d}")
        elif models.shape[1] != d:
            raise ValueError(f"models has rows of length {models.shape[1]} but own has length {d}")
        if not isinstance(self.senders, tuple) or len(self.senders) != k:
            raise ValueError(f"senders must be a tuple of {k} addresses (one per model), "
                             f"got {_describe(self.senders)}")
        if not all(isinstance(s, str) and s for s in self.senders):
            raise ValueError("senders must be non-empty strings")
        if len(set(self.senders)) != k:
            raise ValueError(f"senders must be distinct (one model per sender), got {self.senders}")
        if not isinstance(scores, np.ndarray) or scores.dtype != np.float64 or scores.shape != (k,):
            raise ValueError(f"scores must be a float64 array of shape ({k},), got {_describe(scores)}")
        if not np.all((scores >= 0.0) & (scores <= 1.0)):  # also false for NaN
            raise ValueError(f"scores must be finite accuracies in [0, 1], got {scores.tolist()}")
        if not _is_unit(self.own_score):
            raise ValueError(f"own_score must be a finite accuracy in [0, 1], got {self.own_score!r}")
        if not isinstance(self.reputations, Mapping):
            raise ValueError(f"reputations must be a mapping, got {type(self.reputations).__name__}")
        for sender, value in self.reputations.items():
            if not isinstance(sender, str) or not _is_unit(value):
                raise ValueError(f"reputations must map sender strings to values in [0, 1], "
                                 f"got {sender!r}: {value!r}")
        if self.base is not None and (
            not isinstance(self.base, np.ndarray) or self.base.dtype != np.float32
            or self.base.shape != own.shape
        ):
            raise ValueError(f"base must be a float32 array shaped like own {own.shape}, "
                             f"got {_describe(self.base)}")
        if self.base is not None and not is_finite(self.base):
            raise ValueError("base contains NaN or infinite values")
        if not is_finite(own):
            raise ValueError("own contains NaN or infinite values")
        head = self.head
        if head is not None and not (
            isinstance(head, slice) and head.step in (None, 1)
            and isinstance(head.start, int) and isinstance(head.stop, int)
            and head.start >= 0 and head.start + 2 <= head.stop <= d
        ):
            raise ValueError(f"head must be a slice of at least 2 coordinates within the model's "
                             f"{d}, got {head!r}")
        if self.head_classes is not None:
            c = self.head_classes
            if head is None:
                raise ValueError("head_classes needs head (the coordinates it describes)")
            n = head.stop - head.start
            if (isinstance(c, bool) or not isinstance(c, int) or c < 2 or n % c
                    or n // c < 2):
                raise ValueError(f"head_classes must be an integer >= 2 that divides the head's "
                                 f"{n} coordinates into weight rows and a bias, got {c!r}")
        if self.head_base is not None:
            if head is None:
                raise ValueError("head_base needs head (the coordinates it covers)")
            n = head.stop - head.start
            if (not isinstance(self.head_base, np.ndarray) or self.head_base.dtype != np.float32
                    or self.head_base.shape != (n,) or not is_finite(self.head_base)):
                raise ValueError(f"head_base must be a finite float32 array of shape ({n},), "
                                 f"got {_describe(self.head_base)}")
        if self.tensors is not None and not (
            isinstance(self.tensors, tuple)
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in self.tensors)
            and sum(self.tensors) == d
        ):
            raise ValueError(f"tensors must be a tuple of positive tensor sizes summing to the "
                             f"model's {d} coordinates, got {_describe(self.tensors)}")
        if self.probe is not None and not callable(self.probe):
            raise ValueError(f"probe must be callable, got {_describe(self.probe)}")
        if not isinstance(self.checked_rows, bool):
            raise ValueError(f"checked_rows must be a bool, got {_describe(self.checked_rows)}")
        if not self.checked_rows:
            bad = [i for i, row in enumerate(self.rows) if not is_finite(row)]
            if bad:
                raise ValueError(f"models contains NaN or infinite values in rows {bad}")

    @property
    def k(self) -> int:
        """Number of received models."""
        return len(self.rows)

    @cached_property
    def rows(self) -> tuple[np.ndarray, ...]:
        """The k received models as float32 [d] arrays where they lie (for a [k, d] `models`,
        views of its rows); nothing is copied."""
        models = self.models
        return models if isinstance(models, tuple) else tuple(models)

    @cached_property
    def matrix(self) -> np.ndarray:
        """float32 [k, d]: the received models as one array, read-only.

        A [k, d] `models` is returned as it is. Rows are stacked on first use into a fresh
        array kept with this input (14 MB for eight LeNets): only rules that sort or compare
        across models need it, and those stack the own model with the rows themselves.
        """
        if isinstance(self.models, np.ndarray):
            return self.models
        matrix = np.stack(self.models)
        matrix.flags.writeable = False
        return matrix

    @property
    def start_head(self) -> np.ndarray | None:
        """The round-start model on the `head` coordinates (`head_base`, else `base[head]`), or
        None when `head` or both sources are missing."""
        if self.head is None:
            return None
        if self.head_base is not None:
            return self.head_base
        return None if self.base is None else self.base[self.head]

    def get_reputations(self, initial: float) -> np.ndarray:
        """float64 [k]: each sender's current reputation, `initial` for senders not yet known."""
        return np.array([float(self.reputations.get(s, initial)) for s in self.senders])


@dataclass(frozen=True, eq=False)
class AggregationResult:
    """What a rule returns; `model` is always a fresh array that aliases no input."""

    model: np.ndarray
    """float32 [d]: the node's new own model."""
    reputations: dict[str, float]
    """The full updated table: every sender of the input table plus any new ones."""
    weights: np.ndarray
    """float64 [k]: each received model's share of the new model (0 = rejected or ignored);
    each rule's docstring says how the share is counted."""
    details: Mapping[str, np.ndarray] = field(default_factory=dict)
    """What the rule measured of each received model, by name (float64 [k] each, NaN where it
    measured nothing): dfl_guard's distances and validation-probe rises and limits. Read by
    the aggregation trace (`experiment.trace`), never by the protocol."""

    def __post_init__(self) -> None:
        if self.model.dtype != np.float32 or self.model.ndim != 1:
            raise ValueError(f"model must be a 1-D float32 array, got {_describe(self.model)}")
        if self.weights.dtype != np.float64 or self.weights.ndim != 1:
            raise ValueError(f"weights must be a 1-D float64 array, got {_describe(self.weights)}")
        for name, values in self.details.items():
            if not isinstance(values, np.ndarray) or values.shape != self.weights.shape:
                raise ValueError(f"details[{name!r}] must be an array shaped like weights "
                                 f"{self.weights.shape}, got {_describe(values)}")


def check_number(name: str, value: object, low: float, high: float = math.inf, *,
                 low_open: bool = False, allow_inf: bool = False) -> float:
    """Return `value` as a float, or raise ValueError naming the parameter and its valid range."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"parameter {name} must be a number, got {value!r}")
    x = float(value)
    if math.isnan(x) or (math.isinf(x) and not allow_inf):
        raise ValueError(f"parameter {name} must be finite, got {value!r}")
    if x < low or x > high or (low_open and x == low):
        left = "(" if low_open else "["
        raise ValueError(f"parameter {name} must be in {left}{low}, {high}], got {value!r}")
    return x


def check_count(name: str, value: object, low: int) -> int:
    """Return `value` as an int >= `low`; integral floats (1.0, as configs parse) are accepted."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"parameter {name} must be an integer, got {value!r}")
    if not float(value).is_integer() or value < low:
        raise ValueError(f"parameter {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _is_unit(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            and 0.0 <= float(value) <= 1.0)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return f"{type(value).__name__} {value!r}"[:120]
