"""Parameter counts of a built model, broken down by component."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .backbones import build_backbone, is_builtin
from .methods import build_model, make_config


def component_of(name: str) -> str:
    """``hub.vision_proj.weight`` -> ``hub.vision_proj``; ``head.1.bias`` -> ``head``."""
    parts = name.split(".")[:-1] or name.split(".")
    if len(parts) >= 2 and not parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0]


def parameter_breakdown(model: nn.Module) -> dict:
    """Counts per component plus totals, as a JSON-ready dict."""
    rows: OrderedDict[str, dict] = OrderedDict()
    for name, param in model.named_parameters():
        row = rows.setdefault(component_of(name), {"component": component_of(name), "trainable": 0, "total": 0})
        row["total"] += param.numel()
        if param.requires_grad:
            row["trainable"] += param.numel()
    trainable = sum(r["trainable"] for r in rows.values())
    total = sum(r["total"] for r in rows.values())
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100.0 * trainable / total if total else 0.0,
        "components": list(rows.values()),
    }


def render_breakdown(breakdown: dict, title: str = "Parameters"):
    """A rich Table of the breakdown."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    table.add_column("component")
    table.add_column("trainable", justify="right")
    table.add_column("total", justify="right")
    for row in breakdown["components"]:
        table.add_row(row["component"], f"{row['trainable']:,}", f"{row['total']:,}")
    table.add_section()
    table.add_row("all", f"{breakdown['trainable_params']:,}", f"{breakdown['total_params']:,}", style="bold")
    return table


def count_parameters(method: str, backbone: str, num_classes: int, overrides: dict | None = None):
    """(validated method config, breakdown) of ``method`` on ``backbone``; built-in shapes are counted on the
    meta device, so no weights are allocated."""
    config = make_config(method, **{"num_classes": num_classes, **(overrides or {})})
    model = build_model(config, build_backbone(backbone, device="meta" if is_builtin(backbone) else None))
    return config, parameter_breakdown(model)
