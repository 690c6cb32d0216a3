from .. import register_method
from .config import LateFusionConfig
from .model import LateFusion, embed_pair, embedding, fusion_head

register_method(LateFusionConfig, LateFusion)

__all__ = ["LateFusion", "LateFusionConfig", "embed_pair", "embedding", "fusion_head"]
