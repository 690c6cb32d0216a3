"""Loading for training: preprocessing per backbone, tensors, batching, determinism, bad samples."""

from __future__ import annotations

import gc
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import get_line, make_manifest, set_line, truncate, write_image
from mitp.backbones import build_backbone
from mitp.configuration import ConfigError
from mitp.data.dataset import (
    ManifestDataset,
    SeededSampler,
    build_datasets,
    left_out_report,
    make_dataloader,
    model_inputs,
    unloadable_samples,
)
from mitp.data.errors import CorruptImage, EmptyText, ManifestError, MissingImage, UnknownLabel
from mitp.data.images import CLIP_MEAN, CLIP_STD, ImageTransform, to_rgb
from mitp.data.preprocess import Preprocessor, image_transform_from_pretrained
from mitp.data.text import HashTokenizer

warnings.filterwarnings("ignore", message=".*torchvision.*")


# ``tiny_clip`` / ``tiny_pair``: session fixtures from tests/conftest.py (tiny-clip / tiny-pair backbones).


@pytest.fixture
def data(tmp_path):
    return make_manifest(tmp_path / "data", per_split={"train": 10, "val": 4, "test": 3})


def hf_pil(name, **kwargs):
    import transformers

    return getattr(transformers, name)(**kwargs)


# --- image preprocessing ------------------------------------------------------------------------------

PROCESSORS = [
    ("CLIPImageProcessorPil", dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})),
    ("CLIPImageProcessorPil", dict(size={"shortest_edge": 40}, crop_size={"height": 24, "width": 36})),
    ("ViTImageProcessorPil", dict(size={"height": 28, "width": 20})),
    # DINOv2's preprocessor_config.json, scaled down: shortest edge 256 -> 36, crop 224 -> 32
    (
        "BitImageProcessorPil",
        dict(
            size={"shortest_edge": 36},
            crop_size={"height": 32, "width": 32},
            resample=3,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        ),
    ),
]


@pytest.mark.parametrize("name, kwargs", PROCESSORS)
def test_image_transform_matches_hf_image_processors(tmp_path, name, kwargs):
    processor = hf_pil(name, **kwargs)
    transform = ImageTransform.from_hf_processor(processor)
    for i, (size, mode) in enumerate(
        [((50, 37), "RGB"), ((23, 61), "L"), ((64, 64), "RGBA"), ((31, 30), "P"), ((12, 9), "RGB")]
    ):
        img = Image.open(write_image(tmp_path / f"{i}.png", size, seed=i, mode=mode))
        ours = transform(img)
        # ViT's processor does not convert to RGB (it fails on L / RGBA input); ours always does.
        given = img if getattr(processor, "do_convert_rgb", None) else to_rgb(img)
        reference = processor(images=given, return_tensors="np")["pixel_values"][0]
        assert ours.dtype == np.float32 and ours.shape == reference.shape, (size, mode)
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5)


def test_image_transform_reads_saved_processor_config(tmp_path):
    hf_pil("ViTImageProcessorPil", size={"height": 30, "width": 26}, image_mean=[0.1, 0.2, 0.3]).save_pretrained(
        tmp_path
    )
    t = image_transform_from_pretrained(str(tmp_path))
    assert t.resize_to == (30, 26) and t.crop is None and t.mean == (0.1, 0.2, 0.3) and t.resample == 2
    with pytest.raises(ValueError, match="could not load the image processor"):
        image_transform_from_pretrained(str(tmp_path / "missing"))


# --- text preprocessing --------------------------------------------------------------------------------------


def test_hash_tokenizer_is_stable_truncates_and_adds_specials():
    tok = HashTokenizer(vocab_size=1000, max_length=6, bos_token_id=998, eos_token_id=999)
    ids = tok("The cat, the CAT!")
    assert ids[0] == 998 and ids[-1] == 999 and len(ids) == 6 and ids[1] == ids[4]  # the cat , the [cat !]
    assert all(5 <= i < 997 for i in ids[1:-1])
    assert tok("The cat, the CAT!") == ids and tok("a b")[1:-1] != tok("c d")[1:-1]
    assert tok("the")[1] == 5 + __import__("zlib").crc32(b"the") % 992  # documented formula
    plain = HashTokenizer(1000, 4, None, None)
    assert len(plain("one two three four five")) == 4 and len(plain("...")) == 3


