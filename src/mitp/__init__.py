"""mitp: Memory-Inspired Temporal Prompt Interaction on frozen two-tower encoders."""

__version__ = "0.1.0"
