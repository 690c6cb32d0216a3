"""The manifest format: reading, writing, validation errors, stratified splits."""

from __future__ import annotations

import json
import pickle

import pytest

from data_fixtures import get_line, make_manifest, set_line
from mitp.data.errors import (
    BadJson,
    BadLabels,
    BadRecord,
    DuplicateId,
    EmptyText,
    ManifestError,
    MissingFile,
    MissingSplitFile,
    UnknownLabel,
)
from mitp.data.manifest import (
    IdOwners,
    LabelSpace,
    Record,
    check_text,
    parse_line,
    read_labels,
    read_split,
    split_named,
    write_manifest,
)
from mitp.data.splits import rarest_label_key, stratified_split

SPACE = LabelSpace("single_label", ("cat", "dog"))
MULTI = LabelSpace("multi_label", ("a", "b", "c"))


def line(**fields):
    base = {"id": "x1", "image": "img/x.jpg", "text": "a text", "label": "cat"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def test_error_str_is_file_line_message_and_pickles():
    err = EmptyText("data/train.jsonl", 12, "empty text (id 'x')")
    assert str(err) == "data/train.jsonl:12: empty text (id 'x')"
    assert err.kind == "empty_text" and isinstance(err, ManifestError) and isinstance(err, ValueError)
    assert str(MissingFile("data/labels.json", None, "not found")) == "data/labels.json: not found"
    clone = pickle.loads(pickle.dumps(err))  # errors cross DataLoader worker processes
    assert type(clone) is EmptyText and str(clone) == str(err) and clone.line == 12


def test_parse_valid_single_and_multi_label_lines():
    s = parse_line("m/train.jsonl", 3, line().encode(), SPACE)
    assert (s.id, s.image, s.text, s.label, s.line) == ("x1", "img/x.jpg", "a text", "cat", 3)
    assert s.image_path() == "m/img/x.jpg" and s.location == "m/train.jsonl:3"
    s = parse_line("m/train.jsonl", 1, line(label=["c", "a"], image="/abs/y.png"), MULTI)
    assert s.label == ("c", "a") and s.image_path() == "/abs/y.png"
    # No class applies: valid multi-label data (an all-negative target), with or without labels.json.
    assert parse_line("m/train.jsonl", 2, line(label=[]), MULTI).label == ()
    assert parse_line("m/train.jsonl", 2, line(label=[]), None).label == ()


@pytest.mark.parametrize(
    "raw, space, error, fragment",
    [
        ("{not json", SPACE, BadJson, "not valid JSON"),
        ("[1, 2]", SPACE, BadJson, "JSON object"),
        (b"\xff\xfe garbage", SPACE, BadJson, "UTF-8"),
        (line(text=...), SPACE, BadRecord, "'text'"),
        (line(id=""), SPACE, BadRecord, "'id'"),
        (line(image=3), SPACE, BadRecord, "'image'"),
        (line(text=5), SPACE, BadRecord, "'text' must be a string"),
        (line(text=" \t\n"), SPACE, EmptyText, "empty text"),
        (line(label="cow"), SPACE, UnknownLabel, "'cow' is not in labels.json"),
        (line(label=["cat"]), SPACE, BadRecord, "single_label"),
        (line(label="a"), MULTI, BadRecord, "multi_label"),
        (line(label=["a", "z"]), MULTI, UnknownLabel, "'z'"),
    ],
)
def test_each_bad_line_raises_its_named_error_with_file_and_line(raw, space, error, fragment):
    with pytest.raises(error) as info:
        parse_line("data/train.jsonl", 7, raw, space)
    assert type(info.value) is error
    assert str(info.value).startswith("data/train.jsonl:7: ")
    assert fragment in str(info.value)


def test_a_prediction_line_may_leave_out_its_id_label_and_either_modality():
    def parse(**fields):
        return parse_line("m/p.jsonl", 4, json.dumps(fields), None, for_prediction=True)

    s = parse(image="x.png")
    assert (s.id, s.image, s.text, s.label, s.image_path()) == ("4", "x.png", None, None, "m/x.png")
    assert (parse(id=17, text="hi").id, parse(id="a", text="hi", image=None).present) == ("17", (False, True))
    assert parse(id="a", text="hi", label="not in any label space").label is None  # labels are not read
    for fields, error, fragment in [
        ({"id": "a"}, BadRecord, "both 'image' and 'text' are null or absent: nothing to classify (id 'a')"),
        ({"text": " "}, EmptyText, "empty text (id '4'); a sample without text has \"text\": null"),
        ({"text": 5}, BadRecord, "'text' must be a string or null, got int (id '4')"),
        ({"text": "a \ud800"}, BadRecord, "'text' is not valid Unicode: it holds a lone surrogate"),
        ({"id": [1], "text": "t"}, BadRecord, "'id' must be a non-empty string, got [1]"),
        ({"image": 3}, BadRecord, "'image' must be a non-empty path string or null, got 3"),
    ]:
        with pytest.raises(error) as info:
            parse(**fields)
        assert type(info.value) is error and str(info.value).startswith("m/p.jsonl:4: ") and fragment in str(info.value)


def test_one_text_rule_names_the_value_as_asked():
    assert check_text("a text") == "a text"
    with pytest.raises(BadRecord, match=r"^--text is not valid Unicode: it holds a lone surrogate"):
        check_text("\ud800", "--text")
    with pytest.raises(BadRecord, match=r"^must be a string or null, got list$"):
        check_text([], "", nullable=True)
    with pytest.raises(EmptyText, match=r"^empty text$"):
        check_text(" \n")


def test_one_id_rule_names_both_places():
    owners = IdOwners()
    assert owners.claim("a", "line 1") is None and owners.claim("b", "line 2") is None
    duplicate = owners.claim("a", "line 5", "m.jsonl", 5, ": ids are unique")
    assert (
        type(duplicate) is DuplicateId and str(duplicate) == "m.jsonl:5: id 'a' already used at line 1: ids are unique"
    )
    assert owners.claim("a", "line 6") is not None  # the first place stays the one named


def test_split_names_of_raw_datasets():
    assert [split_named(n) for n in ("train", " Validation", "DEV", "valid", "val", "test")] == [
        "train",
        "val",
        "val",
        "val",
        "val",
        "test",
    ]
    assert split_named("holdout") is None and split_named("") is None


def test_read_labels_errors(tmp_path):
    with pytest.raises(MissingFile, match="labels.json not found"):
        read_labels(tmp_path)
    with pytest.raises(MissingFile, match="does not exist"):
        read_labels(tmp_path / "nope")
    path = tmp_path / "labels.json"
    path.write_text('{"task": "single_label",\n "labels": [oops]}')
    with pytest.raises(BadJson) as info:
        read_labels(tmp_path)
    assert str(info.value).startswith(f"{path}:2: ")
    for bad, fragment in [
        ({"task": "regression", "labels": ["a", "b"]}, "'task'"),
        ({"task": "single_label", "labels": ["a"]}, "at least 2"),
        ({"task": "multi_label", "labels": []}, "non-empty list"),
        ({"task": "multi_label", "labels": ["a", "a"]}, "duplicate"),
        ({"task": "multi_label", "labels": ["a"], "extra": 1}, "unknown keys"),
    ]:
        path.write_text(json.dumps(bad))
        with pytest.raises(BadLabels, match=fragment):
            read_labels(tmp_path)
    path.write_text(json.dumps({"task": "multi_label", "labels": ["x", "y"]}))
    assert read_labels(tmp_path) == LabelSpace("multi_label", ("x", "y"))


def test_read_split_raise_or_collect(tmp_path):
    root = make_manifest(tmp_path / "d")
    samples, errors = read_split(root, "train")
    assert len(samples) == 8 and errors == [] and [s.line for s in samples] == list(range(1, 9))
    set_line(root / "train.jsonl", 3, "not json")
    set_line(root / "train.jsonl", 5, {**get_line(root / "train.jsonl", 5), "id": "train-000"})
    with pytest.raises(BadJson, match=r"train\.jsonl:3: "):
        read_split(root, "train")
    samples, errors = read_split(root, "train", on_error="collect")
    assert len(samples) == 6
    assert [(type(e), e.line) for e in errors] == [(BadJson, 3), (DuplicateId, 5)]
    assert "already used at line 1" in str(errors[1])
    (root / "val.jsonl").unlink()
    with pytest.raises(MissingSplitFile, match=r"val\.jsonl"):
        read_split(root, "val")


def test_blank_lines_are_ignored_and_line_numbers_stay_physical(tmp_path):
    root = make_manifest(tmp_path / "d")
    text = (root / "val.jsonl").read_text()
    (root / "val.jsonl").write_text("\n" + text.replace("\n", "\n\n", 1))
    samples, _ = read_split(root, "val")
    assert [s.line for s in samples] == [2, 4, 5, 6]


def test_write_manifest_is_sorted_canonical_and_checked(tmp_path):
    space = LabelSpace("multi_label", ("b", "a"))
    recs = [Record("z", "i/z.jpg", "Zürich ünïcode", ("b",)), Record("a", "i/a.jpg", "first", ("b", "a"))]
    write_manifest(tmp_path, {"train": recs, "val": [], "test": []}, space)
    raw = (tmp_path / "train.jsonl").read_bytes()
    assert (
        raw
        == (
            '{"id": "a", "image": "i/a.jpg", "label": ["b", "a"], "text": "first"}\n'
            '{"id": "z", "image": "i/z.jpg", "label": ["b"], "text": "Zürich ünïcode"}\n'
        ).encode()
    )
    assert (tmp_path / "val.jsonl").read_bytes() == b""
    assert json.loads((tmp_path / "labels.json").read_text()) == {"task": "multi_label", "labels": ["b", "a"]}
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(DuplicateId, match=r"test\.jsonl: id 'a' already used at train\.jsonl"):
        write_manifest(tmp_path, {"train": recs, "test": [recs[1]]}, space)
    with pytest.raises(DuplicateId, match=r"train\.jsonl: id 'z' already used at train\.jsonl"):
        write_manifest(tmp_path, {"train": recs + [recs[0]]}, space)
    with pytest.raises(UnknownLabel, match="'q'"):
        write_manifest(tmp_path, {"train": [Record("q1", "x", "t", ("q",))]}, space)


def test_stratified_split_counts_per_class_and_determinism():
    items = [(f"{c}{i:02d}", c) for c, n in (("a", 20), ("b", 11), ("c", 3), ("d", 1)) for i in range(n)]
    parts = stratified_split(
        items, key=lambda x: x[1], id_of=lambda x: x[0], fractions=[("val", 0.1), ("test", 0.2)], seed=3
    )
    per = {name: {c: sum(1 for x in xs if x[1] == c) for c in "abcd"} for name, xs in parts.items()}
    # ceil(f * n) per class, at least one left in train; val taken before test
    assert per["val"] == {"a": 2, "b": 2, "c": 1, "d": 0}
    assert per["test"] == {"a": 4, "b": 3, "c": 1, "d": 0}
    assert per["train"] == {"a": 14, "b": 6, "c": 1, "d": 1}
    assert sorted(x for xs in parts.values() for x in xs) == sorted(items)
    again = stratified_split(
        list(reversed(items)), key=lambda x: x[1], id_of=lambda x: x[0], fractions=[("val", 0.1), ("test", 0.2)], seed=3
    )
    assert again == parts  # input order does not matter
    other = stratified_split(
        items, key=lambda x: x[1], id_of=lambda x: x[0], fractions=[("val", 0.1), ("test", 0.2)], seed=4
    )
    assert other["val"] != parts["val"]
    with pytest.raises(ValueError):
        stratified_split(items, key=lambda x: x[1], id_of=lambda x: x[0], fractions=[("val", 0.6), ("t", 0.5)], seed=0)


def test_rarest_label_key():
    key = rarest_label_key([("a", "b"), ("a",), ("a", "c"), ("b",)])
    assert key(("a", "b")) == "b" and key(("a", "c")) == "c" and key(("a",)) == "a"


def test_package_exports_load_lazily():
    import mitp.data as data
    from mitp.data import dataset, preprocess

    assert data.ManifestDataset is dataset.ManifestDataset and data.make_dataloader is dataset.make_dataloader
    assert data.Preprocessor is preprocess.Preprocessor and data.MissingImage.kind == "missing_image"
    assert not hasattr(data, "no_such_name")
