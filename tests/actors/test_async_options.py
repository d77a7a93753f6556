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
