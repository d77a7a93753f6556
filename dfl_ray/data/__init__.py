"""Data sets (MNIST, Fashion-MNIST) and the partitioners that give each node a disjoint shard."""

from dfl_ray.data.datasets import (
    DATASETS,
    DataNotFoundError,
    Dataset,
    load_dataset,
    resolve_data_dir,
)
from dfl_ray.data.partition import (
    NAMED_PARTITIONS,
    PARTITIONERS,
    NodeShard,
    label_histogram,
    partition,
)

__all__ = [
    "DATASETS",
    "NAMED_PARTITIONS",
    "PARTITIONERS",
    "DataNotFoundError",
    "Dataset",
    "NodeShard",
    "label_histogram",
    "load_dataset",
    "partition",
    "resolve_data_dir",
]
