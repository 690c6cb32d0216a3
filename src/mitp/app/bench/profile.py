"""`mitp bench profile`: where a training step's time goes, by operator (torch.profiler), per method.

Each method takes warm-up steps, then ``steps`` profiled ones on the same random batch; the table
lists the operators with the most self CPU time, so two methods' steps can be read side by side.
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from mitp.backbones import build_backbone
from mitp.markdown import table
from mitp.methods import build_model, make_config

from ..train.setup import make_optimizer
from ..train.step import train_step
from .settings import parse_method_spec


def profile_step(
    backbone: str,
    method: str,
    batch_size: int = 8,
    seq_len: int = 32,
    steps: int = 2,
    warmup: int = 1,
    top: int = 12,
    num_classes: int = 10,
    threads: int | None = None,
) -> dict:
    """The ``top`` operators by self CPU time over ``steps`` training steps of ``method`` (a setting as
    NAME[key=value;...]); ``threads``: torch's threads in this process (None: as they are)."""
    if threads:
        torch.set_num_threads(threads)
    backbone = build_backbone(backbone)
    torch.manual_seed(0)
    name, overrides = parse_method_spec(method)
    model = build_model(make_config(name, num_classes=num_classes, **overrides), backbone)
    generator = torch.Generator().manual_seed(0)
    inputs = {
        **backbone.random_batch(batch_size, seq_len, generator=generator),
        "labels": torch.randint(0, num_classes, (batch_size,), generator=generator),
    }
    optimizer = make_optimizer(model, 1e-3, 0.01)
    model.train()
    for _ in range(warmup):
        train_step(model, inputs, optimizer, max_grad_norm=1.0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            train_step(model, inputs, optimizer, max_grad_norm=1.0)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return {
        "method": method,
        "backbone": backbone.spec,
        "steps": steps,
        "step_ms": total / 1000 / steps,
        "ops": [
            {
                "op": e.key,
                "self_ms_per_step": e.self_cpu_time_total / 1000 / steps,
                "share": e.self_cpu_time_total / total,
                "calls_per_step": e.count / steps,
            }
            for e in events[:top]
        ],
    }


def render(profiles: list[dict]) -> str:
    header = ("operator", "self ms / step", "share", "calls / step")
    return "\n".join(
        f"{p['method']} on {p['backbone']}: {p['step_ms']:.0f} ms of operator CPU time per step\n\n"
        + table(
            header,
            [
                (
                    f"`{o['op']}`",
                    f"{o['self_ms_per_step']:.1f}",
                    f"{100 * o['share']:.1f}%",
                    f"{o['calls_per_step']:.0f}",
                )
                for o in p["ops"]
            ],
        )
        for p in profiles
    )
