"""Validate a prepared dataset without training (``mitp check DATA_DIR``).

Checks that ``labels.json`` is well formed; that every split file exists and every line
parses as JSON with the required fields; that texts are non-empty strings; that every
label is in ``labels.json``; that ids are unique across all splits; and that every image
exists and decodes completely. Every problem is a named
:class:`~mitp.data.errors.ManifestError` located by manifest file and line.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CorruptImage, EmptySplit, ManifestError, MissingFile, MissingImage
from .images import open_rgb
from .manifest import SPLITS, IdOwners, LabelSpace, Sample, iter_split, read_image_roots, read_labels, split_path


@dataclass
class CheckReport:
    data_dir: str
    labels: LabelSpace | None = None
    lines: dict[str, int] = field(default_factory=dict)  # non-blank lines per split
    valid: dict[str, int] = field(default_factory=dict)  # samples without any problem per split
    problems: list[ManifestError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images_checked: int = 0
    no_label: dict[str, int] = field(default_factory=dict)  # multi-label rows where no class applies
    missing: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> {"image": n, "text": n} (null)
    image_roots: list[str] = field(default_factory=list)  # recorded by mitp prepare (image_roots.json)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problems_by_kind(self) -> Counter:
        return Counter(p.kind for p in self.problems)


def _probe(path: str) -> tuple[str, str] | None:
    """None if the image decodes, else (kind, reason)."""
    try:
        open_rgb(path, path, None)
    except (MissingImage, CorruptImage) as err:
        return err.kind, str(err.__cause__ or "")
    return None


def check_dataset(
    data_dir: str | os.PathLike,
    decode_images: bool = True,
    workers: int = 4,
    track=None,
    allow_external_paths: bool = False,
    allow_missing: bool = False,
) -> CheckReport:
    """Check everything about a prepared dataset; never raises for problems in the data.

    ``allow_missing`` accepts samples without an image or a text (``null``); their counts per split
    are in ``report.missing``.

    ``decode_images=False`` only checks that image files exist. ``track(iterable,
    description=..., total=...)`` wraps the image loop (a progress bar).
    """
    track = track or (lambda it, description="", total=None: it)
    report = CheckReport(str(data_dir))
    if not Path(data_dir).is_dir():
        report.problems.append(MissingFile(data_dir, None, "dataset directory does not exist"))
        return report
    try:
        report.labels = read_labels(data_dir)
    except ManifestError as err:
        report.problems.append(err)  # keep going: everything but label membership can still be checked
    space = report.labels
    try:
        report.image_roots = read_image_roots(data_dir)
    except ManifestError as err:
        report.problems.append(err)  # images outside the directory are then reported one by one

    owners = IdOwners()
    samples: list[Sample] = []
    bad_lines: set[tuple[str, int]] = set()
    for split in SPLITS:
        report.lines[split] = 0
        try:
            items = list(
                iter_split(data_dir, split, space, allow_external_paths, allow_missing, image_roots=report.image_roots)
            )
        except ManifestError as err:  # missing split file
            report.problems.append(err)
            continue
        report.lines[split] = len(items)
        for item in items:
            if isinstance(item, ManifestError):
                report.problems.append(item)
                bad_lines.add((item.path, item.line))
                continue
            duplicate = owners.claim(item.id, item.location, item.path, item.line)
            if duplicate:
                report.problems.append(duplicate)
                bad_lines.add((item.path, item.line))
            samples.append(item)
        if report.lines[split] == 0:  # training refuses an empty split (check_splits): so does check
            report.problems.append(
                EmptySplit(
                    split_path(data_dir, split),
                    None,
                    "no samples; every split needs at least one to train and evaluate",
                )
            )

    by_image: dict[str, list[Sample]] = {}
    for s in samples:
        if s.image is None:
            continue
        by_image.setdefault(os.path.normpath(s.image_path()), []).append(s)
    paths = sorted(by_image)
    report.images_checked = len(paths)
    if decode_images:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(track(pool.map(_probe, paths), description="decoding images", total=len(paths)))
    else:
        results = [
            None if os.path.isfile(p) else ("missing_image", "")
            for p in track(paths, description="checking images", total=len(paths))
        ]
    for path, result in zip(paths, results, strict=True):
        if result is None:
            continue
        kind, message = result
        for s in by_image[path]:
            if kind == "missing_image":
                err = MissingImage(s.path, s.line, f"image {s.image_path()} not found (id {s.id!r})")
            else:
                err = CorruptImage(s.path, s.line, f"image {s.image_path()} cannot be decoded (id {s.id!r}): {message}")
            report.problems.append(err)
            bad_lines.add((s.path, s.line))

    for split in SPLITS:
        path = str(split_path(data_dir, split))
        report.valid[split] = sum(1 for s in samples if s.path == path and (s.path, s.line) not in bad_lines)
    for split in SPLITS:
        path = str(split_path(data_dir, split))
        counts = {
            "image": sum(1 for s in samples if s.path == path and s.image is None),
            "text": sum(1 for s in samples if s.path == path and s.text is None),
        }
        if any(counts.values()):
            report.missing[split] = counts
    if space is not None and space.multi_label:
        for split in SPLITS:
            path = str(split_path(data_dir, split))
            report.no_label[split] = sum(1 for s in samples if s.path == path and not s.label)
    if space is not None:
        used = {
            n
            for s in samples
            if s.path == str(split_path(data_dir, "train"))
            for n in (s.label if isinstance(s.label, tuple) else (s.label,))
        }
        unused = [n for n in space.labels if n not in used]
        if unused and report.lines.get("train"):
            report.warnings.append(f"labels with no training sample: {', '.join(unused)}")

    rank = {str(split_path(data_dir, s)): i for i, s in enumerate(SPLITS)}
    report.problems.sort(key=lambda p: (rank.get(p.path, -1), p.line or 0))
    return report


__all__ = ["CheckReport", "check_dataset"]
