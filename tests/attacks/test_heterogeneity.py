"""experiments/heterogeneity.py: the spread-to-mean ratio, and label skew measured as wider."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from dfl_ray.data import load_dataset
from tests.helpers import load_script


@pytest.fixture(scope="module")
def het() -> ModuleType:
    return load_script("experiments/heterogeneity.py")


def test_spread_ratio_is_the_mean_squared_deviation_over_the_squared_mean(het: ModuleType) -> None:
    m, v = np.array([3.0, 4.0]), np.array([1.0, -2.0])
    # Rows m + v and m - v: deviations +-v (||v||^2 = 5), mean m (||m||^2 = 25).
    assert het.spread_ratio(np.stack([m + v, m - v])) == pytest.approx(0.2)
    assert het.spread_ratio(np.stack([m, m, m])) == 0.0
    assert het.spread_ratio(np.stack([v, -v])) == float("inf")


@pytest.mark.slow
def test_two_labels_per_node_spread_wider_than_iid_shards(het: ModuleType, data_dir: Path) -> None:
    data = load_dataset("mnist", data_dir)
    iid = het.measure("iid", 0, [0, 1], data)
    skewed = het.measure("labels2", 0, [0, 1], data)
    assert [row["round"] for row in iid] == [0, 1]
    for a, b in zip(iid, skewed, strict=True):
        assert a["rho_gradient"] < b["rho_gradient"] and a["rho_update"] < b["rho_update"]
    # FedAvg learnt something in the first round on IID shards: the measured models move.
    assert iid[1]["accuracy"] > iid[0]["accuracy"]
