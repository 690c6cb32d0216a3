"""Model-ready tensors from a manifest, batching, and deterministic loading.

``ManifestDataset(data_dir, split, backbone=...)`` yields one sample per manifest line
using the backbone's own preprocessing (:mod:`mitp.data.preprocess`). Its ``collate``
pads token ids on the right and returns a batch dict::

    pixel_values    (B, 3, H, W) float32
    input_ids       (B, L) long, right-padded with the tokenizer's pad id
    attention_mask  (B, L) long
    labels          (B,) long class indices (single-label) or (B, K) float multi-hot (multi-label)
    modality_mask   (B, 2) bool: [image present, text present] (see :mod:`mitp.data.missing`)
    ids             list[str]  -- the sample ids, NOT a model input
    skipped         list[dict] -- {"id", "kind", "message"} per sample dropped from this batch

Pass only :func:`model_inputs` of a batch to a model (it drops ``ids`` and ``skipped``).

Bad samples (image deleted since ``mitp check``, corrupt image): with
``on_bad_sample="error"`` (default) loading raises MissingImage / CorruptImage naming the
image and the manifest file and line. With ``"skip"`` the sample is dropped from its
batch and reported in ``batch["skipped"]`` -- this travels with the batch, so it works
with DataLoader workers; a :class:`SkipCounter` sums it over an epoch. Invalid manifest
lines (bad JSON, empty text, unknown label, ...) raise at construction in "error" mode and
are left out, listed in ``dataset.invalid_lines``, in "skip" mode.

Missing modalities: a sample whose manifest line has ``"image": null`` / ``"text": null``
(``allow_missing``) or that ``missing`` (a :class:`~mitp.data.missing.MissingConfig`) drops
reaches the model as a blank image / an empty text, with its ``modality_mask`` saying so. A batch whose samples
were all skipped has zero rows (``len(batch["ids"]) == 0``); trainers should skip it.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import CorruptImage, EmptySplit, MissingImage
from .images import open_rgb
from .manifest import SPLITS, IdOwners, LabelSpace, Sample, read_labels, read_split
from .missing import MissingConfig, drop_pattern, pattern_digest
from .preprocess import Preprocessor

ON_BAD_SAMPLE = ("error", "skip")
MODEL_KEYS = ("pixel_values", "input_ids", "attention_mask", "modality_mask", "labels")


@dataclass(frozen=True)
class BadSample:
    """Placeholder a dataset returns (in skip mode) for a sample that could not be loaded."""

    id: str
    kind: str
    message: str


def model_inputs(batch: dict) -> dict:
    """The keys of ``batch`` a model's forward takes: pixel_values, input_ids, attention_mask, modality_mask,
    labels."""
    return {k: batch[k] for k in MODEL_KEYS if k in batch}


def pad_token_ids(sequences: list, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to one length: ``(input_ids, attention_mask)``, both (B, L) long."""
    length = max(len(x) for x in sequences)
    ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, tokens in enumerate(sequences):
        ids[row, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids, mask


@dataclass
class Collator:
    """Stacks samples into a batch, right-padding token ids; drops :class:`BadSample` entries."""

    pad_token_id: int
    multi_label: bool
    num_classes: int
    image_size: tuple[int, int] | None = None  # only used to shape an all-skipped (empty) batch

    def __call__(self, items: list) -> dict:
        good = [x for x in items if not isinstance(x, BadSample)]
        skipped = [{"id": x.id, "kind": x.kind, "message": x.message} for x in items if isinstance(x, BadSample)]
        if not good:
            h, w = self.image_size or (0, 0)
            labels = torch.zeros(0, self.num_classes) if self.multi_label else torch.zeros(0, dtype=torch.long)
            return {
                "pixel_values": torch.zeros(0, 3, h, w),
                "input_ids": torch.zeros(0, 0, dtype=torch.long),
                "attention_mask": torch.zeros(0, 0, dtype=torch.long),
                "labels": labels,
                "modality_mask": torch.zeros(0, 2, dtype=torch.bool),
                "ids": [],
                "skipped": skipped,
            }
        shapes = {tuple(x["pixel_values"].shape) for x in good}
        if len(shapes) > 1:
            raise ValueError(
                f"images of one batch have different shapes {sorted(shapes)}; the image "
                "processor must crop or resize to a fixed size"
            )
        ids, mask = pad_token_ids([x["input_ids"] for x in good], self.pad_token_id)
        return {
            "pixel_values": torch.stack([x["pixel_values"] for x in good]),
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.stack([x["label"] for x in good]),
            "modality_mask": torch.stack([x["modality_mask"] for x in good]),
            "ids": [x["id"] for x in good],
            "skipped": skipped,
        }


class ManifestDataset(Dataset):
    """One split of a prepared dataset, as model-ready tensors.

    Give either ``preprocessor`` or ``backbone`` (then ``Preprocessor.for_backbone(backbone,
    max_length)`` is used). ``on_bad_sample``: "error" (raise) or "skip" (see module docs).
    ``allow_missing`` accepts manifest lines without an image or text; ``missing`` drops modalities
    from complete samples (a fixed, seeded pattern).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str,
        preprocessor: Preprocessor | None = None,
        *,
        backbone=None,
        max_length: int | None = None,
        on_bad_sample: str = "error",
        labels: LabelSpace | None = None,
        allow_external_paths: bool = False,
        allow_missing: bool = False,
        missing: MissingConfig | None = None,
    ):
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(
                f"on_bad_sample must be one of {', '.join(map(repr, ON_BAD_SAMPLE))}, got {on_bad_sample!r}"
            )
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if preprocessor is None:
            if backbone is None:
                raise ValueError("ManifestDataset needs a preprocessor or a backbone")
            preprocessor = Preprocessor.for_backbone(backbone, max_length)
        self.data_dir = str(data_dir)
        self.split = split
        self.preprocessor = preprocessor
        self.on_bad_sample = on_bad_sample
        self.label_space = read_labels(data_dir) if labels is None else labels
        mode = "raise" if on_bad_sample == "error" else "collect"
        self.samples, self.invalid_lines = read_split(
            data_dir,
            split,
            self.label_space,
            on_error=mode,
            allow_external_paths=allow_external_paths,
            allow_missing=allow_missing,
        )
        self.missing = missing
        # (N, 2) bool: what reaches the model of each sample (the manifest's nulls, then the drops)
        self.modality_mask = drop_pattern(
            [s.id for s in self.samples],
            missing,
            np.array([s.present for s in self.samples], dtype=bool).reshape(-1, 2),
        )
        t = preprocessor.image_transform
        size = t.crop or t.resize_to
        self.collate = Collator(
            preprocessor.pad_token_id,
            self.label_space.multi_label,
            self.label_space.num_classes,
            tuple(size) if size else None,
        )

    # --- info ---------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.label_space.task

    @property
    def labels(self) -> tuple[str, ...]:
        return self.label_space.labels

    @property
    def num_classes(self) -> int:
        return self.label_space.num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def missing_key(self) -> str:
        """A short hash of which samples miss what ("" when none do): inputs differ, so caches must too."""
        return pattern_digest(self.modality_mask)

    # --- items --------------------------------------------------------------------------------
    def encode_label(self, sample: Sample) -> torch.Tensor:
        index = self.label_space.index
        if self.label_space.multi_label:
            target = torch.zeros(self.num_classes, dtype=torch.float32)
            target[[index[name] for name in sample.label]] = 1.0
            return target
        return torch.tensor(index[sample.label], dtype=torch.long)

    def load(self, i: int) -> dict:
        """Sample ``i`` as tensors; raises MissingImage / CorruptImage naming file and manifest line.
        A missing image is the blank image, a missing text the empty text (``modality_mask`` says which)."""
        sample = self.samples[i]
        has_image, has_text = (bool(x) for x in self.modality_mask[i])
        if has_image:
            image = open_rgb(sample.image_path(), sample.path, sample.line, sample.id)
            try:
                pixels = self.preprocessor.image(image)
            except (OSError, ValueError) as err:  # a decoded image that still cannot be processed
                raise CorruptImage(
                    sample.path,
                    sample.line,
                    f"image {sample.image_path()} cannot be processed (id {sample.id!r}): {err}",
                ) from err
        else:
            pixels = self.preprocessor.blank_image()
        return {
            "id": sample.id,
            "pixel_values": torch.from_numpy(pixels),
            "input_ids": self.preprocessor.text(sample.text) if has_text else self.preprocessor.empty_text(),
            "label": self.encode_label(sample),
            "modality_mask": torch.from_numpy(self.modality_mask[i].copy()),
        }

    def __getitem__(self, i: int):
        try:
            return self.load(i)
        except (MissingImage, CorruptImage) as err:
            if self.on_bad_sample == "skip":
                return BadSample(self.samples[i].id, err.kind, str(err))
            raise


def build_datasets(
    data_dir: str | os.PathLike,
    backbone=None,
    *,
    preprocessor: Preprocessor | None = None,
    max_length: int | None = None,
    on_bad_sample: str = "error",
    splits=SPLITS,
    allow_external_paths: bool = False,
    allow_missing: bool = False,
    missing: dict[str, MissingConfig] | None = None,
) -> dict[str, ManifestDataset]:
    """Datasets for ``splits`` sharing one preprocessor (tokenizer / image processor loaded once);
    ``missing`` maps a split to its simulated missingness."""
    if preprocessor is None:
        if backbone is None:
            raise ValueError("build_datasets needs a backbone or a preprocessor")
        preprocessor = Preprocessor.for_backbone(backbone, max_length)
    labels = read_labels(data_dir)
    missing = missing or {}
    return {
        s: ManifestDataset(
            data_dir,
            s,
            preprocessor,
            on_bad_sample=on_bad_sample,
            labels=labels,
            allow_external_paths=allow_external_paths,
            allow_missing=allow_missing,
            missing=missing.get(s),
        )
        for s in splits
    }


def check_splits(datasets: dict[str, ManifestDataset]) -> None:
    """Refuse what would train or evaluate on nothing, or leak: an empty split, and an id in two splits."""
    owners = IdOwners()
    for split, ds in datasets.items():
        if len(ds) == 0:
            dropped = f" after leaving out {len(ds.invalid_lines)} invalid line(s)" if ds.invalid_lines else ""
            raise EmptySplit(
                Path(ds.data_dir) / f"{split}.jsonl", None, f"no samples{dropped}; every split needs at least one"
            )
        for sample in ds.samples:
            leak = ": a sample in two splits leaks"
            duplicate = owners.claim(sample.id, sample.location, sample.path, sample.line, leak)
            if duplicate:
                raise duplicate


def invalid_line_counts(datasets: dict[str, ManifestDataset]) -> dict[str, dict[str, int]]:
    """Manifest lines left out in skip mode, per split and kind (``{"train": {"empty_text": 2}}``)."""
    return {
        split: dict(Counter(err.kind for err in ds.invalid_lines)) for split, ds in datasets.items() if ds.invalid_lines
    }


@dataclass
class SkipCounter:
    """Sums ``batch["skipped"]`` over an epoch: ``update`` per batch, ``report`` and ``reset`` at the end.

    ``ids`` keeps, per kind, every distinct sample id skipped since construction (not reset), for
    the run's totals."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    ids: dict[str, set] = field(default_factory=dict)
    max_examples: int = 5

    def update(self, batch: dict) -> int:
        skipped = batch.get("skipped", [])
        self.count += len(skipped)
        room = self.max_examples - len(self.examples)
        self.examples.extend(x["message"] for x in skipped[: max(0, room)])
        for x in skipped:
            self.kinds[x["kind"]] += 1
            self.ids.setdefault(x["kind"], set()).add(x["id"])
        return len(skipped)

    def reset(self) -> None:
        self.count = 0
        self.examples = []
        self.kinds = Counter()

    def totals(self) -> dict[str, int]:
        """Distinct samples skipped since construction, per kind."""
        return {kind: len(ids) for kind, ids in sorted(self.ids.items())}

    def report(self, what: str = "this epoch") -> str:
        if not self.count:
            return "no bad samples skipped"
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.kinds.items()))
        lines = [f"skipped {self.count} bad sample(s) {what} ({kinds}; on_bad_sample: skip)"]
        lines += [f"  {m}" for m in self.examples]
        if self.count > len(self.examples):
            lines.append(f"  ... and {self.count - len(self.examples)} more")
        return "\n".join(lines)