def test_preprocessor_for_tiny_backbones(tiny_clip, tiny_pair):
    p = Preprocessor.for_backbone(tiny_clip, max_length=8)
    assert p.max_length == 8 and p.pad_token_id == 0 and p.image_transform == ImageTransform.clip_like(32)
    assert "hash tokenizer" in p.description
    assert Preprocessor.for_backbone(tiny_pair).max_length == 32
    with pytest.raises(ValueError, match="exceeds the text tower's limit of 32"):
        Preprocessor.for_backbone(tiny_clip, max_length=33)
    with pytest.raises(ValueError, match="max_length"):
        Preprocessor.for_backbone(tiny_clip, max_length=1)


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("max_length", 0, "[2, 65536]"),
        ("max_length", -1, "[2, 65536]"),
        ("max_length", 10**9, "[2, 65536]"),
        ("max_length", True, "[2, 65536]"),
        ("max_length", 8.0, "[2, 65536]"),
        ("image_size", 0, "[14, 4096] or null"),
        ("image_size", -32, "[14, 4096] or null"),
        ("image_size", 13, "[14, 4096] or null"),
        ("image_size", 10**6, "[14, 4096] or null"),
        ("image_size", "big", "[14, 4096] or null"),
    ],
)
def test_preprocessor_sizes_out_of_range_are_a_config_error(tiny_clip, key, value, allowed):
    """The ranges of the train section and config.json: a zero, negative, fractional or absurd size is named
    with the range when the preprocessor is made, not when the first batch is."""
    with pytest.raises(ConfigError) as err:
        Preprocessor.for_backbone(tiny_clip, **{key: value})
    assert err.value.key == key and f"must be an integer in {allowed}, got {value!r}" in str(err.value)
    if key == "max_length":  # the dataclass itself, made directly
        fine = Preprocessor.for_backbone(tiny_clip)
        with pytest.raises(ConfigError, match=r"max_length: must be an integer in \[2, 65536\]"):
            Preprocessor(fine.tokenize, fine.image_transform, fine.pad_token_id, value)
    else:
        assert Preprocessor.for_backbone(tiny_clip, image_size=14).image_transform.resize_to == (14, 14)
        assert Preprocessor.for_backbone(tiny_clip, image_size=4096).image_transform.resize_to == (4096, 4096)


# --- dataset items and batches -----------------------------------------------------------------------------


