"""Property tests: whatever bytes a manifest line or an image file holds, the reader and `mitp check`
answer with a sample, OK, or a named error that says where; never a traceback."""

import io
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mitp.app.cli import main
from mitp.data.check import check_dataset
from mitp.data.errors import ManifestError
from mitp.data.images import open_rgb
from mitp.data.manifest import LabelSpace, Sample, parse_line

SPACES = [LabelSpace("single_label", ("cat", "dog")), LabelSpace("multi_label", ("a", "b", "c")), None]
# Damaged TIFFs make PIL warn before it raises; the warnings are expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# Lines that look like manifest records, with any field missing, mistyped or odd.
records = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=8) | json_values,
        "image": st.text(max_size=12) | json_values,
        "text": st.text(max_size=20) | json_values,
        "label": st.sampled_from(["cat", "dog", "a"]) | json_values,
        "extra": json_values,
    },
).map(lambda d: json.dumps(d).encode())
any_line = st.binary(max_size=80) | records | st.text(max_size=40).map(str.encode)


@SETTINGS
@given(raw=any_line, space=st.sampled_from(SPACES))
def test_a_manifest_line_is_a_sample_or_a_named_error(raw, space):
    try:
        sample = parse_line("data/train.jsonl", 7, raw, space)
    except ManifestError as err:
        assert str(err).startswith("data/train.jsonl:7: ") and err.kind
    else:
        assert isinstance(sample, Sample) and sample.id and sample.text.strip()


@SETTINGS
@given(raw=any_line)
def test_a_prediction_line_is_a_sample_or_a_named_error(raw):
    try:
        sample = parse_line("data/p.jsonl", 7, raw, None, for_prediction=True)
    except ManifestError as err:
        assert str(err).startswith("data/p.jsonl:7: ") and err.kind
    else:
        assert isinstance(sample, Sample) and sample.id and sample.label is None
        assert sample.image or sample.text.strip()


def image_bytes():
    """Valid images, truncated ones, and random bytes, in several formats."""

    def encode(size, mode, fmt):
        buffer = io.BytesIO()
        Image.new(mode, size, 128).save(buffer, fmt)
        return buffer.getvalue()

    valid = st.builds(
        encode,
        st.tuples(st.integers(1, 20), st.integers(1, 20)),
        st.sampled_from(["RGB", "L", "RGBA", "I;16", "P"]),
        st.sampled_from(["PNG", "TIFF"]),
    )
    truncated = st.tuples(valid, st.floats(0, 1)).map(lambda v: v[0][: int(len(v[0]) * v[1])])
    return valid | truncated | st.binary(max_size=64)


@SETTINGS
@given(data=image_bytes())
def test_image_bytes_decode_or_give_a_named_error(tmp_path, data):
    path = tmp_path / "x.img"
    path.write_bytes(data)
    try:
        image = open_rgb(str(path), "data/train.jsonl", 3, "x")
    except ManifestError as err:
        assert str(err).startswith("data/train.jsonl:3: ") and err.kind in ("corrupt_image", "missing_image")
    else:
        assert image.mode == "RGB"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(any_line, max_size=4),
    image=image_bytes(),
    labels=st.sampled_from(
        [
            b'{"task": "single_label", "labels": ["cat", "dog"]}',
            b'{"task": "multi_label", "labels": ["a", "b"]}',
            b"{not json",
            b"",
        ]
    ),
    name=st.text(string.ascii_letters, min_size=1, max_size=6),
)
def test_mitp_check_never_shows_a_traceback(tmp_path_factory, capsys, lines, image, labels, name):
    data = tmp_path_factory.mktemp("fuzz")
    (data / "labels.json").write_bytes(labels)
    (data / f"{name}.png").write_bytes(image)
    good = json.dumps({"id": "g", "image": f"{name}.png", "text": "hello", "label": "cat"}).encode()
    for split in ("train", "val", "test"):
        (data / f"{split}.jsonl").write_bytes(b"\n".join([good, *lines]) + b"\n")
    report = check_dataset(data, workers=1)  # raises nothing: every problem is in the report
    assert all(isinstance(p, ManifestError) and p.location for p in report.problems)
    code = main(["check", str(data), "--no-progress", "--workers", "1"])
    captured = capsys.readouterr()
    assert code in (0, 1) and "Traceback" not in captured.out + captured.err
