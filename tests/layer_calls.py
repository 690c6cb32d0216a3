"""One recorder for what the towers' layers see: every test that hooks layers uses it."""

import torch

TOWERS = ("text", "vision")


def record_layer_calls(backbone, run) -> dict:
    """Run ``run()`` and return, per (tower, layer index), one entry per call of that layer:
    {"input": layer input (extra tokens included), "output": its output, "grad": grad mode}."""
    calls = {}

    def hook(module, args, output, key):
        out = output[0] if isinstance(output, tuple) else output
        calls.setdefault(key, []).append(
            {"input": args[0].detach(), "output": out.detach(), "grad": torch.is_grad_enabled()}
        )

    hooks = [
        layer.register_forward_hook(lambda m, a, o, key=(tower, idx): hook(m, a, o, key))
        for tower in TOWERS
        for idx, layer in enumerate(getattr(backbone, tower).layers)
    ]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return calls


def grad_enabled_per_layer(backbone, run) -> dict:
    """(tower, layer) -> whether its first call built a graph."""
    return {key: entries[0]["grad"] for key, entries in record_layer_calls(backbone, run).items()}


def last_layer_outputs(model, batch) -> dict:
    """Each tower's last-layer output (its last call), under no_grad."""
    with torch.no_grad():
        calls = record_layer_calls(model.backbone, lambda: model(**batch))
    return {tower: calls[(tower, len(getattr(model.backbone, tower).layers) - 1)][-1]["output"] for tower in TOWERS}
