from ..registry import register_method
from .config import MITPConfig
from .model import MITP, MemoryHub

register_method(MITPConfig, MITP)

__all__ = ["MITP", "MITPConfig", "MemoryHub"]
