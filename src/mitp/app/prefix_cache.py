"""Frozen-prefix activation cache: the towers' states below the first trainable layer, on disk.

A method's frozen prefix (embeddings plus the bottom layers of each tower) depends only on
its inputs, which are deterministic here (no augmentation). The first pass over a split
stores, per sample, both towers' hidden states at the first non-prefix layer (fp16,
memory-mapped) plus the text mask and pooling position; later passes read them and run
only the upper layers.

The store lives in ``<root>/<key>/``; the key hashes the manifest split's bytes, the
backbone (spec, shapes, a fingerprint of its weights), the prefix depths, the
preprocessing, which samples miss a modality (their inputs are blanks) and which were left
out as bad (``on_bad_sample: skip``), so any change selects a different store. A row counts only once its
``filled`` flag is set, after its data were written: deleting the directory at any time,
or killing a run mid-write, costs recomputation and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from mitp.backbones import TowerState
from mitp.configuration import ConfigError
from mitp.data.dataset import make_dataloader, model_inputs

FORMAT_VERSION = 1


def default_root() -> Path:
    return Path(os.environ.get("MITP_CACHE", Path.home() / ".cache" / "mitp")) / "prefix"


def backbone_fingerprint(backbone) -> str:
    """A cheap hash of the backbone's identity: spec, shapes and a sample of every weight tensor."""
    digest = hashlib.sha256(json.dumps([backbone.spec, backbone.shapes()], sort_keys=True).encode())
    for name, param in backbone.state_dict().items():
        flat = param.detach().reshape(-1)
        digest.update(name.encode())
        digest.update(flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def cache_key(manifest: Path, backbone, depths: tuple[int, int], preprocessing: str, max_length: int) -> str:
    digest = hashlib.sha256()
    digest.update(Path(manifest).read_bytes())
    meta = {
        "version": FORMAT_VERSION,
        "backbone": backbone_fingerprint(backbone),
        "depths": list(depths),
        "preprocessing": preprocessing,
        "max_length": max_length,
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()[:24]


class PrefixStore:
    """Per-sample prefix states of one split, memory-mapped from ``directory``."""

    FILES = ("text_hidden", "text_valid", "text_pool", "vision_hidden", "filled")

    def __init__(self, directory: Path, ids: list[str], text_shape: tuple[int, int], vision_shape: tuple[int, int]):
        self.directory = Path(directory)
        self.index = {sample_id: i for i, sample_id in enumerate(ids)}
        n, (length, d_t), (tokens, d_v) = len(ids), text_shape, vision_shape
        shapes = {
            "text_hidden": ((n, length, d_t), np.float16),
            "text_valid": ((n, length), np.bool_),
            "text_pool": ((n,), np.int64),
            "vision_hidden": ((n, tokens, d_v), np.float16),
            "filled": ((n,), np.bool_),
        }
        meta = {
            "samples": n,
            "text_shape": [length, d_t],
            "vision_shape": [tokens, d_v],
            "ids_sha": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        }
        meta_path = self.directory / "meta.json"
        self.directory.mkdir(parents=True, exist_ok=True)
        # Runs started together (compare --jobs) may open the same store: one creates it, the others wait.
        with FileLock(str(self.directory / ".create.lock")):
            if meta_path.exists() and json.loads(meta_path.read_text()) != meta:
                for old in self.directory.glob("*.*"):  # same key, other layout: an older format; rebuild
                    if old.name not in (".create.lock", ".put.lock"):
                        old.unlink()
            for name, (shape, dtype) in shapes.items():
                path = self.directory / f"{name}.npy"
                if not path.exists():
                    np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
            meta_path.write_text(json.dumps(meta))
        self.arrays = {name: np.load(self.directory / f"{name}.npy", mmap_mode="r+") for name in shapes}

    @property
    def complete(self) -> bool:
        return bool(self.arrays["filled"].all())

    def rows(self, ids: list[str]) -> np.ndarray:
        return np.array([self.index[i] for i in ids], dtype=np.int64)

    def has(self, ids: list[str]) -> bool:
        return bool(self.arrays["filled"][self.rows(ids)].all())

    def put(self, ids: list[str], text: TowerState, vision: TowerState) -> None:
        """Store the rows of ``ids`` that are not filled yet. Runs sharing the store fill it at once: under
        the lock a row another run filled meanwhile is left alone, so no reader sees it rewritten."""
        with FileLock(str(self.directory / ".put.lock")):
            a = self.arrays
            rows = self.rows(ids)
            fresh = ~a["filled"][rows]
            if not fresh.any():
                return
            rows, new, length = rows[fresh], torch.from_numpy(fresh), text.hidden.shape[1]
            a["text_hidden"][rows] = 0
            a["text_hidden"][rows, :length] = text.hidden[new].detach().to(torch.float16).cpu().numpy()
            a["text_valid"][rows] = False
            a["text_valid"][rows, :length] = text.valid[new].cpu().numpy()
            a["text_pool"][rows] = text.pool_index[new].cpu().numpy()
            a["vision_hidden"][rows] = vision.hidden[new].detach().to(torch.float16).cpu().numpy()
            a["filled"][rows] = True  # last: a row is valid only once its data are in

    def get(self, ids: list[str], dtype=torch.float32, device="cpu") -> tuple[TowerState, TowerState]:
        rows = self.rows(ids)
        a = self.arrays
        valid = torch.from_numpy(a["text_valid"][rows])
        length = max(1, int(valid.sum(1).max()))  # trim to the longest text, as batching would
        text = TowerState(
            torch.from_numpy(a["text_hidden"][rows, :length]).to(device, dtype),
            valid[:, :length].to(device),
            torch.from_numpy(a["text_pool"][rows]).to(device),
        )
        vision_hidden = torch.from_numpy(a["vision_hidden"][rows]).to(device, dtype)
        vision = TowerState(
            vision_hidden,
            torch.ones(vision_hidden.shape[:2], dtype=torch.bool, device=device),
            torch.zeros(len(rows), dtype=torch.long, device=device),
        )
        return text, vision

    def flush(self) -> None:
        for array in self.arrays.values():
            array.flush()

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.directory.iterdir() if f.is_file())


@dataclass(frozen=True)
class StorePlan:
    """Where one split's store lives and its shapes, known before anything is written."""

    directory: Path
    ids: list
    text_shape: tuple[int, int]
    vision_shape: tuple[int, int]

    @property
    def size_bytes(self) -> int:
        """What the store occupies when full: fp16 states, masks, pooling positions, flags."""
        (length, d_t), (tokens, d_v) = self.text_shape, self.vision_shape
        return len(self.ids) * (2 * length * d_t + length + 8 + 2 * tokens * d_v + 2)

    def bytes_to_write(self) -> int:
        """What filling it still adds to the disk (a store already on disk counts what it holds)."""
        held = sum(f.stat().st_blocks * 512 for f in self.directory.glob("*.npy")) if self.directory.is_dir() else 0
        return max(0, self.size_bytes - held)


def plan_store(root: Path, dataset, backbone, depths: tuple[int, int]) -> StorePlan:
    manifest = Path(dataset.data_dir) / f"{dataset.split}.jsonl"
    pre = dataset.preprocessor
    missing, left_out = dataset.missing_key(), dataset.left_out_key()
    preprocessing = (
        pre.description
        + repr(pre.image_transform)
        + (f"; missing {missing}" if missing else "")
        + (f"; left out {left_out}" if left_out else "")
    )
    key = cache_key(manifest, backbone, depths, preprocessing, pre.max_length)
    t = pre.image_transform
    height, width = t.crop or t.resize_to or (backbone.image_size, backbone.image_size)
    tokens = _vision_tokens(backbone, height, width)
    return StorePlan(
        Path(root) / key,
        [s.id for s in dataset.samples],
        (pre.max_length, backbone.text.width),
        (tokens, backbone.vision.width),
    )


DISK_MARGIN = 0.1  # keep this fraction of the store's size free on top of it
DISK_RESERVE = 256 * 2**20  # and this much besides


def check_disk(root: Path, needed: int, depths: tuple[int, int], free: int | None = None) -> None:
    """Refuse, before writing anything, a cache that would not fit the free disk (with a margin)."""

    if free is None:
        where = Path(root)
        while not where.exists():
            where = where.parent
        free = shutil.disk_usage(where).free
    if needed * (1 + DISK_MARGIN) + DISK_RESERVE > free:
        raise ConfigError(
            "train.cache_prefix",
            f"the prefix cache would need {needed / 2**30:.2f} GB under {root} "
            f"but only {free / 2**30:.2f} GB are free (with a margin). Ways out: a "
            f"smaller train.image_size, a deeper first interaction layer (the "
            f"prefix ends at text layer {depths[0]}, vision layer {depths[1]}), "
            "train.cache_dir on a larger disk, or train.cache_prefix: false",
        )


def _vision_tokens(backbone, height: int, width: int) -> int:
    """Sequence length of the vision tower for images of this size (one dummy image, no grad)."""
    param = next(backbone.vision.parameters())
    with torch.no_grad():
        state = backbone.vision.embed(
            pixel_values=torch.zeros(1, 3, height, width, dtype=param.dtype, device=param.device)
        )
    return state.hidden.shape[1]


class CachedSplit(torch.utils.data.Dataset):
    """A split whose prefix states are all cached: items are ids and labels, no image decoding."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        sample = self.dataset.samples[i]
        return {
            "id": sample.id,
            "label": self.dataset.encode_label(sample),
            "modality_mask": torch.from_numpy(self.dataset.modality_mask[i].copy()),
        }

    @staticmethod
    def collate(items: list[dict]) -> dict:
        return {
            "ids": [x["id"] for x in items],
            "labels": torch.stack([x["label"] for x in items]),
            "modality_mask": torch.stack([x["modality_mask"] for x in items]),
        }


class PrefixCache:
    """A run's view of its prefix stores: which loader to read, and what inputs to give the model.

    Without stores (caching off, or a method with no frozen prefix) it is the identity: the
    given loader, the batch's own model inputs. With stores, each split's first pass fills the
    rows of its batches (each process its own), and once every process sees a split complete,
    ``loader`` returns a loader of ids and labels only.
    """

    def __init__(
        self, stores: dict[str, PrefixStore], datasets: dict, accelerator, batch_sizes: dict[str, int], seed: int
    ):
        self.stores = stores
        self.datasets = datasets
        self.accelerator = accelerator
        self.batch_sizes = batch_sizes
        self.seed = seed
        self._cached_loaders: dict = {}

    @classmethod
    def open(cls, config, parts, accelerator, batch_sizes: dict[str, int], log=print) -> PrefixCache:
        """The stores of every split when ``train.cache_prefix`` is on and the method has a frozen prefix."""
        stores = {}
        depths = parts.model.frozen_prefix()
        if config.train.cache_prefix and depths is None:
            log(f"train.cache_prefix: {config.method} trains its whole backbone; nothing to cache")
        elif config.train.cache_prefix:
            root = Path(config.train.cache_dir) if config.train.cache_dir else default_root()
            plans = {split: plan_store(root, ds, parts.backbone, depths) for split, ds in parts.datasets.items()}
            check_disk(root, sum(plan.bytes_to_write() for plan in plans.values()), depths)
            # Processes share one store per split; the first creates the files, the others open them.
            with accelerator.main_process_first():
                stores = {
                    split: PrefixStore(p.directory, p.ids, p.text_shape, p.vision_shape) for split, p in plans.items()
                }
            size = sum(store.disk_bytes() for store in stores.values()) / 2**20
            log(
                f"prefix cache (text layers < {depths[0]}, vision layers < {depths[1]}): {size:.1f} MB when full, "
                f"under {root}; safe to delete at any time"
            )
        return cls(stores, parts.datasets, accelerator, batch_sizes, config.seed)

    def feed(self, split: str, loader, encoder, labels: bool = True) -> SplitFeed:
        """One pass over ``split`` as ``(batch, model inputs)`` pairs (see :class:`SplitFeed`)."""
        return SplitFeed(self, split, self.loader(split, loader), encoder, labels)

    def loader(self, split: str, loader):
        """``loader``, or once the split's store is complete everywhere, its cached loader (built once)."""
        store = self.stores.get(split)
        if store is None or not self._complete(store):
            return loader
        if split not in self._cached_loaders:
            cached = make_dataloader(
                CachedSplit(self.datasets[split]),
                self.batch_sizes[split],
                shuffle=split == "train",
                seed=self.seed,
            )
            self._cached_loaders[split] = self.accelerator.prepare(cached)
        return self._cached_loaders[split]

    def inputs(self, batch: dict, split: str, encoder, labels: bool = True) -> dict:
        """Keyword arguments for the model: the batch's own inputs, or its cached prefix states (rows still
        missing are computed with ``encoder.encode_prefix`` and stored first)."""

        store = self.stores.get(split)
        if store is None:
            inputs = model_inputs(batch)
            if not labels:
                inputs.pop("labels", None)
            return inputs
        ids = batch["ids"]
        if not store.has(ids):
            raw = {k: v for k, v in model_inputs(batch).items() if k not in ("labels", "modality_mask")}
            store.put(ids, *encoder.encode_prefix(**raw))
        prefix = store.get(ids, device=self.accelerator.device)  # fp16-rounded, as every later epoch sees it
        return {
            "prefix": prefix,
            "labels": batch["labels"] if labels else None,
            "modality_mask": batch.get("modality_mask"),
        }

    def flush(self) -> None:
        for store in self.stores.values():
            store.flush()

    def _complete(self, store: PrefixStore) -> bool:
        """Whether every process sees the store complete (they fill disjoint rows; all must agree)."""
        store.flush()
        self.accelerator.wait_for_everyone()
        done = torch.tensor(float(store.complete), device=self.accelerator.device)
        return bool(self.accelerator.reduce(done, reduction="sum").item() == self.accelerator.num_processes)


class SplitFeed:
    """One pass over a split as the model takes it: ``(batch, model inputs)`` pairs.

    Which loader runs (the raw one until the split's store is complete on every process, then the
    cached one) and filling the store with the states of new rows are the feed's business; the
    trainer only iterates it and calls the model. Without a cache the inputs are the batch's own.
    """

    def __init__(self, cache: PrefixCache, split: str, loader, encoder, labels: bool = True):
        self.cache, self.split, self.loader, self.encoder, self.labels = cache, split, loader, encoder, labels

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        return self.iterate()

    def iterate(self, start: int = 0):
        """The pairs from batch ``start`` on (a resumed epoch)."""
        loader = self.cache.accelerator.skip_first_batches(self.loader, start) if start else self.loader
        for batch in loader:
            yield batch, self.inputs(batch)

    def inputs(self, batch: dict) -> dict:
        return self.cache.inputs(batch, self.split, self.encoder, labels=self.labels)
