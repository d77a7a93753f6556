"""The fault plan: loss and duplication rates, partitions and kills, the same for a seed."""

from __future__ import annotations

import pytest

from dfl_ray.config import ConfigError, FaultsConfig
from dfl_ray.node.faults import FaultPlan


def fates(plan: FaultPlan, n: int = 5000) -> list[int]:
    return [plan.copies(i % 7, (i + 1) % 7, i // 49, i) for i in range(n)]


def test_drop_and_duplicate_rates_follow_the_config() -> None:
    out = fates(FaultPlan(FaultsConfig(drop=0.2, duplicate=0.1), seed=3))
    dropped, doubled = out.count(0) / len(out), out.count(2) / len(out)
    assert 0.18 < dropped < 0.22
    assert 0.07 < doubled < 0.09  # 10 % of the 80 % that were not dropped
    assert fates(FaultPlan(FaultsConfig(), seed=3)) == [1] * 5000


def test_the_same_seed_loses_the_same_messages_another_seed_others() -> None:
    faults = FaultsConfig(drop=0.3)
    assert fates(FaultPlan(faults, seed=1)) == fates(FaultPlan(faults, seed=1))
    assert fates(FaultPlan(faults, seed=1)) != fates(FaultPlan(faults, seed=2))


def test_a_partition_cuts_across_only_within_its_rounds() -> None:
    plan = FaultPlan(FaultsConfig(partition="3,4@10-20"), seed=0)
    assert plan.cut(3, 0, 10) and plan.cut(0, 4, 19)  # either direction
    assert not plan.cut(3, 4, 15)  # inside the cut-off set
    assert not plan.cut(0, 1, 15)
    assert not plan.cut(3, 0, 9) and not plan.cut(3, 0, 20)  # back at round 20
    assert plan.copies(3, 0, 12, 0) == 0


def test_kills_name_a_node_and_a_round() -> None:
    plan = FaultPlan(FaultsConfig(kill="3@5;1@0"), seed=0)
    assert plan.kills_at(3, 5) and plan.kills_at(1, 0)
    assert not plan.kills_at(3, 4) and not plan.kills_at(5, 3)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("partition", "3,4", "NODES@START-END"),
    ("partition", "3@20-10", "START < END"),
    ("kill", "3", "NODE@ROUND"),
    ("kill", "-1@2", ">= 0"),
    ("drop", 1.5, "faults.drop"),
])
def test_invalid_fault_settings_are_named(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FaultsConfig(**{field: value})  # type: ignore[arg-type]
