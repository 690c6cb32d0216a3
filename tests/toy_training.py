"""A few optimizer steps on the generated two-modality task (shared by method tests)."""

import math

import torch

from mitp.synthetic import NUM_CLASSES, toy_batch


def toy_losses(model, backbone, optimizer, steps: int = 30, batch_size: int = 32) -> list[float]:
    model.train()
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        loss = model(**toy_batch(backbone, batch_size, generator=generator)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def assert_loss_falls(losses: list[float]) -> None:
    assert losses[0] > math.log(NUM_CLASSES) - 0.3, "starts near chance"
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5, "falls by a quarter"


def assert_uses_both_modalities(model, backbone) -> None:
    """Held-out accuracy well above 0.5: the label is 2 * image_bit + text_bit, so a model that reads one
    modality alone can be right on at most half of the samples."""
    model.eval()
    with torch.no_grad():
        held_out = toy_batch(backbone, 256, generator=torch.Generator().manual_seed(1))
        accuracy = (model(**held_out).logits.argmax(-1) == held_out["labels"]).float().mean().item()
    assert accuracy > 0.75, f"held-out accuracy {accuracy:.3f}: one modality alone reaches at most 0.5"


def labelled_batch(backbone, task: str = "single_label") -> dict:
    """Four random, well-formed samples with labels for ``task`` (4 classes)."""
    batch = backbone.random_batch(4, 10, torch.Generator().manual_seed(0))
    if task == "multi_label":
        batch["labels"] = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]]).float()
    else:
        batch["labels"] = torch.tensor([0, 1, 2, 3])
    return batch
