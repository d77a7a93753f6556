"""The async schedule's and the stragglers' options: listed by --help, checked on construction."""

from __future__ import annotations

import pytest

from dfl_ray.config import ConfigError, config_from_dict
from experiments.lenet_noniid import main

OPTIONS = ("runtime.slow_nodes", "runtime.slowdown", "runtime.slack", "runtime.patience",
           "runtime.max_staleness", "runtime.reuse")


def test_help_lists_every_async_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in OPTIONS:
        assert f"--{option}" in text, option


def test_stragglers_parse_from_flags() -> None:
    cfg = config_from_dict({"runtime": {"slow_nodes": "0,4", "slowdown": "3"}})
    assert cfg.runtime.slow_nodes == (0, 4) and cfg.runtime.slowdown == 3.0


@pytest.mark.parametrize("runtime, message", [
    ({"slow_nodes": [10]}, "runtime.slow_nodes: node 10"),
    ({"slow_nodes": [1, 1]}, "duplicates"),
    ({"slowdown": 0.5}, "runtime.slowdown"),
    ({"slack": -2}, "runtime.slack"),
    ({"patience": 0}, "runtime.patience"),
    ({"max_staleness": -2}, "runtime.max_staleness"),
])
def test_invalid_async_options(runtime: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"runtime": runtime})


def test_reuse_parses_as_a_switch() -> None:
    assert config_from_dict({}).runtime.reuse is True
    assert config_from_dict({"runtime": {"reuse": "false"}}).runtime.reuse is False
    with pytest.raises(ConfigError, match="runtime.reuse must be true or false"):
        config_from_dict({"runtime": {"reuse": "sometimes"}})


def test_stragglers_table_names_the_seeds_of_a_cell_missing_some() -> None:
    import argparse

    from experiments.stragglers import markdown

    def row(schedule: str, seed: int, others: float) -> dict[str, object]:
        return {"schedule": schedule, "variant": "", "seed": seed, "stragglers": 1,
                "seconds": 10.0, "honest": others, "others": others, "stragglers_acc": None,
                "their_rounds": None, "staleness": 0.0, "reused_models": 0, "dropped": 0}

    rows = [row("async", 0, 0.9), row("async", 1, 0.8), row("sync", 0, 0.95)]
    ns = argparse.Namespace(rounds=40, stragglers=[1], slowdown=5.0)
    line = next(x for x in markdown(rows, ns, {0: {1: (5,)}, 1: {1: (2,)}}).splitlines()
                if x.startswith("| 1 |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[2] == "0.950 [seed 0]"  # sync: seed 0 only, and the table says so
    assert cells[5] == "0.850 (0.800-0.900)"  # async: every seed, no marker
