"""Every file mitp reads is validated, not just parsed: a malformed run config, training state, model folder
config, metrics log or manifest line gives the named error with the file (and line), never a
traceback. One table per reader, then hypothesis fuzzing of each reader's bytes and structure."""

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mitp import Classifier
from mitp.app.cli import main
from mitp.app.train.config import load_run_config
from mitp.app.train.loop import LoopPosition
from mitp.app.train.rundir import MetricsLog, RunDirError
from mitp.configuration import ConfigError, parse_overrides
from mitp.data.errors import BadJson
from mitp.data.manifest import parse_line
from mitp.files import CheckpointError
from mitp.jsonio import JSONError, parse_json
from mitp.records import read_model_config

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DEEP = b"[" * 200_000
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@pytest.fixture
def run(tiny_run, tmp_path):
    """A copy of a finished tiny run to damage."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


# --- run configs (--config, --set) --------------------------------------------------------------
@pytest.mark.parametrize(
    "content, message",
    [
        (b"data: d\nbackbone: \xff\xfe\n", "not valid UTF-8"),
        (b"- 1\n- 2\n", "top level must be a mapping"),
        (b"data: d\nmethod: mitp\n", "backbone: is required"),
        (b"data: [unclosed\n", "not valid YAML"),
        (b"x: " + b"[" * 5000 + b"\n", "not valid YAML"),
        (b"data: d\nbackbone: b\nmethod: mitp\ntrain: {lr: .inf}\n", "train.lr: must be a finite number"),
        (b"data: d\nbackbone: b\nmethod: mitp\nseed: -1\n", "seed: must be >= 0"),
        (b"data: d\nbackbone: b\nmethod: mitp\ntrain: {1: 2}\n", "train.1: unknown key"),
        (b"data: d\nbackbone: b\nmethod: mitp\n1: 2\n", "1: unknown top-level key"),
    ],
)
def test_a_bad_config_file_is_a_config_error(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_run_config(path)


def alias_bomb(levels: int = 6) -> str:
    """A YAML flow list of nested aliases: a line per level, 9**levels strings once expanded."""
    names = "abcdefghij"
    nodes = ["&a [" + ", ".join(["lol"] * 9) + "]"]
    nodes += [f"&{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(nodes) + "]"


@pytest.mark.parametrize(
    "section, key",
    [
        ("train: {epochs: %s}", "train.epochs"),
        ("train: {scheduler: %s}", "train.scheduler"),
        ("train: {missing: %s}", "train.missing"),
        ("eval: {threshold: %s}", "eval.threshold"),
        ("seed: %s", "seed"),
        ("methods: {mitp: %s}", "methods.mitp"),
        ("methods: {mitp: {train: %s}}", "methods.mitp.train"),
        ("data: {path: d, allow_missing: %s}", "data.allow_missing"),
    ],
)
def test_an_alias_bomb_in_a_config_is_quoted_short(tmp_path, section, key):
    """Half a million strings from six lines: the error names the key and quotes a bounded piece of the value."""
    path = tmp_path / "c.yaml"
    data = "" if section.startswith("data") else "data: d\n"
    path.write_text(f"{data}backbone: b\nmethod: mitp\n" + section % alias_bomb() + "\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert err.value.key == key and "'lol', 'lol'" in str(err.value)
    assert len(str(err.value)) < 600


def test_a_number_as_a_key_is_named_beside_set_values(tmp_path):
    (tmp_path / "c.yaml").write_text("data: d\nbackbone: b\nmethod: mitp\n1: 2\n")
    with pytest.raises(ConfigError, match="1: unknown top-level key") as err:
        load_run_config(tmp_path / "c.yaml", ["train.lr=0.1"])
    assert err.value.key == "1" and str(tmp_path / "c.yaml") in str(err.value)


@pytest.mark.parametrize(
    "content, where, reason",
    [
        (b"data: d\nbackbone: b\nmethod: mitp\n  seed: 1\n", ":4:7", "mapping values are not allowed here"),
        (
            b"data: [unclosed\n",
            ":2:1",
            "expected ',' or ']', but got '<stream end>' (while parsing a flow sequence at 1:7)",
        ),
        (b"data: d\nbackbone: \x00\n", ":2:11", "unacceptable character #x0000: special characters are not allowed"),
        (b"x: !!python/object/apply:os.system [ls]\n", ":1:4", "could not determine a constructor for the tag"),
        (b"x: " + b"[" * 5000 + b"\n", "", "nested too deeply"),
        (b"seed: 2020-13-01\n", "", "month must be in 1..12"),
    ],
)
def test_a_config_file_that_is_not_yaml_is_one_line_with_file_line_and_column(tmp_path, content, where, reason, capsys):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mitp train: error: {path}{where}: not valid YAML: {reason}") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_set_value_that_is_not_yaml_names_its_key():
    with pytest.raises(ConfigError) as err:
        parse_overrides(["train.lr=[1, 2"])
    assert err.value.key == "train.lr" and "not a valid value" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="seed: .* is not a valid value .*4300 digits"):
        parse_overrides(["seed=" + "9" * 4400])


# --- a run's config.yaml and its model folders ----------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [
        b"data: d\nmethod: mitp\n",
        b"- a\n- b\n",
        b"backbone: \xff\n",
        b"data: 3\nbackbone: tiny-clip\nmethod: mitp\n",
        b"data: {x: 1}\nbackbone: tiny-clip\nmethod: mitp\n",
        b"data: d\nbackbone: tiny-clip\nmethod: mitp\ntrain: {image_size: big}\n",
    ],
)
def test_a_bad_run_config_yaml_is_named_by_what_reads_it(run, content, capsys):
    """predict reads the model folder alone (everything it needs is there); evaluate and resume read config.yaml
    too, and name it: the user passed no --config."""
    (run / "config.yaml").write_bytes(content)
    assert main(["predict", str(run), "--text", "apple"]) == 0
    capsys.readouterr()
    for command in (["evaluate", str(run)], ["train", "--resume", str(run)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mitp {command[0]}: error: {run / 'config.yaml'}: ") and len(err.splitlines()) == 1
        assert "--config" not in err


@pytest.mark.parametrize(
    "change, message",
    [
        (("prompt_length: 4", "prompt_length: -1"), "model.prompt_length: must be >= 1, got -1"),
        (("prompt_length: 4", "prompt_lenght: 4"), "model.prompt_lenght: unknown key for method 'mitp'"),
        (("hub: similarity", "hub: attention"), "model.hub: 'attention' is not one of"),
    ],
)
def test_a_bad_method_key_in_a_run_config_yaml_names_the_file(run, change, message, capsys):
    """A run's config.yaml holds its method's keys resolved: they are checked when it is read, not first on
    resume, after the run directory was taken."""
    config = run / "config.yaml"
    config.write_text(config.read_text().replace(*change))
    for command in (["evaluate", str(run)], ["train", "--resume", str(run)]):
        assert main(command) == 2
        assert capsys.readouterr().err.startswith(f"mitp {command[0]}: error: {config}: {message}")


def test_a_config_file_that_is_not_there_is_named(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"mitp train: error: {tmp_path / 'nope.yaml'}: no such file\n"


@pytest.fixture
def export(tiny_run, tmp_path):
    folder = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(folder)]) == 0
    return folder


CONFIG_CHANGES = [
    (lambda c: c.update(labels="cat"), "labels: input should be a valid dictionary"),
    (lambda c: c.update(surprise=1), "surprise: extra inputs are not permitted"),
    (lambda c: c["preprocessing"].update(image_size="big"), "preprocessing.image_size: input should be a valid int"),
    (lambda c: c["preprocessing"].update(image_size=10**6), "preprocessing.image_size: input should be less than or"),
    (lambda c: c["preprocessing"].update(image_size=4), "preprocessing.image_size: input should be greater than"),
    (lambda c: c["preprocessing"].update(max_text_length=0), "preprocessing.max_text_length: input should be greater"),
    (
        lambda c: c["preprocessing"].update(max_text_length=64),
        "preprocessing.max_text_length: 64 exceeds the text tower's limit of 32",
    ),
    (lambda c: c.pop("backbone"), "backbone: missing"),
    (lambda c: c["backbone"].update(spec=7), "backbone.spec: input should be a valid string"),
    (lambda c: c["labels"].update(labels=[]), "labels.labels: list should have at least 1 item"),
    (lambda c: c.update(format="other-1"), "format: input should be 'mitp-classifier-1'"),
    (lambda c: c.update(threshold="high"), "threshold: input should be a valid number"),
    (lambda c: c.update(method=5), "method: input should be a valid dictionary"),
    (lambda c: c["method"].update(method="nope"), "method.method"),
    (lambda c: c["method"].update(prompt_lenght=2), "prompt_lenght"),
]


@pytest.mark.parametrize(("change", "message"), CONFIG_CHANGES)
@pytest.mark.parametrize("where", ["export", "run"])
def test_a_bad_model_config_is_a_checkpoint_error(export, run, where, change, message, capsys):
    folder = export if where == "export" else run / "checkpoint" / "best"
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        Classifier.from_pretrained(export if where == "export" else run)
    for content, said in ((b"\xff\xfe", "not valid UTF-8"), (b'{"method": ', "not valid JSON"), (b"[1]", "valid dict")):
        (folder / "config.json").write_bytes(content)
        assert main(["predict", str(export if where == "export" else run), "--text", "apple"]) == 2
        assert f"config.json: {said}" in capsys.readouterr().err.replace("input should be a ", "")


# --- resuming: the training state and the metrics log -----------------------------------------------
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["position"]["__dict__"].__setitem__(0, ["epoch", "two"]), "position.epoch: input should be a"),
        (lambda s: s["position"]["__dict__"].pop(0), r"position.epoch: missing"),
        (lambda s: s["position"]["__dict__"].append(["surprise", 1]), "position.surprise: extra inputs are not"),
        (lambda s: s["__dict__"].__setitem__(0, ["optimizer", {"__dict__": [["state", 5]]}]), "does not fit this run"),
        (lambda s: s["__dict__"].pop(), "missing"),
        (lambda s: s["position"].__setitem__("__dict__", 5), "malformed training state"),
    ],
)
def test_a_bad_training_state_is_named_on_resume(run, change, message, capsys):
    path = run / "checkpoint" / "last" / "training_state.json"
    data = json.loads(path.read_text())
    state = data["state"]
    entries = dict(state["__dict__"])
    view = {"__dict__": state["__dict__"], "position": entries["position"]}
    change(view)
    path.write_text(json.dumps(data))
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "training_state.json" in err and len(err.splitlines()) == 1
    assert __import__("re").search(message, err), err


def test_a_corrupted_metrics_line_is_named_on_resume(run, capsys):
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines()
    lines[1] = "{not json"
    log.write_text("\n".join(lines) + "\n")
    before = log.read_bytes()
    assert main(["train", "--resume", str(run)]) == 2
    assert f"{log}:2: not valid JSON" in capsys.readouterr().err
    assert log.read_bytes() == before
    log.write_text('{"split": "val", "epoch": 1}\n[1, 2]\n{"split": "val", "epoch": 2}\n')
    with pytest.raises(RunDirError, match=r"metrics.jsonl:2: not a metrics record"):
        MetricsLog(log).records()


# --- manifests ----------------------------------------------------------------------------------------
def test_a_deeply_nested_manifest_line_is_bad_json_everywhere(toy_dataset, tiny_run, tmp_path, capsys):
    with pytest.raises(BadJson, match="nested too deeply"):
        parse_line("m.jsonl", 3, DEEP, None)
    data = tmp_path / "data"
    shutil.copytree(toy_dataset, data)
    with open(data / "val.jsonl", "ab") as f:
        f.write(DEEP + b"\n")
    assert main(["check", str(data)]) == 1
    assert "nested too deeply" in capsys.readouterr().out
    assert main(["train", "--config", str(CONFIG), "--set", f"data={data}", "--out", str(tmp_path / "r")]) == 2
    assert "val.jsonl:17" in capsys.readouterr().err
    assert (
        main(["predict", str(tiny_run), "--manifest", str(data / "val.jsonl"), "--out", str(tmp_path / "p.jsonl")]) == 2
    )
    assert "val.jsonl:17" in capsys.readouterr().err


# --- fuzzing: only success or the named error -----------------------------------------------------
@SETTINGS
@given(raw=st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode()) | st.just(DEEP))
def test_parse_json_returns_a_value_or_a_json_error(raw):
    try:
        parse_json(raw)
    except JSONError:
        pass


export_like = st.fixed_dictionaries(
    {},
    optional={
        key: json_values
        | st.dictionaries(
            st.sampled_from(["spec", "task", "labels", "image_size", "max_text_length", "method"]),
            json_values,
            max_size=3,
        )
        for key in ("format", "method", "backbone", "labels", "preprocessing", "data", "threshold", "odd")
    },
)


@SETTINGS
@given(config=export_like | st.binary(max_size=80))
def test_a_model_config_is_read_or_named(tmp_path, config):
    (tmp_path / "config.json").write_bytes(config if isinstance(config, bytes) else json.dumps(config).encode())
    try:
        read_model_config(tmp_path)
    except CheckpointError as err:
        assert str(err).startswith(str(tmp_path / "config.json"))


@SETTINGS
@given(raw=st.binary(max_size=80) | json_values.map(lambda v: json.dumps(v).encode()))
def test_a_config_file_is_loaded_or_a_config_error(tmp_path, raw):
    (tmp_path / "c.yaml").write_bytes(raw)
    try:
        load_run_config(tmp_path / "c.yaml")
    except ConfigError:
        pass


@SETTINGS
@given(
    state=st.dictionaries(
        st.sampled_from(["epoch", "batch", "step", "best", "loss_sum", "skipped_ids", "x"]), json_values, max_size=5
    )
)
def test_a_loop_position_is_read_or_named(state):
    try:
        LoopPosition.from_state(state, Path("training_state.json"))
    except CheckpointError as err:
        assert str(err).startswith("training_state.json")


@SETTINGS
@given(lines=st.lists(st.binary(max_size=30) | json_values.map(lambda v: json.dumps(v).encode()), max_size=4))
def test_a_metrics_log_is_read_or_named(tmp_path, lines):
    (tmp_path / "metrics.jsonl").write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines))
    try:
        MetricsLog(tmp_path / "metrics.jsonl").records()
    except RunDirError as err:
        assert str(err).startswith(str(tmp_path / "metrics.jsonl"))


@SETTINGS
@given(tree=json_values | st.fixed_dictionaries({"format": st.just("mitp-state-1"), "state": json_values}))
def test_a_training_state_structure_is_read_or_named(tmp_path, tree):
    import torch
    from safetensors.torch import save_file

    from mitp.app.train.state import load_state

    save_file({".x": torch.zeros(1)}, str(tmp_path / "s.safetensors"))
    (tmp_path / "s.json").write_text(json.dumps(tree))
    try:
        load_state(tmp_path, "s", required=("position",))
    except CheckpointError as err:
        assert str(err).startswith(str(tmp_path / "s.json"))


@pytest.fixture(scope="module")
def api(tiny_run):
    from fastapi.testclient import TestClient

    from mitp.app.serve import create_app

    with TestClient(create_app(Classifier.from_pretrained(tiny_run)), raise_server_exceptions=False) as client:
        yield client


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=60)
    | st.fixed_dictionaries(
        {},
        optional={
            "image": st.text(max_size=12) | json_values,
            "text": st.text(max_size=12) | json_values,
            "top_k": json_values,
            "items": st.lists(
                st.fixed_dictionaries({}, optional={"image": json_values, "text": st.text(max_size=8) | json_values}),
                max_size=3,
            ),
        },
    ).map(lambda d: json.dumps(d).encode()),
    path=st.sampled_from(["/predict", "/predict/batch"]),
)
def test_any_json_body_gets_an_answer_never_a_500(api, body, path):
    reply = api.post(path, content=body, headers={"content-type": "application/json"})
    assert reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        detail = reply.json()["detail"]
        assert isinstance(detail, str) and ": " in detail and " at 0x" not in detail
