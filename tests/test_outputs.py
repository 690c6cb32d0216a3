"""The one output guard (mitp.app.outputs): no command writes over a model, a run, a dataset or its own input,
and a bad --out is refused before the work starts."""

import json
import shutil

import pytest

from mitp.app.analysis.explain import figure_path
from mitp.app.cli import main
from mitp.app.outputs import OutputError, check_outputs, owner_of
from mitp.runs import MARKER


def model_folder(path):
    path.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "model.onnx", "onnx.json"):
        (path / name).write_text("x")
    return path


@pytest.mark.parametrize("name", ["model.onnx", "config.json", "model.safetensors", "onnx.json", "tokenizer/x"])
def test_a_model_folder_owns_its_files(tmp_path, name):
    folder = model_folder(tmp_path / "export")
    with pytest.raises(OutputError, match=rf"--out: refusing to write .*{name}: it belongs to the model folder"):
        check_outputs(files=[folder / name])
    check_outputs(files=[folder / "predictions.jsonl"])  # its own names only


def test_a_dataset_owns_its_manifests_and_images_and_prepare_replaces_it_only_when_asked(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "train.jsonl").write_text("")
    assert owner_of(data / "images" / "a.png") == ("dataset", data)
    with pytest.raises(OutputError, match="it holds a dataset \\(--overwrite replaces it\\)"):
        check_outputs(files=[data / "labels.json"], folders=[data], creates="dataset", replace=False)
    with pytest.raises(OutputError, match="it holds a dataset; choose"):  # no --overwrite to advise
        check_outputs(files=[data / "labels.json"], folders=[data], creates="dataset")
    check_outputs(files=[data / "labels.json"], folders=[data], creates="dataset", replace=True)
    with pytest.raises(OutputError, match="it holds a dataset"):  # --overwrite replaces its own kind only
        check_outputs(folders=[data], creates="run", replace=True)


def test_a_plain_file_is_never_a_folder_nor_a_folder_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="it exists and is not a directory"):
        check_outputs(folders=[tmp_path / "file"])
    with pytest.raises(OutputError, match="it is a directory; give a file path"):
        check_outputs(files=[tmp_path])


def test_a_path_named_twice_or_under_a_file_is_refused(tmp_path):
    with pytest.raises(OutputError, match="it is named twice"):
        check_outputs(files=[tmp_path / "a.md", tmp_path / "." / "a.md"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="file is a file, not a folder"):
        check_outputs(files=[tmp_path / "file" / "out.json"])


def test_a_command_making_a_dataset_leaves_a_users_own_file_alone(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="a file of yours"):
        check_outputs(files=[tmp_path / "data" / "notes.txt"], creates="dataset", replace=True)
    check_outputs(files=[tmp_path / "data" / "train.jsonl"], creates="dataset")  # a new file: fine


def test_files_go_into_a_run_only_when_the_command_analyses_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text("{}")
    with pytest.raises(OutputError, match="inside the run .*which this command does not analyse"):
        check_outputs(files=[run / "robustness.md"])
    check_outputs(files=[run / "robustness.md"], own_runs=[run])


def test_inputs_and_everything_inside_an_input_folder_are_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x")
    for target in (tmp_path / "in" / "a.txt", tmp_path / "in" / "new.txt"):
        with pytest.raises(OutputError, match="it is an input of this command"):
            check_outputs(files=[target], inputs=[tmp_path / "in"])


def test_the_figure_path_is_the_file_really_written():
    assert str(figure_path("out/y")) == "out/y.png"
    assert str(figure_path("out/y.svg")) == "out/y.svg"
    assert str(figure_path("out/y.v2")) == "out/y.v2.png"


def test_explain_checks_the_file_it_writes_not_the_name_given(toy_dataset, tiny_run, tmp_path, capsys):
    image = tmp_path / "y.png"
    shutil.copy(toy_dataset / "images" / "test-0000.png", image)
    before = image.read_bytes()
    assert main(["explain", str(tiny_run), "--image", str(image), "--text", "a", "--out", str(tmp_path / "y")]) == 2
    assert "it is an input of this command" in capsys.readouterr().err and image.read_bytes() == before
    curves = (tiny_run / "curves.png").read_bytes()
    assert (
        main(["explain", str(tiny_run), "--image", str(image), "--text", "a", "--out", str(tiny_run / "curves")]) == 2
    )
    assert "it belongs to the run" in capsys.readouterr().err and (tiny_run / "curves.png").read_bytes() == curves


def test_explain_never_replaces_a_users_file_beside_the_figure(tiny_run, toy_dataset, tmp_path, capsys):
    (tmp_path / "keep.json").write_text('{"my": "notes"}')
    image = str(toy_dataset / "images" / "test-0000.png")
    args = ["explain", str(tiny_run), "--image", image, "--text", "berry", "--out", str(tmp_path / "keep.png")]
    assert main(args) == 2
    assert "keep.json (the report beside the figure): it exists and is not an earlier explain report" in (
        capsys.readouterr().err
    )
    assert (tmp_path / "keep.json").read_text() == '{"my": "notes"}' and not (tmp_path / "keep.png").exists()
    (tmp_path / "keep.json").unlink()
    assert main(args) == 0 and main(args) == 0  # its own earlier report it replaces


def test_robustness_and_prepare_refuse_a_plain_file_as_out_before_any_work(toy_dataset, tiny_run, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.write_text("mine")
    assert main(["robustness", str(tiny_run), "--rates", "0", "--out", str(plain)]) == 2
    assert "it exists and is not a directory" in capsys.readouterr().err
    source = tmp_path / "rows.jsonl"
    shutil.copy(toy_dataset / "train.jsonl", source)
    assert main(["prepare", "jsonl", "--input", str(source), "--out", str(plain), "--no-progress"]) == 2
    assert "it exists and is not a directory" in capsys.readouterr().err and plain.read_text() == "mine"


def test_prepare_refuses_an_existing_dataset_without_overwrite(toy_dataset, tmp_path, capsys):
    source = tmp_path / "rows.jsonl"
    rows = [json.loads(line) for line in (toy_dataset / "train.jsonl").read_text().splitlines()]
    for row in rows:
        row["image"] = str(toy_dataset / row["image"])
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "data"
    prepare = ["prepare", "jsonl", "--input", str(source), "--out", str(out), "--no-progress"]
    assert main(prepare) == 0
    labels = (out / "labels.json").read_bytes()
    assert main(prepare) == 2
    assert "it holds a dataset (--overwrite replaces it)" in capsys.readouterr().err
    assert (out / "labels.json").read_bytes() == labels
    assert main([*prepare, "--overwrite"]) == 0
