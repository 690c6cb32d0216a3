"""Memory-Inspired Temporal Prompt Interaction (MITP) for text-image classification."""

__version__ = "0.2.0"

__all__ = ["Classifier", "__version__"]


def __getattr__(name):
    # `from mitp import Classifier` without importing torch: the CLI's start-up and ONNX deployments
    if name == "Classifier":
        from .api import Classifier

        return Classifier
    raise AttributeError(f"module 'mitp' has no attribute {name!r}")
