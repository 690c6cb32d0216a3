"""Full fine-tuning: every tower parameter trains, with the late-fusion head on top.

The accuracy ceiling and the memory/speed cost reference. The backbone stays in eval
mode like everywhere else (``Backbone.train`` ignores the mode): CLIP has no dropout
anyway, and keeping it off for BERT/ViT towers too means the only difference from
late fusion is which parameters train.
"""

from __future__ import annotations

from ..embedding import EmbeddingClassifier
from .config import FullFinetuneConfig


class FullFinetune(EmbeddingClassifier):
    """Late fusion with the towers trainable; the towers get a scaled-down learning rate."""

    config: FullFinetuneConfig
    trains_backbone = True  # the base class sets requires_grad on the backbone from this

    def param_groups(self, lr: float, method_lr_scale: float = 1.0) -> list[dict]:
        # No prompts or hub here: the towers are the method's parameters, at their own scale.
        tower_params = [p for p in self.backbone.parameters() if p.requires_grad]
        return [
            {"params": tower_params, "lr": lr * self.config.backbone_lr_scale, "name": "backbone"},
            {"params": list(self.head.parameters()), "lr": lr, "name": "head"},
        ]
