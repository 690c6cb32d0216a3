"""Late fusion: the shared head on the frozen towers' pooled and projected embeddings.

The floor every method must beat, and the starting point of every prompt method: with
their gates closed, MITP, deep prompts and PMF compute exactly these features.
"""

from __future__ import annotations

from ..embedding import EmbeddingClassifier
from .config import LateFusionConfig


class LateFusion(EmbeddingClassifier):
    """Frozen towers, trainable head on their embeddings (``inputs``: both, or one modality)."""

    config: LateFusionConfig
