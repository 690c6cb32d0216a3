"""What the methods cost, side by side on one backbone (``mitp bench``), one module per benchmark.

``measure`` (with ``settings`` and ``protocol``): a training step and an inference pass per
method; ``profile``: a step's operators; ``epochs``: an epoch in each method's best mode; ``inference``: eager
PyTorch against the ONNX graphs; ``serving`` and ``load``: `mitp serve`. ``model``: the random model that
inference, serving and load measure (speed and memory do not depend on the weights).
"""

from __future__ import annotations

from . import epochs, inference, load, measure, profile, serving, settings

__all__ = ["epochs", "inference", "load", "measure", "profile", "serving", "settings"]
