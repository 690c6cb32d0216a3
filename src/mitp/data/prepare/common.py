"""What every converter shares: the conversion result, dropped-row bookkeeping, writing."""

from __future__ import annotations

import csv
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ...jsonio import JSONError, parse_json
from ..errors import BadJson, BadRecord
from ..manifest import SPLITS, LabelSpace, Record, write_image_roots, write_manifest

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
        for split in SPLITS:
            if not self.splits.get(split):
                self.warnings.append(f"{split} split is empty")
        self.compare_published()
        write_manifest(out_dir, self.splits, self.space)
        self.out_dir = str(out_dir)
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
    image, out_dir = Path(os.path.abspath(image)), Path(os.path.abspath(out_dir))
    try:
        return Path(os.path.relpath(image, out_dir)).as_posix()
    except ValueError:  # different drives on Windows
        return image.as_posix()


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
        except UnicodeDecodeError as err:
            raise BadRecord(path, start, f"not valid UTF-8: {err}") from err
        except csv.Error as err:
            raise BadRecord(path, start, f"malformed CSV: {err}") from err


__all__ = ["Conversion", "PUBLISHED", "image_ref", "no_progress", "read_csv_rows", "read_jsonl_objects"]
