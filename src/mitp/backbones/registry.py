"""Backbone families register the specs they build; ``build_backbone`` asks the registry.

A family registers a builder for an exact spec (``tiny-clip``), a prefix ending in ``:``
(``shape:``, ``pair:``, ``offline:``), or ``*`` (anything else: a hub id or local directory).
``is_builtin(spec)`` is the one answer to "is this spec built in-process from a recipe, with no
weights to read?" (then it can be built on the meta device).
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from .base import Backbone, BackboneError


@dataclass(frozen=True)
class BackboneFamily:
    pattern: str  # exact spec, prefix ending in ":", or "*"
    build: Callable[..., Backbone]  # build(spec, device=None) -> Backbone
    description: str
    display: str = ""  # how `mitp backbones` shows a pattern (default: the pattern)
    specs: tuple[str, ...] = ()  # concrete specs a prefix family knows (listed, and built in if builtin)
    builtin: bool = False  # built in-process from a recipe: no weights read, meta device works
    status: Callable[[], dict] | None = field(default=None, compare=False)  # spec -> readiness (offline families)

    def known_specs(self) -> tuple[str, ...]:
        if self.specs:
            return self.specs
        return (self.pattern,) if self.pattern != "*" and not self.pattern.endswith(":") else ()


_FAMILIES: dict[str, BackboneFamily] = {}


def register_backbone(
    pattern: str,
    *,
    description: str,
    display: str = "",
    specs: tuple[str, ...] = (),
    builtin: bool = False,
    status: Callable[[], dict] | None = None,
):
    """Decorator: ``build(spec, device=None) -> Backbone`` builds the specs ``pattern`` matches."""

    def decorate(build):
        if pattern in _FAMILIES and _FAMILIES[pattern].build is not build:
            raise ValueError(f"backbone pattern {pattern!r} is already registered")
        _FAMILIES[pattern] = BackboneFamily(pattern, build, description, display, tuple(specs), builtin, status)
        return build

    return decorate


def registered_backbones() -> list[BackboneFamily]:
    return list(_FAMILIES.values())


def family_of(spec: str) -> BackboneFamily:
    """The family that builds ``spec``: an exact match, else the longest matching prefix, else ``*``."""
    if spec in _FAMILIES:
        return _FAMILIES[spec]
    prefixes = [p for p in _FAMILIES if p.endswith(":") and spec.startswith(p)]
    if prefixes:
        return _FAMILIES[max(prefixes, key=len)]
    if "*" in _FAMILIES:
        return _FAMILIES["*"]
    raise BackboneError(f"no backbone family builds {spec!r}; known: {', '.join(builtin_specs())}")


def is_builtin(spec: str) -> bool:
    """Whether ``spec`` is built in-process from the package's own recipe (no download, no weights)."""
    return spec in builtin_specs()


def builtin_specs() -> list[str]:
    return [spec for family in _FAMILIES.values() if family.builtin for spec in family.known_specs()]


def known_specs() -> list[str]:
    """Every concrete spec a family names (for suggestions on a typo)."""
    return [spec for family in _FAMILIES.values() for spec in family.known_specs()]


def _hub_reachable(timeout: float = 2.0) -> bool:
    """False when HF_HUB_OFFLINE is set or huggingface.co cannot be reached within ``timeout``."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _in_hub_cache(source: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(source, "config.json"), str)
    except Exception:  # not a valid repo id, or no huggingface_hub: not cached
        return False


def _check_resolvable(source: str, what: str) -> None:
    """Fail in seconds, naming the known specs, where the hub would otherwise be retried for long."""
    if os.path.isdir(source) or _in_hub_cache(source) or _hub_reachable():
        return
    known = sorted(known_specs())
    close = difflib.get_close_matches(source, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise BackboneError(
        f"{what} {source!r} is not a local directory, not in the Hugging Face cache, and the hub "
        f"cannot be reached (offline){hint} Built-in specs: {', '.join(known)}; or pass a local "
        "checkpoint directory"
    )


SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def require_safetensors(folder: str, what: str = "model folder") -> None:
    """A local model folder must hold its weights as safetensors: a pickle (``pytorch_model.bin``) runs code
    when it is loaded, so mitp never loads one, and says so before transformers looks."""
    if not os.path.isdir(folder) or any(os.path.isfile(os.path.join(folder, name)) for name in SAFE_WEIGHTS):
        return
    pickles = sorted(name for name in os.listdir(folder) if name.endswith((".bin", ".pt", ".pth", ".ckpt")))
    found = f"it has only {', '.join(pickles)}, a pickle that can run code when loaded" if pickles else "not found"
    raise BackboneError(
        f"{folder}: the {what} needs model.safetensors ({found}); mitp reads weights only from safetensors: "
        "re-save the model with save_pretrained from a copy you trust (transformers writes model.safetensors)"
    )


def from_pretrained_safe(model_class, source: str, what: str = "model folder"):
    """``model_class.from_pretrained(source, use_safetensors=True)``, a local folder without safetensors
    weights refused first (:func:`require_safetensors`)."""
    require_safetensors(source, what)
    return model_class.from_pretrained(source, use_safetensors=True)


def load_pretrained(source: str, what: str):
    from transformers import AutoModel

    _check_resolvable(source, what)
    require_safetensors(source, what)
    try:
        return AutoModel.from_pretrained(source, use_safetensors=True)
    except Exception as err:  # network, missing files, unknown architecture
        hint = "" if os.path.isdir(source) else " (no hub access? pass a local checkpoint directory)"
        raise BackboneError(f"could not load {what} {source!r}{hint}: {err}") from err
