"""The application's user-facing error: what `mitp` prints without a traceback and exits 2 for."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input: printed without a traceback, exit code 2."""


__all__ = ["UserError"]
