"""Every command that loads weights refuses non-finite ones by name (the one model-folder loader checks them)."""

import shutil

import pytest
from safetensors.torch import load_file, save_file

from mitp.app.cli import main


@pytest.fixture(scope="module")
def diverged(tiny_run, tmp_path_factory):
    """A copy of a finished run whose best checkpoint holds a NaN, as a diverged run would."""
    run = tmp_path_factory.mktemp("diverged") / "run"
    shutil.copytree(tiny_run, run)
    path = run / "checkpoint" / "best" / "model.safetensors"
    tensors = load_file(str(path))
    name = next(iter(tensors))
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(path))
    return run


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "{run}"],
        ["predict", "{run}", "--text", "apple"],
        ["serve", "{run}", "--port", "1"],  # refused while loading, before it would bind
        ["export", "{run}", "--out", "{tmp}/export"],
        ["significance", "--a", "{run}", "--b", "{finite}", "--samples-only"],
        ["robustness", "{run}", "--rates", "0", "--out", "{tmp}/robustness"],
        ["explain", "{run}", "--text", "apple", "--image", "{image}", "--out", "{tmp}/explain.png"],
    ],
    ids=lambda command: command[0],
)
def test_a_command_that_loads_non_finite_weights_refuses_them_by_name(
    diverged, tiny_run, toy_dataset, tmp_path, command, capsys
):
    values = {"run": str(diverged), "finite": str(tiny_run), "tmp": str(tmp_path)}
    values["image"] = str(toy_dataset / "images" / "test-0000.png")
    assert main([part.format(**values) for part in command]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors: 1 weight tensor(s) hold NaN or infinity" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "export").exists()
