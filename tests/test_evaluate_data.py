"""mitp evaluate --data: another dataset is accepted only with the run's task and label order."""

import json
from pathlib import Path

import pytest
import yaml

from mitp.app.cli import main
from mitp.synthetic import write_toy_dataset

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = write_toy_dataset(tmp_path_factory.mktemp("toy"), sizes=(24, 12, 12))
    run = tmp_path_factory.mktemp("runs") / "run"
    assert (
        main(["train", "--config", str(CONFIG), "--set", f"data={data}", "--set", "train.epochs=1", "--out", str(run)])
        == 0
    )
    return run


def relabelled(tmp_path, labels_json):
    data = write_toy_dataset(tmp_path / "other", sizes=(24, 12, 12))
    original = json.loads((data / "labels.json").read_text())
    (data / "labels.json").write_text(json.dumps(labels_json(original)))
    return data, original


def test_the_same_labels_are_accepted(run, tmp_path, capsys):
    data, _ = relabelled(tmp_path, lambda labels: labels)
    assert main(["evaluate", str(run), "--data", str(data), "--json"]) == 0


def test_another_label_order_is_refused(run, tmp_path, capsys):
    data, _ = relabelled(tmp_path, lambda labels: {**labels, "labels": labels["labels"][::-1]})
    assert main(["evaluate", str(run), "--data", str(data)]) == 2
    assert "another order" in capsys.readouterr().err


def test_another_task_is_refused(run, tmp_path, capsys):
    data = write_toy_dataset(tmp_path / "multi", sizes=(24, 12, 12), task="multi_label")
    assert main(["evaluate", str(run), "--data", str(data)]) == 2
    assert "task multi_label but the run was trained for single_label" in capsys.readouterr().err


def test_the_labels_compared_are_the_model_folders_not_its_datasets(run, tmp_path, capsys):
    """The model folder records the labels it was trained with: the run's dataset changed afterwards cannot make
    a scrambled label order look right."""
    data, original = relabelled(tmp_path, lambda labels: {**labels, "labels": labels["labels"][::-1]})
    own = Path(yaml.safe_load((run / "config.yaml").read_text())["data"]) / "labels.json"
    saved = own.read_text()
    own.write_text(json.dumps({**original, "labels": original["labels"][::-1]}))
    try:
        assert main(["evaluate", str(run), "--data", str(data)]) == 2
        assert "another order" in capsys.readouterr().err
    finally:
        own.write_text(saved)