def test_items_and_batches_for_tiny_clip(data, tiny_clip):
    ds = ManifestDataset(data, "train", backbone=tiny_clip, max_length=7)
    assert len(ds) == 10 and ds.task == "single_label" and ds.labels == ("cat", "dog", "fish")
    item = ds[1]
    assert item["id"] == "train-001" and item["label"].dtype == torch.long and item["label"].item() == 1
    # pixels: the HF CLIP image processor at the backbone's 32px, as an independent reference
    reference = hf_pil("CLIPImageProcessorPil", size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    img = Image.open(data / get_line(data / "train.jsonl", 2)["image"])
    expected = reference(images=img, return_tensors="pt")["pixel_values"][0]
    assert item["pixel_values"].shape == (3, 32, 32) and item["pixel_values"].dtype == torch.float32
    torch.testing.assert_close(item["pixel_values"], expected, rtol=0, atol=1e-5)
    # and by hand: the first pixel of the center crop, normalised with CLIP's mean/std
    batch = ds.collate([ds[i] for i in range(4)])
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "labels", "modality_mask", "ids"}
    assert batch["modality_mask"].dtype == torch.bool and batch["modality_mask"].all()  # nothing is missing
    assert batch["ids"] == ["train-000", "train-001", "train-002", "train-003"]
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape and ids.shape[1] <= 7
    lengths = mask.sum(1)
    assert torch.equal(mask, (torch.arange(ids.shape[1])[None] < lengths[:, None]).long())  # right padding
    assert (ids[:, 0] == 998).all() and (ids[torch.arange(4), lengths - 1] == 999).all()
    assert (ids[mask == 0] == 0).all()
    assert batch["labels"].tolist() == [0, 1, 2, 0]
    raw = np.asarray(Image.open(data / "images" / "train_1.jpg").convert("RGB").resize((32, 58), 3))
    top = (58 - 32) // 2
    manual = (raw[top, 0] / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(batch["pixel_values"][1, :, 0, 0].numpy(), manual, atol=1e-5)


def test_multi_label_targets_and_tiny_pair_text(tmp_path, tiny_pair):
    root = make_manifest(tmp_path / "m", task="multi_label", labels=("a", "b", "c", "d"))
    ds = ManifestDataset(root, "val", backbone=tiny_pair)
    batch = ds.collate([ds[i] for i in range(len(ds))])
    expected = []
    for line in range(1, 5):
        row = torch.zeros(4)
        row[["abcd".index(x) for x in get_line(root / "val.jsonl", line)["label"]]] = 1
        expected.append(row)
    assert batch["labels"].dtype == torch.float32 and torch.equal(batch["labels"], torch.stack(expected))
    ids = batch["input_ids"]
    assert ((ids >= 5) & (ids < 997) | (batch["attention_mask"] == 0)).all()  # no bos/eos for tiny-pair


def test_build_datasets_share_one_preprocessor(data, tiny_clip):
    sets = build_datasets(data, tiny_clip, max_length=10)
    assert [len(sets[s]) for s in ("train", "val", "test")] == [10, 4, 3]
    assert sets["train"].preprocessor is sets["test"].preprocessor


def test_invalid_lines_raise_at_construction_or_are_left_out_in_skip_mode(data, tiny_clip):
    set_line(data / "train.jsonl", 3, {**get_line(data / "train.jsonl", 3), "text": ""})
    set_line(data / "train.jsonl", 8, {**get_line(data / "train.jsonl", 8), "label": "cow"})
    with pytest.raises(EmptyText, match=r"train\.jsonl:3: empty text"):
        ManifestDataset(data, "train", backbone=tiny_clip)
    ds = ManifestDataset(data, "train", backbone=tiny_clip, on_bad_sample="skip")
    assert len(ds) == 8 and [type(e) for e in ds.invalid_lines] == [EmptyText, UnknownLabel]
    with pytest.raises(ValueError, match="on_bad_sample"):
        ManifestDataset(data, "train", backbone=tiny_clip, on_bad_sample="ignore")


# --- bad samples during loading -----------------------------------------------------------------------------


def test_bad_image_raises_naming_file_and_line(data, tiny_clip):
    ds = ManifestDataset(data, "train", backbone=tiny_clip)
    (data / "images" / "train_2.jpg").unlink()  # deleted since `check`
    truncate(data / "images" / "train_5.jpg", keep=0.5)  # corrupt
    with pytest.raises(MissingImage) as info:
        ds[2]
    assert str(info.value).startswith(f"{data / 'train.jsonl'}:3: image ") and "train_2.jpg" in str(info.value)
    assert info.value.line == 3 and info.value.path == str(data / "train.jsonl")
    with pytest.raises(CorruptImage, match=r"train\.jsonl:6: image .*train_5\.jpg cannot be decoded"):
        ds[5]
    loader = make_dataloader(ds, batch_size=4, shuffle=False, seed=0)
    with pytest.raises(MissingImage, match=r"train\.jsonl:3: "):
        list(loader)


def test_bad_image_in_a_worker_keeps_its_error_class(data, tiny_clip, monkeypatch):
    # An iterator that dies mid-epoch makes torch wait MP_STATUS_CHECK_INTERVAL (5 s) per worker
    # before killing workers that still hold unsent batches; shorten it to keep the test fast.
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.2)
    ds = ManifestDataset(data, "train", backbone=tiny_clip)
    truncate(data / "images" / "train_7.jpg", keep=0.4)
    with pytest.raises(CorruptImage) as info:
        list(make_dataloader(ds, batch_size=3, shuffle=True, seed=0, num_workers=2))
    message = str(info.value)
    del info  # the traceback holds the loader iterator: shut its workers down now
    gc.collect()
    assert f"{data / 'train.jsonl'}:8: image " in message and "cannot be decoded" in message


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_mode_leaves_out_counts_and_reports(data, tiny_clip, num_workers):
    ds = ManifestDataset(data, "train", backbone=tiny_clip, on_bad_sample="skip")
    (data / "images" / "train_2.jpg").unlink()
    truncate(data / "images" / "train_9.jpg", keep=0.5)
    bad = ds.leave_out_unloadable(num_workers=num_workers)
    assert [(b.id, b.kind) for b in bad] == [("train-002", "missing_image"), ("train-009", "corrupt_image")]
    assert [b.message.split(": ")[0].rsplit("/", 1)[-1] for b in bad] == ["train.jsonl:3", "train.jsonl:10"]
    assert ds.left_out == bad and len(ds) == 8
    seen = []
    loader = make_dataloader(ds, batch_size=4, shuffle=True, seed=1, num_workers=num_workers)
    for batch in loader:  # whole batches of the good samples alone
        seen += batch["ids"]
        assert batch["pixel_values"].shape[0] == len(batch["ids"]) == batch["labels"].shape[0] == 4
    assert sorted(seen) == sorted(f"train-{i:03d}" for i in range(10) if i not in (2, 9))
    report = left_out_report({"train": ds})
    assert report.startswith(
        "left out 2 sample(s) whose image cannot be loaded (on_bad_sample: skip): "
        "train: 1 corrupt_image, 1 missing_image"
    )
    assert "train_2.jpg" in report and "train_9.jpg" in report
    assert left_out_report({"train": ManifestDataset(data, "val", backbone=tiny_clip)}) == ""


