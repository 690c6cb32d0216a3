"""The shipped recipes parse and resolve against the method registry."""

from pathlib import Path

import pytest

from mitp.app.train.config import load_run_config, resolve_method_config
from mitp.methods import get_method

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
TASKS = {
    "food101": (101, "single_label"),
    "mmimdb": (23, "multi_label"),
    "snli-ve": (3, "single_label"),
    "tiny": (4, "single_label"),
    "fashion-ve": (3, "single_label"),
    "demo": (3, "single_label"),
    "fashion-cues": (10, "single_label"),
    "mvsa": (3, "single_label"),
}


def test_every_recipe_is_tested():
    assert {p.stem for p in CONFIGS} == set(TASKS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_resolves(path):
    config = load_run_config(path)
    get_method(config.method)
    num_classes, task = TASKS[path.stem]
    method_config = resolve_method_config(config, num_classes, task)
    assert method_config.num_classes == num_classes
    if path.stem not in (
        "tiny",
        "fashion-ve",
        "demo",
        "fashion-cues",
        "mvsa",
    ):  # the offline backbone  # the paper's recipes use the paper's backbone
        assert config.backbone == "openai/clip-vit-large-patch14"
