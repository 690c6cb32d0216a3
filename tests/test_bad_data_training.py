"""Training on imperfect data: empty splits and leaks are refused before training, and what
`on_bad_sample: skip` leaves out (before training) is counted by reason and split, printed and recorded."""

import json
from pathlib import Path

import numpy as np
import pytest

from mitp.app.cli import main
from mitp.data.dataset import ManifestDataset
from mitp.synthetic import write_toy_dataset
from processes import train_together

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"


@pytest.fixture
def toy(tmp_path):
    return write_toy_dataset(tmp_path / "toy", sizes=(24, 12, 12))


def train(data, out, *extra):
    return main(
        [
            "train",
            "--config",
            str(CONFIG),
            "--set",
            f"data={data}",
            "--set",
            "train.epochs=2",
            "--set",
            "train.batch_size=8",
            "--out",
            str(out),
            *extra,
        ]
    )


def lines(path):
    return path.read_text().splitlines()


def test_an_empty_split_is_refused_before_training(toy, tmp_path, capsys):
    (toy / "test.jsonl").write_text("")
    assert train(toy, tmp_path / "run") == 2
    assert f"{toy / 'test.jsonl'}: no samples" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_a_split_emptied_by_skipping_is_refused_before_training(toy, tmp_path, capsys):
    (toy / "val.jsonl").write_text("not json\n" * 3)
    assert train(toy, tmp_path / "run", "--set", "train.on_bad_sample=skip") == 2
    assert "no samples after leaving out 3 invalid line(s)" in capsys.readouterr().err


