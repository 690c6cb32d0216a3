"""Method configs: validated, JSON round trip, errors that name the key."""

import json

import pytest

from mitp.methods import ConfigError, config_from_dict, make_config, parse_overrides
from mitp.methods.mitp import MITPConfig


def test_json_round_trip(tmp_path):
    config = make_config(
        "mitp",
        num_classes=23,
        task="multi_label",
        hub="mean",
        tau=0.5,
        num_steps=2,
        text_layers=[9, 11],
        vision_layers=[20, 23],
        tied_generators=False,
        head_input="pooled+memory",
    )
    path = tmp_path / "method.json"
    path.write_text(json.dumps(config.to_dict()))
    assert json.loads(path.read_text())["method"] == "mitp"
    assert MITPConfig.from_dict(json.loads(path.read_text())) == config
    assert config_from_dict(json.loads(path.read_text())) == config


def test_defaults_follow_the_method_doc():
    config = MITPConfig()
    assert (config.num_steps, config.prompt_length, config.hub, config.tau) == (6, 8, "similarity", 0.1)
    assert (config.vision_init, config.tied_generators, config.head_input) == ("linear", True, "pooled")


def test_unknown_key_is_named():
    with pytest.raises(ConfigError) as err:
        make_config("mitp", num_classes=2, prompt_lenght=4)
    assert err.value.key == "prompt_lenght"
    assert "prompt_lenght" in str(err.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("hub", "attention"),
        ("vision_init", "zeros"),
        ("head_input", "memory"),
        ("task", "regression"),
        ("tau", 0),
        ("num_steps", 0),
        ("prompt_length", -1),
        ("num_steps", "six"),
        ("tied_generators", "yes"),
        ("num_classes", 1),
        ("text_layers", [1, 2, 3, 4, 5, 6]),  # without vision_layers
    ],
)
def test_invalid_values_are_named(key, value):
    with pytest.raises(ConfigError) as err:
        make_config("mitp", **{"num_classes": 3, key: value})
    assert err.value.key in (key, "vision_layers")
    assert err.value.key in str(err.value)


@pytest.mark.parametrize(
    "text, vision, key",
    [
        ([1, 2], [1, 2, 3], "text_layers"),  # length differs from num_steps=3
        ([1, 2, 2], [1, 2, 3], "text_layers"),  # not strictly increasing
        ([1, 2, 3], [3, 2, 1], "vision_layers"),
        ([-1, 2, 3], [1, 2, 3], "text_layers"),
    ],
)
def test_bad_layer_lists_are_named(text, vision, key):
    with pytest.raises(ConfigError) as err:
        make_config("mitp", num_classes=2, num_steps=3, text_layers=text, vision_layers=vision)
    assert err.value.key == key


def test_ints_are_accepted_for_floats_and_method_must_match():
    assert make_config("mitp", num_classes=2, tau=1).tau == 1.0
    with pytest.raises(ConfigError, match="method"):
        MITPConfig.from_dict({"method": "pmf"})
    with pytest.raises(ConfigError, match="unknown method"):
        config_from_dict({"method": "nope"})


def test_overrides_parse_yaml_values():
    assert parse_overrides(["tau=0.2", "text_layers=[1, 2]", "hub_norm=false", "hub=none"]) == {
        "tau": 0.2,
        "text_layers": [1, 2],
        "hub_norm": False,
        "hub": "none",
    }
    # YAML 1.1 would keep these as strings; on a command line and in a config file they are numbers.
    assert make_config("mitp", num_classes=2, tau="5e-2").tau == 0.05
    with pytest.raises(ConfigError):
        make_config("mitp", num_classes=2, tau="fast")
    assert parse_overrides(["lr=1e-4", "x=3E+2", "y=.5e1", "name=1e-4x"]) == {
        "lr": 1e-4,
        "x": 300.0,
        "y": 5.0,
        "name": "1e-4x",
    }
    with pytest.raises(ConfigError):
        parse_overrides(["tau"])


def test_scientific_notation_in_a_config_file_is_a_float(tmp_path):
    from mitp.app.train.config import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text("data: d\nbackbone: tiny-clip\nmethod: mitp\ntrain: {lr: 1e-4, weight_decay: 5E-2}\n")
    config = load_run_config(path)
    assert config.train.lr == 1e-4 and config.train.weight_decay == 0.05


def test_an_override_reaches_only_its_own_section_even_through_a_yaml_anchor(tmp_path):
    from mitp.app.train.config import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text(
        "data: d\nbackbone: tiny-clip\nmethod: mitp\n"
        "methods:\n  mitp: &prompts {num_steps: 2}\n  deep_prompts: *prompts\n"
    )
    config = load_run_config(path, ["methods.mitp.hub=mean"])
    assert config.methods == {"mitp": {"num_steps": 2, "hub": "mean"}, "deep_prompts": {"num_steps": 2}}
