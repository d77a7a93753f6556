"""Config tree: defaults, validation errors that name the field, YAML and flag loading."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from dfl_ray.config import (
    Config,
    ConfigError,
    DataConfig,
    add_config_arguments,
    config_from_args,
    config_from_dict,
)


def parse(argv: list[str]) -> Config:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_defaults_are_the_main_job() -> None:
    cfg = Config()
    assert cfg.topology.kind == "dfl10" and cfg.topology.nodes == 10
    assert cfg.data.partition == "dirichlet" and cfg.data.alpha == 0.1
    assert cfg.attack.kind == "random_model" and cfg.attackers == (7, 8, 9)
    assert cfg.runtime.schedule == "sync" and cfg.experiment.rounds == 40


def test_flags_and_aliases_override_defaults() -> None:
    cfg = parse(["--nodes", "12", "--topology", "ring", "--alpha", "0.5", "--data.val_fraction", "0.2",
                 "--malicious", "2", "--attack", "sign_flip", "--attack.params", "scale=2"])
    assert cfg.topology.nodes == 12 and cfg.topology.kind == "ring"
    assert cfg.data.alpha == 0.5 and cfg.data.val_fraction == 0.2
    assert cfg.attackers == (10, 11)
    assert dict(cfg.attack.params) == {"scale": 2.0}


def test_yes_no_options_work_as_bare_switches() -> None:
    assert parse(["--overwrite"]).experiment.overwrite is True
    assert parse(["--overwrite", "false", "--seed", "3"]).experiment.overwrite is False
    assert parse(["--experiment.progress", "--seed", "3"]).experiment.progress is True
    with pytest.raises(ConfigError, match="experiment.overwrite"):
        parse(["--overwrite", "maybe"])


def test_yaml_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  partition: iid\nexperiment:\n  rounds: 7\n")
    cfg = parse(["--config", str(path), "--rounds", "9"])
    assert cfg.data.partition == "iid"
    assert cfg.experiment.rounds == 9


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    cfg = parse(["--topology", "edges", "--nodes", "3", "--topology.edges", "0-1,1-2",
                 "--attack", "none", "--malicious", "0"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert parse(["--config", str(path)]) == cfg
    assert cfg.topology.edges == ((0, 1), (1, 2))


def test_invalid_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"data\.alfa"):
        config_from_dict({"data": {"alfa": 0.1}})


def test_invalid_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError, match="'trainer'"):
        config_from_dict({"trainer": {}})


def test_invalid_wrong_type_names_field() -> None:
    with pytest.raises(ConfigError, match=r"experiment\.rounds must be an integer"):
        config_from_dict({"experiment": {"rounds": "many"}})
    with pytest.raises(ConfigError, match=r"data\.alpha must be a number"):
        config_from_dict({"data": {"alpha": True}})


def test_invalid_alpha_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"data\.alpha must be > 0"):
        DataConfig(alpha=0.0)


def test_grad_clip_is_checked_and_reaches_the_nodes() -> None:
    from dfl_ray.node.build import sgd_settings

    with pytest.raises(ConfigError, match=r"training\.grad_clip must be >= 0"):
        config_from_dict({"training": {"grad_clip": -1.0}})
    assert sgd_settings(config_from_dict({"training": {"grad_clip": 7.5}})).grad_clip == 7.5


def test_divergence_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"training\.max_loss_rise must be >= 0"):
        config_from_dict({"training": {"max_loss_rise": -0.1}})
    assert config_from_dict({}).training.max_loss_rise == 0.5
    assert config_from_dict({"training": {"max_loss_rise": "inf"}}).training.max_loss_rise == float("inf")
    with pytest.raises(ConfigError, match=r"training\.max_move must be >= 1"):
        config_from_dict({"training": {"max_move": 0.5}})
    assert config_from_dict({}).training.max_move == 4.0


def test_invalid_choice_lists_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"data\.partition must be one of \['iid', 'dirichlet'"):
        config_from_dict({"data": {"partition": "pathological"}})
    with pytest.raises(ConfigError, match="defense.rule"):
        config_from_dict({"defense": {"rule": "magic"}})


def test_invalid_rule_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match="no parameter 'nonsense'"):
        config_from_dict({"defense": {"rule": "trimmed_mean", "params": {"nonsense": 1}}})


def test_invalid_too_many_attackers() -> None:
    with pytest.raises(ConfigError, match="attack.malicious"):
        config_from_dict({"attack": {"malicious": 10}})


def test_invalid_dfl10_needs_ten_nodes() -> None:
    with pytest.raises(ConfigError, match="dfl10"):
        config_from_dict({"topology": {"nodes": 12}})


def test_invalid_unknown_flag_exits() -> None:
    with pytest.raises(SystemExit):
        parse(["--no-such-flag", "1"])


def test_invalid_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse(["--config", str(path)])
    with pytest.raises(ConfigError, match="does not exist"):
        parse(["--config", str(tmp_path / "missing.yaml")])


def test_invalid_rule_parameter_value_is_named() -> None:
    with pytest.raises(ConfigError, match="defense.params: .*beta"):
        config_from_dict({"defense": {"rule": "dfl_guard", "params": {"beta": 2.0}}})


def test_integer_attack_params_from_flags_build_the_attack() -> None:
    from dfl_ray.attacks import make_attack

    cfg = config_from_dict({"attack": {"kind": "sign_flip", "params": "keep_last=10,honest_turns=20"}})
    attack = make_attack(cfg.attack.kind, **dict(cfg.attack.params))
    assert (attack.keep_last, attack.honest_turns) == (10, 20)  # type: ignore[attr-defined]
    assert type(attack.honest_turns) is int


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("sign_flip", "keep_last=1.5", "keep_last must be an integer >= 0, got 1.5"),
    ("alie", "honest_turns=-2", "honest_turns must be an integer >= 0, got -2"),
    ("ipm", "epsilon=0", "attack parameter epsilon must be a finite number > 0"),
])
def test_invalid_attack_param_values_fail_at_configuration(kind: str, params: str,
                                                           message: str) -> None:
    with pytest.raises(ConfigError, match=f"attack.params: {message}"):
        config_from_dict({"attack": {"kind": kind, "params": params}})


def test_attack_help_names_every_attack_kind_and_parameter() -> None:
    from dfl_ray.attacks import ATTACK_KINDS, attack_params
    from dfl_ray.config import AttackConfig, _field_doc

    kinds = _field_doc(AttackConfig, "kind")
    params = _field_doc(AttackConfig, "params")
    for kind in ATTACK_KINDS:
        assert kind in kinds
        for name in attack_params(kind):
            assert name in params, (kind, name)


def test_attack_params_take_names_where_the_attack_takes_a_name() -> None:
    cfg = config_from_dict({"attack": {"kind": "byzfl_opt_alie", "params": "rule=trmean,f=2"}})
    assert cfg.attack.params == {"rule": "trmean", "f": 2.0}
    assert config_from_dict(yaml.safe_load(cfg.to_yaml())).attack.params == cfg.attack.params
    with pytest.raises(ConfigError, match="attack.params.rule must be a name"):
        config_from_dict({"attack": {"kind": "byzfl_opt_alie", "params": "rule=3"}})
    with pytest.raises(ConfigError, match="attack.params.f must be a number"):
        config_from_dict({"attack": {"kind": "byzfl_opt_alie", "params": "f=abc"}})
    with pytest.raises(ConfigError, match="rule must be one of"):
        config_from_dict({"attack": {"kind": "byzfl_opt_alie", "params": "rule=nope"}})
