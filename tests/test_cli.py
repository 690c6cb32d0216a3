"""The mitp command line: every command module, params and demo."""

import importlib
import json
import pkgutil

import pytest

from mitp.app import commands
from mitp.app.cli import main

COMMANDS = sorted(info.name for info in pkgutil.iter_modules(commands.__path__) if not info.name.startswith("_"))


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_module_is_one_help_line_its_arguments_and_run(name, capsys):
    command = importlib.import_module(f"mitp.app.commands.{name}")
    assert isinstance(command.HELP, str) and command.HELP.strip() and "\n" not in command.HELP
    assert callable(command.add_arguments) and callable(command.run)
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith(f"usage: mitp {name}")
    description = getattr(command, "DESCRIPTION", command.HELP)
    assert " ".join(description.split()) in " ".join(usage.split())  # the whole text, as argparse wraps it
    assert main([name, "--no-such-option"]) == 2  # a usage error is exit 2, never a traceback


def params_json(capsys, *args):
    assert main(["params", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_params_json_for_clip_vit_large_matches_the_paper_budget(capsys):
    out = params_json(capsys, "--backbone", "shape:clip-vit-large-patch14", "--num-classes", "101")
    assert 1_700_000 <= out["trainable_params"] <= 2_100_000
    assert out["total_params"] == 427_616_512 + out["trainable_params"]
    components = {row["component"]: row for row in out["components"]}
    assert components["backbone.vision"]["trainable"] == 0 and components["backbone.text"]["trainable"] == 0
    assert sum(row["trainable"] for row in out["components"]) == out["trainable_params"]


def test_params_set_overrides_change_the_count(capsys):
    base = params_json(capsys, "--backbone", "shape:clip-vit-large-patch14", "--num-classes", "101")
    longer = params_json(
        capsys, "--backbone", "shape:clip-vit-large-patch14", "--num-classes", "101", "--set", "prompt_length=16"
    )
    assert longer["trainable_params"] - base["trainable_params"] == 8 * 768  # 8 more text prompt tokens
    assert longer["config"]["prompt_length"] == 16


def test_params_table(capsys):
    assert main(["params", "--backbone", "tiny-clip"]) == 0
    out = capsys.readouterr().out
    assert "hub.vision_proj" in out and "trainable:" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "prompt_lenght=4"], "prompt_lenght: unknown key"),
        (["--set", "hub=attention"], "hub: 'attention' is not one of"),
        (["--backbone", "shape:nope"], "unknown shape spec"),
        (["--method", "nope"], "unknown method 'nope'"),
    ],
)
def test_params_errors_name_the_problem(capsys, args, message):
    assert main(["params", *args]) == 2
    assert message in capsys.readouterr().err


def test_demo_trains_and_reports(capsys):
    assert main(["demo", "--steps", "4", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "step    1  loss" in out and "step    4  loss" in out
    assert "held-out accuracy" in out and "backbone stayed frozen" in out


def test_a_description_laid_out_by_hand_keeps_its_lines(capsys):
    from mitp.app.commands import significance

    with pytest.raises(SystemExit):
        main(["significance", "--help"])
    assert significance.DESCRIPTION.strip() in capsys.readouterr().out
