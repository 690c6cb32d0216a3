"""Reading JSON that may be hostile: every way a file or line can fail to parse is one error.

``json.loads`` fails in three ways on bad input: undecodable bytes, malformed JSON, and nesting
deep enough to exhaust the interpreter's recursion limit (``[[[[...`` of 200k brackets). Callers
turn :class:`JSONError` into their own named error with the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class JSONError(ValueError):
    """Input that is not a JSON document; ``line`` is the line within it where known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def parse_json(raw: bytes | str) -> Any:
    """The JSON value of ``raw`` (bytes must be UTF-8); any failure is a :class:`JSONError`."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as err:
        raise JSONError(f"not valid UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise JSONError(f"not valid JSON ({err.msg}, line {err.lineno} column {err.colno})", err.lineno) from None
    except RecursionError:
        raise JSONError("nested too deeply to read") from None


def read_json(path: str | Path) -> Any:
    """The JSON value of the file at ``path`` (OSError if it cannot be read, else JSONError)."""
    return parse_json(Path(path).read_bytes())


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds an unpaired UTF-16 surrogate (``"\\ud800"`` in JSON): not encodable text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


__all__ = ["JSONError", "has_lone_surrogate", "parse_json", "read_json"]
