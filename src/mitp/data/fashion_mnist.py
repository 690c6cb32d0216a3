"""Fashion-MNIST from its standard idx files (Debian's ``dataset-fashion-mnist``), for the converters
built on its photos (fashion-ve, fashion-cues)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from .errors import BadRecord, MissingFile, UnknownLabel

DEFAULT_RAW = "/usr/share/datasets/fashion-mnist"  # Debian/Ubuntu package dataset-fashion-mnist
DEFAULT_SIZES = {"train": 1500, "val": 300, "test": 600}  # samples per split the converters draw
# Fashion-MNIST's class names, in the order of its label values 0..9.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_FILES = {  # key -> standard file name (also accepted: '.idx' instead of '-idx', and '.gz')
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
INSTALL_HINT = (
    "install Debian's package with `apt-get install dataset-fashion-mnist` (as root; it puts the "
    f"files in {DEFAULT_RAW}) or pass --raw DIR holding the standard Fashion-MNIST idx files "
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
    "(each optionally .gz)"
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file (``.gz`` or plain) of unsigned bytes as a NumPy array; raises BadRecord if malformed."""
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise BadRecord(path, None, f"cannot read idx file: {err}") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise BadRecord(path, None, "not an idx file (the first two bytes must be zero)")
    if data[2] != 0x08:
        raise BadRecord(path, None, f"idx data type 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(data) < header:
        raise BadRecord(path, None, f"truncated idx header ({ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise BadRecord(
            path, None, f"idx payload has {len(data) - header:,} bytes, dimensions {dims} need {expected:,}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_idx(raw: Path, stem: str) -> Path:
    """The file of ``stem`` in ``raw``: plain or ``.gz``, with ``-idx`` or ``.idx``; MissingFile if none."""
    names = [stem, stem.replace("-idx", ".idx")]
    for name in names:
        for candidate in (raw / name, raw / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise MissingFile(raw / f"{stem}.gz", None, f"Fashion-MNIST file {stem}[.gz] not found in {raw}; {INSTALL_HINT}")


def split_sizes(train: int | None, val: int | None, test: int | None) -> dict[str, int]:
    """Samples per split a converter draws: the ones given, :data:`DEFAULT_SIZES` for the ones left None."""
    return {split: DEFAULT_SIZES[split] if n is None else n for split, n in zip(DEFAULT_SIZES, (train, val, test))}


def load_fashion_mnist(raw: str | os.PathLike | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images (N,H,W) uint8, labels (N,) uint8), "test": (...)}`` from the idx files."""
    raw = Path(raw if raw is not None else DEFAULT_RAW)
    if not raw.is_dir():
        raise MissingFile(raw, None, f"Fashion-MNIST directory not found; {INSTALL_HINT}")
    paths = {key: find_idx(raw, stem) for key, stem in IDX_FILES.items()}  # all present before reading any
    out = {}
    for split in ("train", "test"):
        images, labels = read_idx(paths[f"{split}_images"]), read_idx(paths[f"{split}_labels"])
        if images.ndim != 3:
            raise BadRecord(paths[f"{split}_images"], None, f"expected N x H x W images, got shape {images.shape}")
        if labels.ndim != 1:
            raise BadRecord(paths[f"{split}_labels"], None, f"expected a vector of labels, got shape {labels.shape}")
        if len(images) != len(labels):
            raise BadRecord(
                paths[f"{split}_labels"],
                None,
                f"{len(labels):,} labels for {len(images):,} images in {paths[f'{split}_images'].name}",
            )
        bad = np.flatnonzero(labels >= len(FASHION_MNIST_CLASSES))
        if len(bad):
            raise UnknownLabel(
                paths[f"{split}_labels"],
                None,
                f"label value {labels[bad[0]]} at index {bad[0]} is not a Fashion-MNIST class (0-9)",
            )
        out[split] = (images, labels)
    return out


__all__ = [
    "DEFAULT_RAW",
    "DEFAULT_SIZES",
    "FASHION_MNIST_CLASSES",
    "IDX_FILES",
    "find_idx",
    "load_fashion_mnist",
    "read_idx",
    "split_sizes",
]
