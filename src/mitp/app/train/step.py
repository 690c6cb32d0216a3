"""One training step, as `mitp train` and `mitp bench` both take it."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mitp.params import component_of


def clip_gradients(optimizer, max_norm: float, scope: str, clip=torch.nn.utils.clip_grad_norm_) -> None:
    """Clip to ``max_norm`` over all trainable tensors (global) or per optimizer group (per_group)."""
    groups = [group["params"] for group in optimizer.param_groups]
    for params in ([p for group in groups for p in group],) if scope == "global" else groups:
        clip(params, max_norm)


def gradient_norms(model) -> dict[str, float]:
    """L2 norm of the gradient per component (``text_prompt``, ``hub.vision_proj``, ``head.classifier``, ...)."""
    squares: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if param.grad is not None:
            key = f"grad_norm/{component_of(name)}"
            squares[key] = squares.get(key, 0.0) + param.grad.detach().float().pow(2).sum()
    return {key: value.sqrt().item() for key, value in squares.items()}


def train_step(
    model,
    inputs: dict,
    optimizer,
    scheduler=None,
    *,
    max_grad_norm: float | None = None,
    clip_scope: str = "per_group",
    sync: bool = True,
    backward: Callable | None = None,
    clip: Callable = torch.nn.utils.clip_grad_norm_,
    before_clip: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Forward, backward, clip, optimizer and scheduler step, zero the gradients; returns the loss.

    ``sync`` is False on the accumulation steps between optimizer updates (then nothing is
    clipped; Accelerate's optimizer and scheduler skip those steps themselves); ``backward`` and
    ``clip`` are Accelerate's where it runs the step; ``before_clip`` sees the raw gradients.
    """
    loss = model(**inputs).loss
    (backward or torch.Tensor.backward)(loss)
    if sync:
        if before_clip is not None:
            before_clip()
        if max_grad_norm is not None:
            clip_gradients(optimizer, max_grad_norm, clip_scope, clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad()
    return loss.detach()
