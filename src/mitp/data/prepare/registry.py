"""Converters register themselves: the kind, the convert function, and the options it takes.

``mitp prepare`` builds one sub-command per registered kind from this (its ``--help`` lists
them), so adding a converter is one new module in ``data/prepare/`` with one
:func:`register_converter` call (docs/guides/adding-a-converter.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from .common import staging


@dataclass(frozen=True)
class Option:
    """One command-line option of a converter: ``argparse`` flags and keyword arguments; its ``dest``
    is the keyword the convert function takes."""

    flags: tuple[str, ...]
    kwargs: dict = field(default_factory=dict, hash=False)

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[0].lstrip("-").replace("-", "_")


def option(*flags: str, **kwargs) -> Option:
    return Option(tuple(flags), kwargs)


def drawing_options(
    sizes: dict[str, int], image_size: int, images: str = "images", train_note: str = ""
) -> tuple[Option, ...]:
    """The options of a converter that draws its samples: ``--train-size``, ``--val-size`` and ``--test-size``
    (None: the default in ``sizes``; ``train_note`` follows the training help), ``--image-size`` (the side of
    its square ``images``) and ``--seed``."""
    what = {"train": "training samples" + train_note, "val": "validation samples", "test": "test samples"}
    return (
        *(
            option(f"--{split}-size", type=int, default=None, metavar="N", help=f"{what[split]}; default {n}")
            for split, n in sizes.items()
        ),
        option(
            "--image-size",
            type=int,
            default=image_size,
            metavar="PX",
            help=f"side of the square {images} in pixels; default {image_size}",
        ),
        option("--seed", type=int, default=0, help="seed of everything sampled (default 0)"),
    )


def carving_options(splits: tuple[str, ...] = ("val", "test"), when: str | dict[str, str] = "") -> tuple[Option, ...]:
    """``--val-fraction`` and ``--test-fraction`` of a converter that carves those ``splits`` (``when`` says when
    it does, for all or per split), and ``--seed``."""
    when = when if isinstance(when, dict) else dict.fromkeys(splits, when)
    return (
        *(
            option(
                f"--{split}-fraction",
                type=float,
                default=0.1,
                help=f"fraction carved for {split}{when[split]} (default 0.1)",
            )
            for split in splits
        ),
        option("--seed", type=int, default=0, help="seed of the carved splits (default 0)"),
    )


def column_options(ids: str) -> tuple[Option, ...]:
    """``--image-column``, ``--text-column``, ``--label-column`` and ``--id-column`` of a converter that reads a
    table; ``ids`` says what stands in for ids when there is no id column."""
    return (
        *(
            option(f"--{name}-column", default=name, help=f"the {name} column (default: {name})")
            for name in ("image", "text", "label")
        ),
        option("--id-column", default=None, help=f"a column of unique ids (default: {ids})"),
    )


@dataclass(frozen=True)
class Converter:
    kind: str
    convert: Callable  # convert(raw, out, *, <options>, track) -> Conversion
    help: str
    raw_help: str
    raw_default: str | None = None  # None: --raw is required
    options: tuple[Option, ...] = ()
    raw_positional: bool = False  # the raw source is the first positional argument (SOURCE), not --raw


_CONVERTERS: dict[str, Converter] = {}


def register_converter(
    kind: str,
    *,
    help: str,
    raw_help: str = "raw dataset directory",
    raw_default: str | None = None,
    options: tuple[Option, ...] = (),
    raw_positional: bool = False,
):
    """Decorator: ``convert(raw, out, *, <options>, track)`` converts raw datasets of ``kind``.

    What it returns (and registers) converts into a staging folder (:func:`~.common.staging`): ``out`` gets the
    new dataset whole, or stays as it was."""

    def decorate(convert):
        if kind in _CONVERTERS and _CONVERTERS[kind].convert.__wrapped__ is not convert:
            raise ValueError(f"converter {kind!r} is already registered")

        @functools.wraps(convert)
        def staged(raw, out, *args, **kwargs):
            with staging(out) as stage:
                return convert(raw, stage, *args, **kwargs)

        _CONVERTERS[kind] = Converter(kind, staged, help, raw_help, raw_default, tuple(options), raw_positional)
        return staged

    return decorate


def converters() -> dict[str, Converter]:
    return dict(_CONVERTERS)


def get_converter(kind: str) -> Converter:
    if kind not in _CONVERTERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(sorted(_CONVERTERS))}")
    return _CONVERTERS[kind]
