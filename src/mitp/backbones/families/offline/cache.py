"""The cache of converted backbones: convert once, verify, rename into place; report readiness."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .convert import convert_dinov2_onnx, verify_against_onnx
from .specs import (
    DEFAULT_ATOL,
    MARKER,
    OFFLINE_SPECS,
    OfflineBackboneError,
    OfflineSpec,
    cache_root,
    dist_version,
    minilm_dir,
    onnx_path_of,
    spec_of,
)


def _fingerprint(onnx_path: Path, spec: OfflineSpec | None) -> dict:
    """What the conversion depends on. A wheel's graph is named by its distribution and version, not by
    where it is installed: every environment with the same wheel shares one conversion (two venvs on one
    machine would otherwise reconvert the shared cache back and forth). A graph given by path is its path."""
    if spec is None:
        return {"onnx": str(onnx_path), "onnx_bytes": onnx_path.stat().st_size}
    return {
        "onnx_bytes": onnx_path.stat().st_size,
        "image_dist": spec.image_dist,
        "image_version": dist_version(spec.image_dist),
    }


def _read_marker(target: Path) -> dict | None:
    try:
        return json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _ready(target: Path, fingerprint: dict) -> bool:
    marker = _read_marker(target)
    return marker is not None and marker.get("source") == fingerprint and (target / "vision" / "config.json").is_file()


def _clean_stale_temps(root: Path, name: str) -> None:
    """Remove temp dirs left by conversions whose process died (a hard crash or kill)."""
    if os.name != "posix":  # os.kill(pid, 0) only probes a process on POSIX
        return
    for tmp in root.glob(f".{name}.tmp-*"):
        try:
            pid = int(tmp.name.split(".tmp-")[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def _umask_permissions(root: Path) -> None:
    """mkdtemp makes 0700 dirs (and transformers writes 0600 weights); give the cache the usual modes."""
    mask = os.umask(0)
    os.umask(mask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def ensure_offline_backbone(
    name: str = "dinov2s-minilm",
    *,
    onnx_path=None,
    text_dir=None,
    cache_dir=None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, Path]:
    """Return ``(text_dir, vision_dir)`` of an offline backbone, converting the image encoder once.

    The converted checkpoint lives in ``<cache>/<name>/vision`` (cache: ``cache_dir``, else
    ``$MITP_CACHE``, else ``~/.cache/mitp``). Conversion happens in a temporary sibling
    directory that is renamed into place only after verification, so an interrupted run
    never leaves a half-written cache. ``onnx_path`` / ``text_dir`` override the wheels
    (tests, custom graphs).
    """
    spec = spec_of(name)
    say = progress or (lambda _msg: None)
    text = Path(text_dir) if text_dir is not None else minilm_dir(spec.name)
    source = Path(onnx_path) if onnx_path is not None else onnx_path_of(spec)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = root / spec.name
    fingerprint = _fingerprint(source, spec if onnx_path is None else None)
    if _ready(target, fingerprint):
        return text, target / "vision"

    root.mkdir(parents=True, exist_ok=True)
    _clean_stale_temps(root, spec.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-{os.getpid()}-", dir=root))
    try:
        say(f"converting the image encoder of {spec.spec} from {source} (once; cached in {target})")
        start = time.perf_counter()
        convert_dinov2_onnx(source, tmp / "vision")
        seconds = time.perf_counter() - start
        say("verifying the converted model against onnxruntime")
        diff = verify_against_onnx(source, tmp / "vision")
        import torch
        import transformers

        marker = {
            "spec": spec.spec,
            "source": fingerprint,
            "onnx_file": str(source),
            "text_dir": str(text),
            "text_dist": spec.text_dist,
            "text_version": dist_version(spec.text_dist),
            "max_abs_diff": diff,
            "atol": DEFAULT_ATOL,
            "convert_seconds": round(seconds, 2),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _umask_permissions(tmp)
        if target.exists():  # stale (other source version) or half-broken: move aside, then replace
            old = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-{os.getpid()}-old-", dir=root))
            try:
                os.replace(target, old / "old")
            except OSError:
                pass
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _ready(target, fingerprint):  # lost a race to another process: use its result if good
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        say(f"ready: {target / 'vision'} (max abs diff vs onnxruntime {diff:.2e})")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return text, target / "vision"


def offline_status() -> dict:
    """For each offline spec: wheels installed (and versions)? converted and cached? where?"""
    out = {}
    for spec in OFFLINE_SPECS.values():
        target = cache_root() / spec.name
        image_version, text_version = dist_version(spec.image_dist), dist_version(spec.text_dist)
        try:
            onnx_file = onnx_path_of(spec)
        except OfflineBackboneError:
            onnx_file = None
        try:
            text = minilm_dir(spec.name)
        except OfflineBackboneError:
            text = None
        converted = onnx_file is not None and _ready(target, _fingerprint(onnx_file, spec))
        marker = _read_marker(target) if converted else None
        out[spec.spec] = {
            "description": spec.description,
            "installed": onnx_file is not None and text is not None,
            "wheels": {spec.image_dist: image_version, spec.text_dist: text_version},
            "converter": {m: importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime")},
            "converted": converted,
            "ready": converted and text is not None,
            "path": str(target),
            "vision_dir": str(target / "vision") if converted else None,
            "text_dir": str(text) if text else None,
            "max_abs_diff": marker.get("max_abs_diff") if marker else None,
            "install": spec.install_hint,
        }
    return out
