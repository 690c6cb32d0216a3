"""What every converter shares: the conversion result, dropped-row bookkeeping, writing, staging.

A conversion is written into a staging folder beside ``--out`` (:func:`staging`); only a finished one
replaces the dataset in ``--out``, so a failed or interrupted ``mitp prepare`` leaves ``--out`` as it was.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from ...atomic import staging_dir
from ...jsonio import JSONError, parse_json
from ..errors import BadJson, BadRecord, EmptySplit, ManifestError
from ..manifest import (
    DATASET_FILES,
    SPLITS,
    LabelSpace,
    Record,
    check_text,
    split_path,
    write_image_roots,
    write_manifest,
)

# Published sample counts (train / val / test) after conversion.
PUBLISHED = {
    "food101": {"train": 61_142, "val": 6_846, "test": 22_716},
    "mmimdb": {"train": 15_552, "val": 2_608, "test": 7_799},
    "snli-ve": {"train": 529_527, "val": 17_858, "test": 17_901},
}

Track = Callable[..., Iterable]  # track(iterable, description=..., total=...) -> iterable


def no_progress(iterable, description: str = "", total: int | None = None):
    return iterable


@dataclass
class Conversion:
    """The result of converting a raw dataset: records per split plus everything the summary reports."""

    kind: str
    space: LabelSpace | None = None
    splits: dict[str, list[Record]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    dropped: Counter = field(default_factory=Counter)
    dropped_examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    out_dir: str | None = None
    # the raw folders the images were read from, recorded so the dataset's own images need no flag
    image_roots: list[Path] = field(default_factory=list)

    max_examples = 3

    def drop(self, reason: str, where: str) -> None:
        """Count a raw row left out of the manifest, and why."""
        self.dropped[reason] += 1
        examples = self.dropped_examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(where)

    @property
    def external_images(self) -> int:
        """Records whose image lies outside the output directory (raw data referenced in place)."""
        return sum(
            1
            for records in self.splits.values()
            for r in records
            if os.path.isabs(r.image) or r.image.split("/", 1)[0] == ".."
        )

    @property
    def counts(self) -> dict[str, int]:
        return {s: len(self.splits.get(s, [])) for s in SPLITS}

    def label_counts(self, split: str) -> Counter:
        c: Counter = Counter()
        for rec in self.splits.get(split, []):
            c.update(rec.label if isinstance(rec.label, tuple) else (rec.label,))
        return c

    def compare_published(self) -> None:
        """Warn where split sizes differ from the published ones for this benchmark."""
        published = PUBLISHED.get(self.kind)
        if not published:
            return
        for split in SPLITS:
            got, want = self.counts[split], published[split]
            if got != want:
                self.warnings.append(
                    f"{split}: {got:,} samples, but the published {self.kind} split has {want:,} ({got - want:+,})"
                )
        if self.kind == "food101":  # val is carved by us: the raw data is complete if the totals match
            got = self.counts["train"] + self.counts["val"]
            want = published["train"] + published["val"]
            same = "matches" if got == want else "does NOT match"
            self.notes.append(
                f"train + val = {got:,} {same} the published {want:,}; "
                f"test {self.counts['test']:,} vs published {published['test']:,}"
            )

    def write(self, out_dir: str | os.PathLike) -> None:
        """Write the manifest; an empty split is an EmptySplit error (nothing could train or evaluate on it)."""
        empty = [split for split in SPLITS if not self.splits.get(split)]
        if empty:
            sizes = ", ".join(f"{split} {self.counts[split]:,}" for split in SPLITS)
            dropped = f", {sum(self.dropped.values()):,} raw rows dropped" if self.dropped else ""
            raise EmptySplit(
                split_path(destination(out_dir), empty[0]),
                None,
                f"no samples for {' and '.join(empty)} ({sizes}{dropped}); every split needs at least one",
            )
        self.compare_published()
        write_manifest(out_dir, self.splits, self.space)
        self.out_dir = str(destination(out_dir))
        write_image_roots(out_dir, self.recorded_roots())

    @property
    def unrooted_images(self) -> int:
        """External images under none of the recorded image roots: runs must allow those explicitly."""
        if not self.out_dir:
            return self.external_images
        roots = self.recorded_roots()
        count = 0
        for records in self.splits.values():
            for r in records:
                if r.image is None or not (os.path.isabs(r.image) or r.image.split("/", 1)[0] == ".."):
                    continue
                path = os.path.realpath(os.path.join(self.out_dir, r.image))
                count += not any(os.path.commonpath([path, root]) == root for root in roots)
        return count

    def recorded_roots(self) -> list[str]:
        """The image roots that hold images referenced outside the output directory."""
        if not self.out_dir or not self.external_images:
            return []
        out = os.path.realpath(self.out_dir)
        roots = [os.path.realpath(r) for r in self.image_roots]
        return sorted({r for r in roots if os.path.commonpath([r, out]) != out and os.path.dirname(r) != r})


def image_ref(image: Path, out_dir: Path) -> str:
    """How a manifest in ``out_dir`` refers to ``image``: a relative POSIX path, absolute if impossible."""
    image, out_dir = Path(os.path.abspath(image)), Path(os.path.abspath(destination(out_dir)))
    try:
        return Path(os.path.relpath(image, out_dir)).as_posix()
    except ValueError:  # different drives on Windows
        return image.as_posix()


def row_text(value, conv: Conversion, where: str, column: str, path=None, line: int | None = None) -> str | None:
    """A raw row's text (from ``column``), checked by the manifest's own rule: None (the row dropped and counted
    as "empty text") when it is missing or blank; a value that is not text is a BadRecord at ``path``/``line``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        conv.drop("empty text", where)
        return None
    try:
        return check_text(value, f"text column {column!r}", nullable=True)
    except ManifestError as err:
        raise type(err)(path, line, err.message) from None


