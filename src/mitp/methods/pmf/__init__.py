from ..registry import register_method
from .config import PMFConfig
from .model import PMF, FusionPrompts

register_method(PMFConfig, PMF)

__all__ = ["PMF", "PMFConfig", "FusionPrompts"]
