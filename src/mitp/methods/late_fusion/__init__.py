from ..registry import register_method
from .config import LateFusionConfig
from .model import LateFusion

register_method(LateFusionConfig, LateFusion)

__all__ = ["LateFusion", "LateFusionConfig"]