# --- staging -------------------------------------------------------------------------------------

# (staging folder, --out) while a conversion is staged: image paths and recorded roots are relative to --out
_STAGED: ContextVar[tuple[str, Path] | None] = ContextVar("mitp_prepare_staged", default=None)


def destination(out_dir: str | os.PathLike) -> Path:
    """The folder a dataset written into ``out_dir`` ends up in: ``--out`` for its staging folder, else itself."""
    staged = _STAGED.get()
    if staged is not None and os.path.abspath(out_dir) == staged[0]:
        return staged[1]
    return Path(out_dir)


@contextlib.contextmanager
def staging(out: str | os.PathLike) -> Iterator[Path]:
    """A new hidden folder beside ``out`` to convert into. When the block ends well, what it holds replaces the
    dataset in ``out`` (:data:`~mitp.data.manifest.DATASET_FILES` of an earlier one, images/ included, go); when
    it fails or is interrupted, the folder goes and ``out`` stays as it was."""
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = str(staging_dir(out.parent, f".{out.name}.prepare-"))
    token = _STAGED.set((stage, out))
    try:
        yield Path(stage)
        _replace_dataset(Path(stage), out)
    finally:
        _STAGED.reset(token)
        shutil.rmtree(stage, ignore_errors=True)


def _replace_dataset(stage: Path, out: Path) -> None:
    """Move what ``stage`` holds into ``out``, the dataset there first set aside (and put back on failure)."""
    out.mkdir(parents=True, exist_ok=True)
    new = sorted(entry.name for entry in stage.iterdir())
    dataset = any(split_path(out, split).is_file() for split in SPLITS)
    old = [name for name in sorted(set(new) | set(DATASET_FILES if dataset else ())) if os.path.lexists(out / name)]
    aside = Path(tempfile.mkdtemp(dir=out, prefix=".mitp-replaced-"))
    moved_old, moved_new = [], []
    try:
        for name in old:
            os.replace(out / name, aside / name)
            moved_old.append(name)
        for name in new:
            shutil.move(stage / name, out / name)
            moved_new.append(name)
    except BaseException:
        for name in moved_new:
            shutil.move(out / name, stage / name)
        for name in moved_old:
            os.replace(aside / name, out / name)
        aside.rmdir()  # kept, with what it holds, if putting the old dataset back failed
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _raise_field_limit() -> None:
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 10


def read_jsonl_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank JSON line; BadJson names the line of anything else."""

    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = parse_json(raw)
            except JSONError as err:
                raise BadJson(path, line, str(err)) from err
            if not isinstance(obj, dict):
                raise BadJson(path, line, f"each line must be a JSON object, got {type(obj).__name__}")
            yield line, obj


def _first_bad_utf8(path: Path) -> tuple[int, str]:
    """(line, message) of the first byte of ``path`` that is not UTF-8."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        return data.count(b"\n", 0, err.start) + 1, (
            f"not valid UTF-8: byte 0x{data[err.start]:02x} at column {err.start - line_start + 1}"
        )
    return 1, "not valid UTF-8"


def read_csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank CSV row; line numbers are physical, 1-based."""

    _raise_field_limit()
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        start = 1
        try:
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield start, row
                start = reader.line_num + 1
        except UnicodeDecodeError as err:  # the decoder reads ahead of the rows: find the byte's own line
            raise BadRecord(path, *_first_bad_utf8(path)) from err
        except csv.Error as err:
            raise BadRecord(path, start, f"malformed CSV: {err}") from err


__all__ = [
    "Conversion",
    "PUBLISHED",
    "destination",
    "image_ref",
    "no_progress",
    "read_csv_rows",
    "read_jsonl_objects",
    "row_text",
    "staging",
]
