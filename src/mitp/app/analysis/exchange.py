"""How much a trained method's towers read each other: the cross-modal influence.

For each sample of a split, the image is replaced by another sample's (the batch rolled by one) and
the change of the *text* tower's pooled embedding is measured, ``||t(x, y') - t(x, y)|| / ||t(x, y)||``;
likewise the image embedding when the text is replaced. Towers that never meet (late fusion, deep
prompts, MITP with ``hub: none``) give exactly 0; an exchange that carries information gives more.
Beside it: how far the prompt gates opened (mean |tanh g| per tower), since what crosses between the
towers reaches the tokens only through them.
"""

from __future__ import annotations

import statistics

import torch

from mitp.data.dataset import model_inputs

from ..train.finished import load_run, split_dataset


@torch.no_grad()
def cross_modal_influence(run_dir, split: str = "val", samples: int = 256, batch_size: int = 32) -> dict:
    loaded = load_run(run_dir)
    model = loaded.model.eval()
    dataset = split_dataset(loaded, split)
    indices = list(range(min(samples, len(dataset))))
    moved = {"text_when_image_swapped": [], "image_when_text_swapped": []}
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start : start + batch_size]]
        items = [item for item in items if isinstance(item, dict)]
        if len(items) < 2:
            continue
        inputs = {k: v for k, v in model_inputs(dataset.collate(items)).items() if k != "labels"}
        base = model.forward_features(**inputs)
        rolled_image = model.forward_features(**{**inputs, "pixel_values": inputs["pixel_values"].roll(1, 0)})
        rolled_text = model.forward_features(
            **{
                **inputs,
                "input_ids": inputs["input_ids"].roll(1, 0),
                "attention_mask": inputs["attention_mask"].roll(1, 0),
            }
        )
        for key, part, changed in (
            ("text_when_image_swapped", "text", rolled_image),
            ("image_when_text_swapped", "image", rolled_text),
        ):
            delta = (changed[part] - base[part]).norm(dim=-1) / base[part].norm(dim=-1).clamp_min(1e-12)
            moved[key] += delta.tolist()
    gates = {}
    for tower in ("text", "vision"):
        g = getattr(model, f"{tower}_gates", None)
        if isinstance(g, torch.Tensor):
            gates[tower] = [round(v, 5) for v in torch.tanh(g).abs().mean(1).tolist()]
    return {
        "run": str(run_dir),
        "method": model.config.method,
        "split": split,
        "samples": len(moved["text_when_image_swapped"]),
        **{key: {"mean": statistics.fmean(v), "max": max(v)} if v else None for key, v in moved.items()},
        "gate_opening": gates,
    }


__all__ = ["cross_modal_influence"]
