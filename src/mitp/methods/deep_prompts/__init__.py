from ..registry import register_method
from .config import DeepPromptsConfig
from .model import DeepPrompts

register_method(DeepPromptsConfig, DeepPrompts)

__all__ = ["DeepPrompts", "DeepPromptsConfig"]
