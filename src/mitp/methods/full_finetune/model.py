"""Full fine-tuning: every tower parameter trains, with the late-fusion head on top.

The accuracy ceiling and the memory/speed cost reference. The backbone stays in eval
mode like everywhere else (``Backbone.train`` ignores the mode): CLIP has no dropout
anyway, and keeping it off for BERT/ViT towers too means the only difference from
late fusion is which parameters train.
"""

from __future__ import annotations

from ..late_fusion.model import LateFusion
from .config import FullFinetuneConfig


class FullFinetune(LateFusion):
    """Late fusion with the towers trainable; the towers get a scaled-down learning rate."""

    config: FullFinetuneConfig
    trains_backbone = True  # the base class sets requires_grad on the backbone from this

    def param_groups(self, lr: float) -> list[dict]:
        backbone = {id(p) for p in self.backbone.parameters()}
        tower_params = [p for p in self.backbone.parameters() if p.requires_grad]
        head_params = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone]
        return [{"params": tower_params, "lr": lr * self.config.backbone_lr_scale, "name": "backbone"},
                {"params": head_params, "lr": lr, "name": "head"}]