def test_a_split_whose_images_are_all_bad_is_left_empty(data, tiny_clip):
    ds = ManifestDataset(data, "val", backbone=tiny_clip, on_bad_sample="skip")
    for line in range(1, 5):
        (data / get_line(data / "val.jsonl", line)["image"]).unlink()
    assert [b.kind for b in unloadable_samples(ds, [1, 3])] == ["missing_image"] * 2  # a share of the split
    assert len(ds.leave_out_unloadable()) == 4 and len(ds) == 0 and ds.modality_mask.shape == (0, 2)


# --- deterministic order ----------------------------------------------------------------------------------


def epoch_ids(loader, epochs=2):
    return [[i for batch in loader for i in batch["ids"]] for _ in range(epochs)]


def test_loader_order_is_deterministic_under_a_seed(data, tiny_clip):
    ds = ManifestDataset(data, "train", backbone=tiny_clip)
    a = epoch_ids(make_dataloader(ds, batch_size=3, shuffle=True, seed=7))
    b = epoch_ids(make_dataloader(ds, batch_size=3, shuffle=True, seed=7))
    c = epoch_ids(make_dataloader(ds, batch_size=3, shuffle=True, seed=8))
    assert a == b and a != c and a[0] != a[1] and sorted(a[0]) == sorted(a[1])
    torch.manual_seed(123)  # global RNG state does not matter
    assert epoch_ids(make_dataloader(ds, batch_size=3, shuffle=True, seed=7)) == a
    plain = epoch_ids(make_dataloader(ds, batch_size=3, shuffle=False, seed=7), epochs=1)[0]
    assert plain == [f"train-{i:03d}" for i in range(10)]
    loader = make_dataloader(ds, batch_size=3, shuffle=True, seed=7, drop_last=True)
    loader.sampler.set_epoch(1)  # resume at epoch 1
    assert [i for batch in loader for i in batch["ids"]] == a[1][:9]


def test_workers_give_the_same_batches_as_the_main_process(data, tiny_clip):
    ds = ManifestDataset(data, "train", backbone=tiny_clip)
    main_batches = list(make_dataloader(ds, batch_size=4, shuffle=True, seed=3, num_workers=0))
    worker_batches = list(make_dataloader(ds, batch_size=4, shuffle=True, seed=3, num_workers=2))
    assert len(main_batches) == len(worker_batches) == 3
    for x, y in zip(main_batches, worker_batches):
        assert x["ids"] == y["ids"]
        for key in ("pixel_values", "input_ids", "attention_mask", "labels"):
            assert torch.equal(x[key], y[key])


def test_seeded_sampler():
    s = SeededSampler(6, shuffle=True, seed=0)
    first, second = list(s), list(s)
    assert sorted(first) == list(range(6)) and first != second and s.order(0) == first
    assert list(SeededSampler(6, shuffle=False)) == list(range(6))


# --- through a model --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, task", [("tiny_clip", "single_label"), ("tiny_pair", "multi_label")])
def test_prepared_dataset_trains_one_step_with_mitp(tmp_path, request, spec, task):
    from mitp.methods import build_model, make_config

    root = make_manifest(tmp_path / "d", task=task, labels=("a", "b", "c", "d"))
    backbone = request.getfixturevalue(spec)  # tiny-clip / tiny-pair, built once per session
    ds = ManifestDataset(root, "train", backbone=backbone, max_length=12)
    model = build_model(make_config("mitp", num_classes=ds.num_classes, task=task), backbone)
    model.train()
    batch = next(iter(make_dataloader(ds, batch_size=4, shuffle=True, seed=0)))
    out = model(**model_inputs(batch))
    assert out.logits.shape == (4, 4) and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in backbone.parameters())


# --- real checkpoints (built locally: no hub access) --------------------------------------------------------


def _byte_level_vocab() -> dict:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    return vocab


