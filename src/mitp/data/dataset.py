"""Model-ready tensors from a manifest, batching, and deterministic loading (over 400 lines: a split's
way from manifest line to batch, bad samples included, in one place).

``ManifestDataset(data_dir, split, backbone=...)`` yields one sample per manifest line
using the backbone's own preprocessing (:mod:`mitp.data.preprocess`). Its ``collate``
pads token ids on the right and returns a batch dict::

    pixel_values    (B, 3, H, W) float32
    input_ids       (B, L) long, right-padded with the tokenizer's pad id
    attention_mask  (B, L) long
    labels          (B,) long class indices (single-label) or (B, K) float multi-hot (multi-label)
    modality_mask   (B, 2) bool: [image present, text present] (see :mod:`mitp.data.missing`)
    ids             list[str]  -- the sample ids, NOT a model input

Pass only :func:`model_inputs` of a batch to a model (it drops ``ids``).

Bad samples (image deleted since ``mitp check``, corrupt image): loading one raises MissingImage /
CorruptImage naming the image and the manifest file and line. With ``on_bad_sample="skip"``, invalid
manifest lines (bad JSON, empty text, unknown label, ...) are left out at construction (listed in
``dataset.invalid_lines``; "error" raises there), and :meth:`ManifestDataset.leave_out_unloadable` (or
:func:`unloadable_samples` and :meth:`~ManifestDataset.leave_out`, which a multi-process trainer shares
out) removes the samples whose image cannot be loaded before anything iterates the dataset (listed in
``dataset.left_out``): every batch is then whole.

Missing modalities: a sample whose manifest line has ``"image": null`` / ``"text": null``
(``allow_missing``) or that ``missing`` (a :class:`~mitp.data.missing.MissingConfig`) drops
reaches the model as a blank image / an empty text, with its ``modality_mask`` saying so.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
    """A sample whose image cannot be loaded: its id, the error's kind (``missing_image``, ``corrupt_image``)
    and message (manifest file and line, image path)."""

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
    """Stacks samples into a batch, right-padding token ids."""

    pad_token_id: int

    def __call__(self, items: list[dict]) -> dict:
        shapes = {tuple(x["pixel_values"].shape) for x in items}
        if len(shapes) > 1:
            raise ValueError(
                f"images of one batch have different shapes {sorted(shapes)}; the image "
                "processor must crop or resize to a fixed size"
            )
        ids, mask = pad_token_ids([x["input_ids"] for x in items], self.pad_token_id)
        return {
            "pixel_values": torch.stack([x["pixel_values"] for x in items]),
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.stack([x["label"] for x in items]),
            "modality_mask": torch.stack([x["modality_mask"] for x in items]),
            "ids": [x["id"] for x in items],
        }


class ManifestDataset(Dataset):
    """One split of a prepared dataset, as model-ready tensors.

    Give either ``preprocessor`` or ``backbone`` (then ``Preprocessor.for_backbone(backbone,
    max_length)`` is used). ``on_bad_sample``: "error" (raise) or "skip" (see module docs); ``left_out``
    lists the samples :meth:`leave_out` removed, in manifest order.
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
        self.left_out: list[BadSample] = []
        self.collate = Collator(preprocessor.pad_token_id)

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

    def left_out_key(self) -> str:
        """A short hash of the samples :meth:`leave_out` removed ("" when none): the rows differ, so caches must."""
        if not self.left_out:
            return ""
        return hashlib.sha256("\n".join(bad.id for bad in self.left_out).encode()).hexdigest()[:16]

    # --- leaving out samples whose image cannot be loaded ----------------------------------------
    def check_image(self, i: int) -> BadSample | None:
        """Load sample ``i``'s image exactly as :meth:`load` does: None if it loads, else why it does not."""
        try:
            self._pixels(i)
        except (MissingImage, CorruptImage) as err:
            return BadSample(self.samples[i].id, err.kind, str(err))
        return None

    def leave_out(self, bad: Iterable[BadSample]) -> None:
        """Remove the samples ``bad`` names from the split (they join ``left_out``)."""
        bad = list(bad)
        order = {sample.id: i for i, sample in enumerate(self.samples)}
        unknown = sorted(b.id for b in bad if b.id not in order)
        if unknown:
            raise ValueError(f"{self.split}: no samples with ids {unknown[:5]} to leave out")
        gone = {b.id for b in bad}
        keep = [i for i, sample in enumerate(self.samples) if sample.id not in gone]
        self.left_out = self.left_out + sorted({b.id: b for b in bad}.values(), key=lambda b: order[b.id])
        self.samples = [self.samples[i] for i in keep]
        self.modality_mask = self.modality_mask[keep]

    def leave_out_unloadable(self, num_workers: int = 0) -> list[BadSample]:
        """Find (:func:`unloadable_samples`) and :meth:`leave_out` the samples whose image cannot be loaded."""
        bad = unloadable_samples(self, num_workers=num_workers)
        self.leave_out(bad)
        return bad

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
        return {
            "id": sample.id,
            "pixel_values": torch.from_numpy(self._pixels(i)),
            "input_ids": self.preprocessor.text(sample.text)
            if self.modality_mask[i][1]
            else self.preprocessor.empty_text(),
            "label": self.encode_label(sample),
            "modality_mask": torch.from_numpy(self.modality_mask[i].copy()),
        }

    def __getitem__(self, i: int) -> dict:
        return self.load(i)

    def _pixels(self, i: int):
        """Sample ``i``'s image, decoded and preprocessed (the blank image where it has none)."""
        sample = self.samples[i]
        if not self.modality_mask[i][0]:
            return self.preprocessor.blank_image()
        image = open_rgb(sample.image_path(), sample.path, sample.line, sample.id)
        try:
            return self.preprocessor.image(image)
        except (OSError, ValueError) as err:  # a decoded image that still cannot be processed
            raise CorruptImage(
                sample.path,
                sample.line,
                f"image {sample.image_path()} cannot be processed (id {sample.id!r}): {err}",
            ) from err


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


