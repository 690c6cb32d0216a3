"""Missing modalities: the drop pattern, the blank inputs, manifests with nulls, the hub, the config."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mitp.app.train.config import RunConfig, resolve
from mitp.configuration import ConfigError
from mitp.data.dataset import ManifestDataset
from mitp.data.errors import AbsentModality, BadRecord
from mitp.data.missing import MissingConfig, drop_pattern, missing_case
from mitp.methods import build_model, make_config

IDS = [f"s{i:03d}" for i in range(200)]


def test_the_drop_pattern_is_fixed_by_seed_and_ids_exact_in_counts_and_never_both_unless_asked():
    config = MissingConfig(image=0.3, text=0.2, seed=7)
    mask = drop_pattern(IDS, config)
    assert np.array_equal(mask, drop_pattern(IDS, MissingConfig(image=0.3, text=0.2, seed=7)))
    assert (~mask[:, 0]).sum() == 60 and (~mask[:, 1]).sum() == 40 and mask.any(1).all()
    shuffled = IDS[:]
    random.Random(0).shuffle(shuffled)
    by_id = dict(zip(shuffled, drop_pattern(shuffled, config).tolist()))
    assert all(by_id[i] == row for i, row in zip(IDS, mask.tolist())), "order does not matter"
    other = drop_pattern(IDS, MissingConfig(image=0.3, text=0.2, seed=8))
    assert not np.array_equal(mask, other), "another seed, another pattern"
    both = drop_pattern(IDS, MissingConfig(both=0.1))
    assert (~both.any(1)).sum() == 20 and both.any(1).sum() == 180


def test_a_higher_rate_drops_a_superset_and_samples_already_missing_are_not_candidates():
    low, high = (drop_pattern(IDS, MissingConfig(image=r)) for r in (0.5, 0.9))
    assert set(np.flatnonzero(~low[:, 0])) <= set(np.flatnonzero(~high[:, 0]))
    present = np.ones((len(IDS), 2), bool)
    present[:10, 1] = False  # no text in the manifest
    mask = drop_pattern(IDS, MissingConfig(image=0.5), present)
    assert mask[:10].tolist() == [[True, False]] * 10 and (~mask[:, 0]).sum() == 100
    assert missing_case(mask)[:10].tolist() == [2] * 10


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"image": 1.5}, "train.missing.image"),
        ({"image": 0.6, "text": 0.6}, "train.missing.image"),
        ({"colour": 0.1}, "train.missing.colour"),
    ],
)
def test_bad_missing_settings_are_named(toy_dataset, raw, key):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(
            {"data": str(toy_dataset), "backbone": "tiny-clip", "method": "mitp", "train": {"missing": raw}}
        )
    assert err.value.key == key


def test_a_dropped_modality_reaches_the_model_as_the_blank_input(toy_dataset, tiny_clip):
    plain = ManifestDataset(toy_dataset, "val", backbone=tiny_clip)
    no_image = ManifestDataset(toy_dataset, "val", backbone=tiny_clip, missing=MissingConfig(image=1.0))
    no_text = ManifestDataset(toy_dataset, "val", backbone=tiny_clip, missing=MissingConfig(text=1.0))
    batch = no_image.collate([no_image[i] for i in range(4)])
    assert (batch["pixel_values"] == 1.0).all() and batch["modality_mask"].tolist() == [[False, True]] * 4
    assert torch.equal(batch["input_ids"], plain.collate([plain[i] for i in range(4)])["input_ids"])
    batch = no_text.collate([no_text[i] for i in range(4)])
    fmt = tiny_clip.text_format
    assert batch["input_ids"].tolist() == [[fmt.bos_token_id, fmt.eos_token_id]] * 4  # specials only
    assert batch["modality_mask"].tolist() == [[True, False]] * 4
    assert not (batch["pixel_values"] == 1.0).all()


def _with_nulls(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    lines = (dst / "train.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    rows[0]["image"], rows[1]["text"] = None, None
    (dst / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


def test_null_modalities_in_a_manifest_need_allow_missing_and_never_both(toy_dataset, tiny_clip, tmp_path):
    data = _with_nulls(toy_dataset, tmp_path / "nulls")
    with pytest.raises(AbsentModality) as err:
        ManifestDataset(data, "train", backbone=tiny_clip)
    assert err.value.line == 1 and "allow_missing" in str(err.value) and str(data / "train.jsonl") in str(err.value)
    ds = ManifestDataset(data, "train", backbone=tiny_clip, allow_missing=True)
    assert ds.modality_mask[:3].tolist() == [[False, True], [True, False], [True, True]]
    assert (ds[0]["pixel_values"] == 1.0).all() and len(ds[1]["input_ids"]) == 2
    rows = (data / "train.jsonl").read_text().splitlines()
    both = json.loads(rows[2])
    both["image"] = both["text"] = None
    (data / "train.jsonl").write_text("\n".join([rows[0], rows[1], json.dumps(both), *rows[3:]]) + "\n")
    with pytest.raises(BadRecord, match="both 'image' and 'text' are null") as err:
        ManifestDataset(data, "train", backbone=tiny_clip, allow_missing=True)
    assert err.value.line == 3


def _mitp(backbone, **keys):
    torch.manual_seed(0)
    model = build_model(make_config("mitp", num_classes=4, num_steps=3, prompt_length=4, **keys), backbone)
    with torch.no_grad():  # open the gates and give every case its own prompt: nothing trivially zero
        for gates in (model.text_gates, model.vision_gates):
            gates.fill_(1.0)
        for cases in (model.missing_text, model.missing_vision):
            if cases is not None:
                cases.prompts.normal_(0, 0.5)
    return model.eval()


def test_the_hub_takes_nothing_from_an_absent_image(tiny_clip):
    """With the image missing, the text side cannot depend on the pixels at all; without the
    missing-aware hub (the control) it does, through the exchanged memory."""
    batch = tiny_clip.random_batch(2, 8, torch.Generator().manual_seed(1))
    other = batch["pixel_values"] + torch.randn_like(batch["pixel_values"])
    mask = torch.tensor([[False, True], [True, True]])  # sample 0 has no image
    for aware, invariant in ((True, True), (False, False)):
        model = _mitp(tiny_clip, missing_aware=aware)
        with torch.no_grad():
            a = model.forward_features(
                batch["pixel_values"], batch["input_ids"], batch["attention_mask"], modality_mask=mask
            )["text"]
            b = model.forward_features(other, batch["input_ids"], batch["attention_mask"], modality_mask=mask)["text"]
        assert torch.allclose(a[0], b[0], atol=1e-6) == invariant, f"missing_aware={aware}"
        assert not torch.allclose(a[1], b[1], atol=1e-6), "a complete sample's text reads the image"


def test_the_hub_takes_nothing_from_an_absent_text():
    from mitp.methods.mitp.model import MemoryHub

    hub = MemoryHub(8, 6).eval()
    p_t, p_v = torch.randn(2, 3, 8), torch.randn(2, 3, 6)
    mask = torch.tensor([[True, False], [True, True]])
    m_t, m_v = hub(p_t, p_v, mask)
    m_t2, m_v2 = hub(p_t + torch.randn_like(p_t), p_v, mask)
    assert torch.allclose(m_v[0], m_v2[0]) and not torch.allclose(m_v[1], m_v2[1])
    assert torch.allclose(m_v[0], hub.vision_norm(hub.vision_proj(p_v[0])))


def test_case_prompts_start_at_zero_and_train_only_for_the_cases_in_the_batch(tiny_clip):
    torch.manual_seed(0)
    plain = build_model(make_config("mitp", num_classes=4, num_steps=2, missing_aware=False), tiny_clip)
    torch.manual_seed(0)
    aware = build_model(make_config("mitp", num_classes=4, num_steps=2, missing_aware=True), tiny_clip)
    batch = tiny_clip.random_batch(4, 8, torch.Generator().manual_seed(2))
    torch.testing.assert_close(aware(**batch).logits, plain(**batch).logits, rtol=0, atol=0)
    with torch.no_grad():
        for gates in (aware.text_gates, aware.vision_gates):
            gates.fill_(0.5)
    mask = torch.tensor([[True, True], [False, True], [True, True], [False, True]])
    aware(**batch, modality_mask=mask, labels=torch.tensor([0, 1, 2, 3])).loss.backward()
    used = aware.missing_text.prompts.grad.abs().sum((1, 2))
    assert used[0] > 0 and used[1] > 0 and used[2] == 0 and used[3] == 0


def test_missing_aware_is_on_exactly_when_the_data_can_miss_a_modality(toy_dataset):
    def resolved(**sections):
        raw = {"data": str(toy_dataset), "backbone": "tiny-clip", "method": "mitp", **sections}
        return resolve(RunConfig.from_dict(raw)).model["missing_aware"]

    assert resolved() is False
    assert resolved(train={"missing": {"image": 0.3}}) is True
    assert resolved(eval={"missing": {"text": 0.5}}) is True
    assert resolved(data={"path": str(toy_dataset), "allow_missing": True}) is True
    assert resolved(train={"missing": {"image": 0.3}}, model={"missing_aware": False}) is False


def test_a_deep_prompts_case_prompt_changes_only_its_case(tiny_clip):
    torch.manual_seed(0)
    model = build_model(make_config("deep_prompts", num_classes=4, num_steps=2, missing_aware=True), tiny_clip)
    with torch.no_grad():
        model.text_gates.fill_(1.0)
        model.vision_gates.fill_(1.0)
    batch = tiny_clip.random_batch(2, 8, torch.Generator().manual_seed(3))
    mask = torch.tensor([[True, False], [True, True]])
    before = model(**batch, modality_mask=mask).logits
    with torch.no_grad():
        model.missing_text[0].prompts[2].normal_()  # the text-missing case
    after = model(**batch, modality_mask=mask).logits
    assert not torch.allclose(before[0], after[0]) and torch.allclose(before[1], after[1])


def test_mitp_check_counts_missing_modalities_only_when_allowed(toy_dataset, tmp_path, capsys):
    from mitp.app.cli import main

    data = _with_nulls(toy_dataset, tmp_path / "nulls")
    assert main(["check", str(data), "--no-progress"]) == 1
    assert "[absent_modality]" in capsys.readouterr().out
    assert main(["check", str(data), "--no-progress", "--allow-missing"]) == 0
    out = capsys.readouterr().out
    assert "no image" in out and "no text" in out
