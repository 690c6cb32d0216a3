"""Configs explain themselves: every key has help, `mitp config` prints a valid config with every default,
and the README's run-config block matches the code."""

import re
from pathlib import Path

import pytest
import yaml

from mitp.app.cli import main
from mitp.app.commands.config import render, sections
from mitp.app.train.config import EvalConfig, RunConfig, TrainConfig, resolve_method_config
from mitp.methods import available_methods, get_method
from mitp.methods.head import HeadConfig

README = Path(__file__).parents[1] / "README.md"
CONFIG_CLASSES = [HeadConfig, TrainConfig, EvalConfig] + [get_method(m).config_class for m in available_methods()]


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_key_says_what_it_does(config_class):
    for row in config_class.fields_help():
        assert len(row["help"]) > 10, f"{config_class.__name__}.{row['key']} has no help"


@pytest.mark.parametrize("method", available_methods())
def test_mitp_config_prints_a_valid_run_config_at_the_defaults(method, capsys):
    assert main(["config", "--method", method]) == 0
    raw = yaml.safe_load(capsys.readouterr().out)
    raw.update(data="d", backbone="tiny-clip")
    config = RunConfig.from_dict(raw)
    assert config.train == TrainConfig() and config.eval == EvalConfig() and config.head == HeadConfig()
    method_config = resolve_method_config(config, 3, "single_label")
    defaults = get_method(method).config_class(num_classes=3)
    if "missing_aware" in defaults.field_names():  # null resolves against the data: nothing can be missing here
        defaults = defaults.replace(missing_aware=False)
    assert method_config == defaults
    assert set(raw["model"]) == get_method(method).config_class.field_names() - {"num_classes", "task", "head"}


def test_choices_come_from_the_types_and_subclasses_keep_them():
    rows = {row["key"]: row for row in TrainConfig.fields_help()}
    assert rows["clip_scope"]["type"] == "one of 'per_group', 'global'"
    full = {row["key"]: row for row in get_method("full_finetune").config_class.fields_help()}
    assert full["task"]["type"] == "one of 'single_label', 'multi_label'"
    assert full["inputs"]["type"] == "one of 'both', 'image', 'text'"


def readme_run_config() -> dict:
    text = README.read_text()
    block = re.search(r"### Run configs.*?```yaml\n(.*?)```", text, re.S).group(1)
    return yaml.safe_load(block)


@pytest.mark.parametrize("section, config_class", [("head", HeadConfig), ("train", TrainConfig), ("eval", EvalConfig)])
def test_the_readme_block_shows_every_key_with_its_default(section, config_class):
    shown = readme_run_config()[section]
    defaults = {row["key"]: row["default"] for row in config_class.fields_help()}
    assert shown == defaults, "README's run-config block differs from `mitp config`; update it"


def test_json_output_has_every_section(capsys):
    assert main(["config", "--method", "pmf", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"method", "run", "model", "head", "train", "eval"}
    assert {row["key"] for row in out["model"]} >= {"n_fusion_layers", "prompt_gate"}
    assert sections("pmf")["train"] == out["train"] and render("pmf").startswith("# A run config for method pmf")