def left_out_counts(datasets: dict[str, ManifestDataset]) -> dict[str, dict[str, int]]:
    """Samples left out because their image cannot be loaded, per split and kind
    (``{"val": {"corrupt_image": 1}}``)."""
    return {split: dict(Counter(b.kind for b in ds.left_out)) for split, ds in datasets.items() if ds.left_out}


def left_out_report(datasets: dict[str, ManifestDataset], max_examples: int = 5) -> str:
    """One line of counts per split and kind, then the first few messages ("" when nothing was left out)."""
    counts = left_out_counts(datasets)
    if not counts:
        return ""
    left_out = [b for ds in datasets.values() for b in ds.left_out]
    lines = [
        f"left out {len(left_out)} sample(s) whose image cannot be loaded (on_bad_sample: skip): "
        + "; ".join(
            f"{split}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
            for split, kinds in counts.items()
        )
    ]
    lines += [f"  {b.message}" for b in left_out[:max_examples]]
    if len(left_out) > max_examples:
        lines.append(f"  ... and {len(left_out) - max_examples} more")
    return "\n".join(lines)


class _ImageChecks(Dataset):
    """:meth:`ManifestDataset.check_image` of some of a split's samples, as a dataset DataLoader workers share."""

    def __init__(self, dataset: ManifestDataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> BadSample | None:
        return self.dataset.check_image(self.indices[k])


CHECK_BATCH = 16  # images per DataLoader batch of the check


def unloadable_samples(
    dataset: ManifestDataset,
    indices: Iterable[int] | None = None,
    num_workers: int = 0,
    on_checked: Callable[[int], None] | None = None,
) -> list[BadSample]:
    """The samples among ``indices`` (default: all) whose image cannot be loaded -- missing, or failing to
    decode or preprocess exactly as training would load it -- in index order. Each image is decoded once,
    ``num_workers`` DataLoader workers at a time; ``on_checked(n)`` hears each batch of ``n`` samples done."""
    checks = _ImageChecks(dataset, list(range(len(dataset)) if indices is None else indices))
    bad = []
    for batch in DataLoader(checks, batch_size=CHECK_BATCH, num_workers=num_workers, collate_fn=list):
        bad += [b for b in batch if b is not None]
        if on_checked is not None:
            on_checked(len(batch))
    return bad


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

    Workers get deterministic seeds (a generator seeded with ``seed``).
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
    "build_datasets",
    "check_splits",
    "invalid_line_counts",
    "left_out_counts",
    "left_out_report",
    "make_dataloader",
    "model_inputs",
    "pad_token_ids",
    "seed_worker",
    "unloadable_samples",
]