def test_a_split_whose_images_are_all_bad_is_a_named_error_before_training(toy, tmp_path, capsys):
    for line in lines(toy / "val.jsonl"):
        (toy / json.loads(line)["image"]).unlink()
    assert train(toy, tmp_path / "run", "--set", "train.on_bad_sample=skip") == 2
    err = capsys.readouterr().err
    assert f"{toy / 'val.jsonl'}: no samples after leaving out 12 whose image cannot be loaded" in err
    assert not (tmp_path / "run" / "checkpoint").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_an_id_in_two_splits_is_refused(toy, tmp_path, capsys):
    first_train = json.loads(lines(toy / "train.jsonl")[0])
    val = lines(toy / "val.jsonl")
    val[2] = json.dumps({**json.loads(val[2]), "id": first_train["id"]})
    (toy / "val.jsonl").write_text("\n".join(val) + "\n")
    assert train(toy, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert (
        f"{toy / 'val.jsonl'}:3: id {first_train['id']!r} already used at {toy / 'train.jsonl'}:1: "
        "a sample in two splits leaks" in err
    )


@pytest.mark.parametrize("cache", [False, True])
def test_skipped_samples_are_counted_by_split_and_reason(toy, tmp_path, capsys, monkeypatch, cache):
    loads = []
    original = ManifestDataset.load
    monkeypatch.setattr(ManifestDataset, "load", lambda self, i: loads.append((self.split, i)) or original(self, i))
    train_lines = lines(toy / "train.jsonl")
    train_lines[1] = json.dumps({**json.loads(train_lines[1]), "text": "  "})  # empty_text
    (toy / json.loads(train_lines[4])["image"]).unlink()  # missing_image
    (toy / "train.jsonl").write_text("\n".join(train_lines) + "\n")
    (toy / json.loads(lines(toy / "val.jsonl")[0])["image"]).write_bytes(b"broken")  # corrupt_image
    run = tmp_path / "run"
    assert (
        train(
            toy,
            run,
            "--set",
            "train.on_bad_sample=skip",
            "--set",
            f"train.cache_prefix={cache}",
            "--set",
            f"train.cache_dir={tmp_path / 'cache'}",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "left out invalid manifest lines (on_bad_sample: skip): train: 1 empty_text" in out
    assert (
        "left out 2 sample(s) whose image cannot be loaded (on_bad_sample: skip): "
        "train: 1 missing_image; val: 1 corrupt_image"
    ) in out
    skipped = json.loads((run / "results.json").read_text())["skipped"]
    assert skipped == {
        "manifest_lines": {"train": {"empty_text": 1}},
        "images": {"train": {"missing_image": 1}, "val": {"corrupt_image": 1}},
    }
    if cache:  # the stores hold the good samples alone: they complete and later epochs read them alone
        stores = [d for d in (tmp_path / "cache").iterdir() if (d / "filled.npy").exists()]
        filled = [np.load(d / "filled.npy") for d in stores]
        assert sorted(len(f) for f in filled) == [11, 12, 22] and all(f.all() for f in filled)  # val, test, train
        assert sorted(loads) == sorted(set(loads)) and len(loads) == 22 + 11 + 12  # each sample loaded once
    capsys.readouterr()  # evaluate leaves out what training left out, and scores what training scored
    assert main(["evaluate", str(run), "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((run / "results.json").read_text())["val"]


def test_an_image_outside_the_dataset_needs_the_run_to_allow_it(toy, tmp_path, capsys):
    import shutil

    import yaml

    val = lines(toy / "val.jsonl")
    first = json.loads(val[0])
    outside = tmp_path / "elsewhere.png"
    shutil.copy(toy / first["image"], outside)
    val[0] = json.dumps({**first, "image": str(outside)})
    (toy / "val.jsonl").write_text("\n".join(val) + "\n")
    assert train(toy, tmp_path / "refused") == 2
    err = capsys.readouterr().err
    assert f"{toy / 'val.jsonl'}:1: image" in err and f"resolves to {outside}" in err
    run = tmp_path / "allowed"
    assert train(toy, run, "--set", "data.allow_external_paths=true") == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"] == {"path": str(toy), "allow_external_paths": True}
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "val", "--json"]) == 0


@pytest.mark.slow
def test_two_processes_with_skipped_samples_neither_hang_nor_lose_count(toy, tmp_path):
    """One sample per process and step: the bad samples are left out before training by both processes
    alike (each checks half of every split), so both train and evaluate on the same whole batches."""
    (toy / json.loads(lines(toy / "train.jsonl")[3])["image"]).write_bytes(b"broken")
    (toy / json.loads(lines(toy / "val.jsonl")[0])["image"]).write_bytes(b"broken")
    run = tmp_path / "two"
    train_together(
        [
            "train",
            "--config",
            str(CONFIG),
            "--set",
            f"data={toy}",
            "--set",
            "train.epochs=1",
            "--set",
            "train.batch_size=2",
            "--set",
            "train.on_bad_sample=skip",
            "--out",
            str(run),
        ],
        tmp_path / "logs",
    )
    results = json.loads((run / "results.json").read_text())
    assert results["test_samples"] == 12 and results["num_processes"] == 2
    assert results["skipped"]["images"] == {"train": {"corrupt_image": 1}, "val": {"corrupt_image": 1}}


def test_check_and_train_agree_on_an_empty_split(toy, tmp_path, capsys):
    (toy / "test.jsonl").write_text("")
    assert main(["check", str(toy)]) == 1
    assert f"{toy / 'test.jsonl'}: [empty_split] no samples" in capsys.readouterr().out
    assert train(toy, tmp_path / "run") == 2


def test_a_lone_surrogate_text_is_a_bad_sample_for_check_train_and_predict(toy, tmp_path, capsys):
    train_lines = lines(toy / "train.jsonl")
    train_lines[2] = json.dumps({**json.loads(train_lines[2]), "text": "broken \ud800 text"})
    (toy / "train.jsonl").write_text("\n".join(train_lines) + "\n")
    assert main(["check", str(toy)]) == 1
    assert f"{toy / 'train.jsonl'}:3: [bad_record] 'text' is not valid Unicode" in capsys.readouterr().out
    assert train(toy, tmp_path / "strict") == 2
    assert f"{toy / 'train.jsonl'}:3" in capsys.readouterr().err
    run = tmp_path / "skip"
    assert train(toy, run, "--set", "train.on_bad_sample=skip") == 0
    skipped = json.loads((run / "results.json").read_text())["skipped"]
    assert skipped["manifest_lines"] == {"train": {"bad_record": 1}}
    capsys.readouterr()
    assert main(["predict", str(run), "--manifest", str(toy / "train.jsonl"), "--out", str(tmp_path / "p")]) == 2
    assert f"{toy / 'train.jsonl'}:3: 'text' is not valid Unicode" in capsys.readouterr().err
    assert main(["predict", str(run), "--text", "a \ud800"]) == 2
    assert "--text is not valid Unicode" in capsys.readouterr().err


def test_markup_in_user_strings_is_printed_literally_and_skips_are_reported_once(toy, tmp_path, capsys):
    odd = toy / "images" / "[" / "x]bad.png"  # a path that reads as a rich closing tag: [/x]
    train_lines = lines(toy / "train.jsonl")
    train_lines[0] = json.dumps({**json.loads(train_lines[0]), "image": "images/[/x]bad.png"})
    (toy / "train.jsonl").write_text("\n".join(train_lines) + "\n")
    assert not odd.exists()
    run = tmp_path / "run"
    assert train(toy, run, "--set", "train.on_bad_sample=skip", "--set", "train.epochs=3") == 0
    out = capsys.readouterr().out
    assert "[/x]bad.png" in out
    # one missing image: one report before training says 1, not a count per epoch or a running total
    reports = [line for line in out.splitlines() if line.startswith("left out ")]
    assert reports == [
        "left out 1 sample(s) whose image cannot be loaded (on_bad_sample: skip): train: 1 missing_image"
    ]


def test_a_resume_refuses_data_whose_bad_samples_changed(toy, tmp_path, capsys):
    image = toy / json.loads(lines(toy / "train.jsonl")[5])["image"]
    original = image.read_bytes()
    image.write_bytes(b"broken")
    run = tmp_path / "run"
    assert train(toy, run, "--set", "train.on_bad_sample=skip") == 0
    (run / "results.json").unlink()
    image.write_bytes(original)  # the data changed: the run would now train on 24 samples, not 23
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'checkpoint' / 'last' / 'training_state.json'}: before training the run left out" in err
    assert "(train: train-0005), but now it would leave out nothing: the data changed" in err
    image.write_bytes(b"broken")  # as it was: the resume goes on
    assert main(["train", "--resume", str(run)]) == 0


def test_a_run_that_leaves_test_unread_never_checks_its_images(toy, tmp_path):
    from mitp.app.train.config import load_run_config
    from mitp.app.train.loop import Trainer

    for split in ("val", "test"):
        (toy / json.loads(lines(toy / f"{split}.jsonl")[0])["image"]).unlink()
    config = load_run_config(CONFIG, [f"data={toy}", "train.epochs=1", "train.on_bad_sample=skip"])
    (tmp_path / "trial").mkdir()
    results = Trainer(config, tmp_path / "trial", test=False).fit()  # as a sweep's trial runs
    assert results["skipped"]["images"] == {"val": {"missing_image": 1}} and results["test"] is None
