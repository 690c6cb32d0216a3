"""Frozen-prefix cache: same logits to fp16 tolerance, invalidation, no re-decoding, safe to delete."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from mitp.app.prefix_cache import cache_key
from mitp.app.train.config import load_run_config
from mitp.app.train.loop import Trainer
from mitp.backbones import TowerState
from mitp.data.dataset import ManifestDataset, build_datasets, make_dataloader, model_inputs
from mitp.methods import build_model, make_config
from prefix_stores import open_store
from processes import train_together

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"


def first_batch(dataset, size=8):
    return next(iter(make_dataloader(dataset, size, shuffle=False)))


def test_cache_key_changes_with_manifest_backbone_and_layers(toy_dataset, tiny_clip, tiny_pair, tmp_path):
    dataset = build_datasets(toy_dataset, tiny_clip, splits=("train",))["train"]
    manifest = Path(toy_dataset) / "train.jsonl"
    key = cache_key(manifest, tiny_clip, (3, 4), "pre", 32)
    assert key == cache_key(manifest, tiny_clip, (3, 4), "pre", 32)
    assert key != cache_key(manifest, tiny_clip, (2, 4), "pre", 32)
    assert key != cache_key(manifest, tiny_pair, (3, 4), "pre", 32)
    assert key != cache_key(manifest, tiny_clip, (3, 4), "other preprocessing", 32)
    changed = tmp_path / "train.jsonl"
    changed.write_text(manifest.read_text().replace("apple", "amber", 1))
    assert key != cache_key(changed, tiny_clip, (3, 4), "pre", 32)
    # other weights under the same spec: a different backbone
    from mitp.backbones import build_backbone

    other = build_backbone("tiny-clip")
    with torch.no_grad():
        other.text.layers[0].mlp.fc1.weight.mul_(1.5)
    assert key != cache_key(manifest, other, (3, 4), "pre", 32)
    assert (
        open_store(tmp_path / "c", dataset, tiny_clip, (3, 4)).directory
        != open_store(tmp_path / "c", dataset, tiny_clip, (2, 4)).directory
    )


def run_trainer(toy_dataset, tmp_path, name, cache_dir=None, epochs=3):
    overrides = [f"data={toy_dataset}", f"train.epochs={epochs}"]
    if cache_dir is not None:
        overrides += ["train.cache_prefix=true", f"train.cache_dir={cache_dir}"]
    trainer = Trainer(load_run_config(CONFIG, overrides), tmp_path / name)
    (tmp_path / name).mkdir()
    return trainer.fit()


def test_training_with_the_cache_decodes_each_image_once_and_matches(toy_dataset, tmp_path, monkeypatch):
    plain = run_trainer(toy_dataset, tmp_path, "plain")
    loads = []
    original = ManifestDataset.load
    monkeypatch.setattr(ManifestDataset, "load", lambda self, i: loads.append((self.split, i)) or original(self, i))
    cached = run_trainer(toy_dataset, tmp_path, "cached", cache_dir=tmp_path / "cache")
    # 3 epochs, validation every epoch and a final val+test pass: every sample decoded exactly once
    assert sorted(loads) == sorted(set(loads)) and len(loads) == 32 + 16 + 16
    for split in ("val", "test"):
        assert cached[split]["accuracy"] == pytest.approx(plain[split]["accuracy"], abs=1 / 16 + 1e-9)
    assert cached["test_loss"] == pytest.approx(plain["test_loss"], abs=1e-2)

    # safe to delete: a fresh run rebuilds the store from scratch and gets the same results
    shutil.rmtree(tmp_path / "cache")
    again = run_trainer(toy_dataset, tmp_path, "again", cache_dir=tmp_path / "cache")
    assert again["test"] == cached["test"] and again["test_loss"] == pytest.approx(cached["test_loss"], abs=1e-6)


def test_partially_filled_store_recomputes_missing_rows(toy_dataset, tiny_clip, tmp_path):
    model = build_model(make_config("mitp", num_classes=4, num_steps=2), tiny_clip).eval()
    dataset = build_datasets(toy_dataset, tiny_clip, splits=("val",))["val"]
    store = open_store(tmp_path, dataset, tiny_clip, model.frozen_prefix())
    batch = first_batch(dataset, 4)
    store.put(batch["ids"], *model.encode_prefix(**{k: v for k, v in model_inputs(batch).items() if k != "labels"}))
    store.flush()
    reopened = open_store(tmp_path, dataset, tiny_clip, model.frozen_prefix())
    assert reopened.has(batch["ids"]) and not reopened.complete
    assert json.loads((reopened.directory / "meta.json").read_text())["samples"] == 16


def test_a_row_another_run_filled_is_never_rewritten(toy_dataset, tiny_clip, tmp_path):
    """Two runs filling one store at once (two opens of it, as two processes have): the run that computed
    a batch before seeing another run's rows stores only its new rows, so a reader of a filled row never
    sees it zeroed or rewritten."""
    model = build_model(make_config("mitp", num_classes=4, num_steps=2), tiny_clip).eval()
    dataset = build_datasets(toy_dataset, tiny_clip, splits=("val",))["val"]
    first, second = (open_store(tmp_path, dataset, tiny_clip, model.frozen_prefix()) for _ in range(2))
    batch = first_batch(dataset, 6)
    inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
    with torch.no_grad():
        text, vision = model.encode_prefix(**inputs)
    first.put(batch["ids"][:4], *(TowerState(s.hidden[:4], s.valid[:4], s.pool_index[:4]) for s in (text, vision)))
    stored = first.get(batch["ids"][:4])

    def shifted(state):  # what a run with other numbers would write: every value moved
        return TowerState(state.hidden + 1, state.valid, state.pool_index)

    second.put(batch["ids"], shifted(text), shifted(vision))
    again = first.get(batch["ids"][:4])
    for old, new in zip(stored, again):
        assert torch.equal(old.hidden, new.hidden) and torch.equal(old.valid, new.valid)
    # the two rows that were new are the second run's
    fresh = first.get(batch["ids"][4:])
    assert torch.allclose(fresh[1].hidden, (vision.hidden[4:] + 1).half().float())
    assert first.complete is False and first.has(batch["ids"])


@pytest.mark.slow
def test_two_processes_share_the_cache_and_match_one_process(toy_dataset, tmp_path):
    """With two processes each fills the rows of its batches; the shared store then serves both."""
    from mitp.app.cli import main

    args = [
        "train",
        "--config",
        str(CONFIG),
        "--set",
        f"data={toy_dataset}",
        "--set",
        "train.epochs=3",
        "--set",
        "train.cache_prefix=true",
        "--set",
        "methods.mitp.num_steps=2",
    ]
    assert main([*args, "--set", f"train.cache_dir={tmp_path / 'one-cache'}", "--out", str(tmp_path / "one")]) == 0
    train_together(
        [*args, "--set", f"train.cache_dir={tmp_path / 'two-cache'}", "--out", str(tmp_path / "two")], tmp_path / "logs"
    )
    one, two = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("one", "two"))
    assert two["num_processes"] == 2
    assert two["val"]["accuracy"] == pytest.approx(one["val"]["accuracy"], abs=1e-4)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-3)
    assert two["test_samples"] == one["test_samples"] == 16
    import numpy as np

    for store in (tmp_path / "two-cache").iterdir():  # every row filled, by one process or the other
        assert np.load(store / "filled.npy").all()


def test_the_disk_guard_refuses_a_cache_that_would_not_fit(toy_dataset, tmp_path, monkeypatch):
    import shutil as shutil_module
    from collections import namedtuple

    from mitp.configuration import ConfigError

    config = load_run_config(
        CONFIG,
        [f"data={toy_dataset}", "train.cache_prefix=true", f"train.cache_dir={tmp_path / 'c'}", "train.epochs=1"],
    )
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: Usage(10**9, 10**9, 10 * 2**20))  # 10 MB free
    with pytest.raises(ConfigError, match=r"would need .* GB under .* only 0.01 GB are free.*image_size") as err:
        Trainer(config, tmp_path / "run")
    assert err.value.key == "train.cache_prefix"
    assert not (tmp_path / "c").exists(), "nothing was written"
    monkeypatch.undo()

    trainer = Trainer(config, tmp_path / "run")  # enough room: the stores are made; their estimate is exact
    from mitp.app.prefix_cache import plan_store

    for split, store in trainer.cache.stores.items():
        plan = plan_store(
            tmp_path / "c", trainer.parts.datasets[split], trainer.parts.backbone, trainer.parts.model.frozen_prefix()
        )
        on_disk = sum(f.stat().st_size for f in store.directory.glob("*.npy"))
        assert plan.size_bytes <= on_disk <= plan.size_bytes + 6 * 128  # .npy headers