class SeededSampler(Sampler[int]):
    """Indices in an order fixed by ``(seed, epoch)``; sequential if ``shuffle`` is False.

    Each iteration uses the current epoch and then advances it; ``set_epoch(e)`` picks
    the epoch explicitly (e.g. when resuming), so order never depends on global RNG state.
    """

    def __init__(self, length: int, shuffle: bool, seed: int = 0):
        self.length = length
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        # torch's CPU generator keeps only 32 bits of a seed: mix (seed, epoch) into 32 good bits.
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF]).generate_state(1)[0]
        g = torch.Generator()
        g.manual_seed(int(state))
        return torch.randperm(self.length, generator=g).tolist()

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return iter(self.order(epoch))

    def __len__(self) -> int:
        return self.length


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's RNGs in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_dataloader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose order depends only on ``seed`` and the epoch (see :class:`SeededSampler`).

    Workers get deterministic seeds (a generator seeded with ``seed``). With
    ``on_bad_sample="skip"`` batches can be smaller than ``batch_size`` (even empty).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    sampler = SeededSampler(len(dataset), shuffle, seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=getattr(dataset, "collate", None),
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(int(seed)),
        persistent_workers=False,
    )


__all__ = [
    "BadSample",
    "Collator",
    "MODEL_KEYS",
    "ManifestDataset",
    "ON_BAD_SAMPLE",
    "SeededSampler",
    "SkipCounter",
    "build_datasets",
    "check_splits",
    "invalid_line_counts",
    "make_dataloader",
    "model_inputs",
    "pad_token_ids",
    "seed_worker",
]
