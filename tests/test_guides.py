"""The three guides in docs/guides/ stay true: their code, loaded where the guide says it goes, registers,
builds and works through the normal commands."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from mitp.app.cli import main

GUIDES = Path(__file__).parents[1] / "docs" / "guides"
FILE_BLOCK = re.compile(r"```python\n# file: (\S+)\n(.*?)```", re.S)


def guide_files(name: str) -> dict[str, str]:
    """``{"src/mitp/...py": source}`` for every code block of a guide that names its file."""
    return {path: code for path, code in FILE_BLOCK.findall((GUIDES / name).read_text())}


def load_as(module_name: str, path: Path, package: bool = False):
    """Import ``path`` as ``module_name`` (relative imports resolve inside mitp, where the guide puts it)."""
    locations = [str(path.parent)] if package else None
    spec = importlib.util.spec_from_file_location(module_name, path, submodule_search_locations=locations)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def write(files: dict[str, str], root: Path) -> dict[str, Path]:
    out = {}
    for rel, code in files.items():
        target = root / Path(rel).name if "methods/" not in rel else root / Path(rel).parent.name / Path(rel).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
        out[rel] = target
    return out


@pytest.fixture
def method_from_guide(tmp_path):
    from mitp.methods import registry

    files = write(guide_files("adding-a-method.md"), tmp_path)
    assert sorted(Path(p).name for p in files) == ["__init__.py", "config.py", "model.py"]
    load_as("mitp.methods.vision_prompts", files["src/mitp/methods/vision_prompts/__init__.py"], package=True)
    yield "vision_prompts"
    registry._REGISTRY.pop("vision_prompts", None)
    for name in [m for m in sys.modules if m.startswith("mitp.methods.vision_prompts")]:
        del sys.modules[name]


def test_the_method_guide_builds_trains_and_starts_at_the_frozen_towers(method_from_guide, tiny_clip, capsys):
    from mitp.methods import available_methods, build_model, make_config
    from toy_training import assert_loss_falls, toy_losses

    assert method_from_guide in available_methods()
    model = build_model(make_config(method_from_guide, num_classes=4), tiny_clip)
    assert model.frozen_prefix() == (tiny_clip.text.num_layers, tiny_clip.vision.num_layers - 2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable >= {"vision_prompts.0", "vision_prompts.1", "vision_gates"}
    assert not any(n.startswith("backbone.") for n in trainable)
    batch = tiny_clip.random_batch(3, 8, torch.Generator().manual_seed(0))
    late = build_model(make_config("late_fusion", num_classes=4), tiny_clip)
    with torch.no_grad():
        ours, frozen = (
            m.forward_features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
            for m in (model, late)
        )
    assert torch.allclose(ours["image"], frozen["image"], atol=1e-6) and torch.equal(ours["text"], frozen["text"])
    optimizer = torch.optim.AdamW(model.param_groups(1e-2))
    assert_loss_falls(toy_losses(model, tiny_clip, optimizer, steps=30))
    assert main(["config", "--method", method_from_guide]) == 0
    assert "the last n layers of the image tower get prompts" in capsys.readouterr().out


@pytest.fixture
def backbone_from_guide(tmp_path):
    from mitp.backbones import registry

    files = write(guide_files("adding-a-backbone.md"), tmp_path)
    load_as("mitp.backbones.families.tiny_wide", files["src/mitp/backbones/families/tiny_wide.py"])
    yield "tiny-clip-wide:64"
    registry._FAMILIES.pop("tiny-clip-wide:", None)
    sys.modules.pop("mitp.backbones.families.tiny_wide", None)


def test_the_backbone_guide_registers_a_family_that_methods_run_on(backbone_from_guide, capsys):
    from mitp.backbones import BackboneError, build_backbone, is_builtin
    from mitp.methods import build_model, make_config

    backbone = build_backbone(backbone_from_guide)
    assert is_builtin(backbone_from_guide) and backbone.text.width == backbone.vision.width == 64
    with pytest.raises(BackboneError, match="multiple of 4"):
        build_backbone("tiny-clip-wide:30")
    model = build_model(make_config("mitp", num_classes=3, num_steps=2), backbone)
    batch = backbone.random_batch(2, 8)
    assert model(**batch, labels=torch.tensor([0, 2])).loss.isfinite()
    assert main(["backbones", "--json"]) == 0
    assert backbone_from_guide in {row["spec"] for row in json.loads(capsys.readouterr().out)["specs"]}
    assert main(["params", "--backbone", backbone_from_guide, "--method", "late_fusion", "--num-classes", "3"]) == 0


@pytest.fixture
def converter_from_guide(tmp_path):
    from mitp.data.prepare import registry

    files = write(guide_files("adding-a-converter.md"), tmp_path / "code")
    load_as("mitp.data.prepare.folder", files["src/mitp/data/prepare/folder.py"])
    yield "folder"
    registry._CONVERTERS.pop("folder", None)
    sys.modules.pop("mitp.data.prepare.folder", None)


def test_the_converter_guide_adds_a_prepare_command(converter_from_guide, tmp_path, capsys):
    from mitp.data.manifest import read_labels, read_split

    raw = tmp_path / "raw"
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        for label in ("cat", "dog"):
            for i in range(count):
                folder = raw / split / label
                folder.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"{i}.png")
                if not (split == "train" and label == "dog" and i == 0):  # one image without its caption
                    (folder / f"{i}.txt").write_text(f"a {label} photo number {i}")
    out = tmp_path / "out"
    assert main(["prepare", converter_from_guide, "--raw", str(raw), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1 x no caption file" in printed and "allow_external_paths" in printed
    assert read_labels(out).labels == ("cat", "dog")
    train = read_split(out, "train", allow_external_paths=True)[0]
    assert len(train) == 7 and train[0].text.startswith("a ")
    assert main(["check", str(out), "--no-progress", "--allow-external-paths"]) == 0
