"""The base of every error mitp reports as a one-line message (a bad config key, manifest line, checkpoint
file, backbone spec), never as a traceback. Light on purpose: the command line catches it before any
heavy module is loaded."""

from __future__ import annotations


class MitpError(ValueError):
    """An input, a file or a setting that mitp cannot use; the message says which and why."""


__all__ = ["MitpError"]
