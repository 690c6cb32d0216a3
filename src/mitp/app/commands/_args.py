"""Argument types the commands share (argparse ``type=``): a bad value is a usage error naming the flag."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (a batch size, a count)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (a width, a number of seconds)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def positive_int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers >= 1, e.g. batch sizes ``1,16``."""
    try:
        values = tuple(positive_int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 1, got {text!r}") from None
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"lists a value twice: {text!r}")
    return values


def port_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 1-65535, got {value}")
    return value


def picked(args: argparse.Namespace, names: str) -> dict:
    """The options ``names`` (space-separated) of a parsed command line, as keyword arguments."""
    return {name: getattr(args, name) for name in names.split()}


def add_overrides(p: argparse.ArgumentParser, help: str = "override a config key (repeatable)") -> None:
    """``--set KEY=VALUE`` (repeatable), into ``args.overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_methods(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", default="", help="comma-separated (default: every registered method)")


def add_runtime(p: argparse.ArgumentParser) -> None:
    """``--runtime torch|onnx`` and ``--quantized``: how a model folder is loaded."""
    p.add_argument(
        "--runtime",
        choices=("torch", "onnx"),
        default="torch",
        help="PyTorch, or onnxruntime on a folder written by `mitp export --onnx` (no torch needed)",
    )
    p.add_argument("--quantized", action="store_true", help="with --runtime onnx: the int8 graph")


__all__ = [
    "add_methods",
    "add_overrides",
    "add_runtime",
    "non_negative_int",
    "picked",
    "port_number",
    "positive_float",
    "positive_int",
    "positive_int_list",
]
