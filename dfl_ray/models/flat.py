"""Model <-> one contiguous float32 vector, described by a `ModelSpec` with a stable id."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import cached_property
from math import prod

import blake3
import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """Architecture id plus the ordered names and shapes of every trainable tensor.

    The vector layout is the concatenation of the tensors in `names` order, each flattened in
    C order, as little-endian float32. Two models with the same spec id share that layout.
    """

    arch: str
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError(
                f"ModelSpec: {len(self.names)} names but {len(self.shapes)} shapes"
            )
        if self.dtype != "float32":
            raise ValueError(f"ModelSpec: dtype must be 'float32', got {self.dtype!r}")

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        return tuple(prod(s) for s in self.shapes)

    @cached_property
    def size(self) -> int:
        """Number of float32 elements in the flat vector."""
        return sum(self.sizes)

    @cached_property
    def nbytes(self) -> int:
        return 4 * self.size

    @cached_property
    def id(self) -> bytes:
        """32-byte BLAKE3 digest of a canonical (sorted-key JSON) description of the layout."""
        canon = json.dumps(
            {"arch": self.arch, "dtype": self.dtype, "names": list(self.names),
             "shapes": [list(s) for s in self.shapes]},
            sort_keys=True, separators=(",", ":"),
        ).encode()
        return blake3.blake3(b"dfl/model-spec/v1" + canon).digest()

    @classmethod
    def of(cls, model: nn.Module, arch: str) -> ModelSpec:
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return cls(arch, tuple(n for n, _ in params), tuple(tuple(p.shape) for _, p in params))

    def check_vector(self, vec: np.ndarray) -> None:
        """Raise ValueError naming the problem if `vec` is not a valid flat vector of this spec."""
        if not isinstance(vec, np.ndarray):
            raise ValueError(f"model vector must be a numpy array, got {type(vec).__name__}")
        if vec.dtype != np.dtype("<f4"):
            raise ValueError(f"model vector dtype must be little-endian float32, got {vec.dtype}")
        if vec.shape != (self.size,):
            raise ValueError(f"model vector shape must be ({self.size},), got {vec.shape}")
        if not vec.flags.c_contiguous:
            raise ValueError("model vector must be C-contiguous")


def as_tensor_readonly(vec: np.ndarray) -> torch.Tensor:
    """A tensor sharing `vec`'s memory, also when `vec` is read-only (Ray object-store views).

    torch warns that writes to such a tensor are undefined; callers only read from it.
    """
    if vec.flags.writeable:
        return torch.from_numpy(vec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(vec)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def model_to_vector(model: nn.Module, out: np.ndarray | None = None) -> np.ndarray:
    """Flatten the trainable parameters into one float32 vector (a fresh array unless `out`)."""
    params = trainable_parameters(model)
    total = sum(p.numel() for p in params)
    if out is None:
        out = np.empty(total, dtype=np.float32)
    elif out.shape != (total,) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape ({total},), got {out.dtype} {out.shape}")
    flat = torch.from_numpy(out)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            flat[offset : offset + n].copy_(p.detach().reshape(-1))
            offset += n
    return out


def vector_to_model(vec: np.ndarray, model: nn.Module) -> None:
    """Load a flat float32 vector into the model's trainable parameters, in place."""
    params = trainable_parameters(model)
    total = sum(p.numel() for p in params)
    if vec.shape != (total,):
        raise ValueError(f"vector has shape {vec.shape}, model needs ({total},)")
    src = as_tensor_readonly(vec)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(src[offset : offset + n].view_as(p))
            offset += n