@pytest.fixture(scope="module")
def local_checkpoints(tmp_path_factory):
    """A tiny CLIP checkpoint dir and a BERT + ViT pair, each with its tokenizer / image processor."""
    import transformers
    from transformers import BertConfig, BertModel, CLIPConfig, CLIPModel, ViTConfig, ViTModel

    from mitp.backbones.specs import TINY_BERT, TINY_CLIP, TINY_VIT

    root = tmp_path_factory.mktemp("checkpoints")
    clip = root / "clip"
    CLIPModel(
        CLIPConfig(
            text_config=TINY_CLIP["text_config"],
            vision_config=TINY_CLIP["vision_config"],
            projection_dim=TINY_CLIP["projection_dim"],
        )
    ).save_pretrained(clip)
    vocab = {**_byte_level_vocab(), "<|startoftext|>": 998, "<|endoftext|>": 999}
    transformers.CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(clip)
    hf_pil("CLIPImageProcessorPil", size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        clip
    )
    text, vision = root / "bert", root / "vit"
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(text)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sample", "word", ":", "."] + [str(i) for i in range(40)]
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(text)
    ViTModel(ViTConfig(**TINY_VIT)).save_pretrained(vision)
    hf_pil("ViTImageProcessorPil", size={"height": 32, "width": 32}).save_pretrained(vision)
    return {"clip": str(clip), "pair": f"pair:{text}+{vision}"}


def test_clip_checkpoint_uses_its_tokenizer_and_processor(data, local_checkpoints):
    from mitp.methods import build_model, make_config

    backbone = build_backbone(local_checkpoints["clip"])
    ds = ManifestDataset(data, "train", backbone=backbone, max_length=9)
    assert "tokenizer of" in ds.preprocessor.description and ds.preprocessor.pad_token_id == 999
    batch = next(iter(make_dataloader(ds, batch_size=5, shuffle=False)))
    ids, lengths = batch["input_ids"], batch["attention_mask"].sum(1)
    assert (ids[:, 0] == 998).all() and (ids[torch.arange(5), lengths - 1] == 999).all() and ids.shape[1] <= 9
    assert lengths.max() == 9  # long texts truncated, end token kept
    assert batch["pixel_values"].shape == (5, 3, 32, 32)
    model = build_model(make_config("mitp", num_classes=3), backbone)
    out = model(**model_inputs(batch))
    assert out.logits.shape == (5, 3) and torch.isfinite(out.loss)
    # the Hugging Face tokenizer also works in (forked) DataLoader workers, with the same result
    in_workers = next(iter(make_dataloader(ds, batch_size=5, shuffle=False, num_workers=2)))
    assert torch.equal(in_workers["input_ids"], batch["input_ids"])


def test_bert_vit_pair_uses_its_tokenizer_and_processor(data, local_checkpoints):
    backbone = build_backbone(local_checkpoints["pair"])
    ds = ManifestDataset(data, "val", backbone=backbone)
    batch = ds.collate([ds[i] for i in range(len(ds))])
    ids, lengths = batch["input_ids"], batch["attention_mask"].sum(1)
    assert (ids[:, 0] == 2).all() and (ids[torch.arange(len(ds)), lengths - 1] == 3).all()  # [CLS] ... [SEP]
    assert (ids[batch["attention_mask"] == 0] == 0).all()
    line = get_line(data / "val.jsonl", 1)
    reference = hf_pil("ViTImageProcessorPil", size={"height": 32, "width": 32})
    expected = reference(images=Image.open(data / line["image"]), return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(batch["pixel_values"][0], expected, rtol=0, atol=1e-5)


def test_manifest_error_from_one_string_keeps_class():
    # What torch does when re-raising a worker's exception: type(err)(formatted_text)
    err = MissingImage("Caught MissingImage in DataLoader worker process 0.\nOriginal: d/train.jsonl:3: gone")
    assert isinstance(err, ManifestError) and "d/train.jsonl:3" in str(err) and err.location is None
    assert json.dumps(str(err))


@pytest.mark.parametrize("depth", ["16-bit", "32-bit"])
def test_high_bit_depth_images_are_scaled_to_8_bits_not_clipped(tmp_path, depth):
    """A 16-bit PNG gradient must read as the same gradient, not as all white."""
    from mitp.data.images import open_rgb

    gradient = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    path = tmp_path / "gradient.png"
    if depth == "16-bit":
        Image.fromarray(gradient).save(path)  # mode I;16
    else:
        Image.fromarray(gradient.astype(np.int32)).save(tmp_path / "gradient.tif")  # mode I
        path = tmp_path / "gradient.tif"
    rgb = np.asarray(open_rgb(str(path), "m.jsonl", 1))
    assert rgb.shape == (8, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    expected = np.rint(gradient / 257.0)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255 and len(np.unique(rgb)) > 50
