from .. import register_method
from .config import DeepPromptsConfig, check_prompt_layers
from .model import DeepPrompts

register_method(DeepPromptsConfig, DeepPrompts)

__all__ = ["DeepPrompts", "DeepPromptsConfig", "check_prompt_layers"]
