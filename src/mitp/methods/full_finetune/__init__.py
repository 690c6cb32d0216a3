from ..registry import register_method
from .config import FullFinetuneConfig
from .model import FullFinetune

register_method(FullFinetuneConfig, FullFinetune)

__all__ = ["FullFinetune", "FullFinetuneConfig"]
