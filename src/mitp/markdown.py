"""The one markdown-table writer: every report, benchmark and model card builds its tables here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(value) -> str:
    """A value as one table cell: ``|`` escaped and line breaks folded, so a message cannot break the row."""
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A GitHub markdown table (one line per row, a final newline).

    ``align`` has one letter per column: ``l`` left, ``r`` right; default: the first column left and the
    rest right (a label, then numbers). Cells are written with :func:`cell`."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align needs one of l/r per column ({len(header)}), got {align!r}")
    rule = {"l": "---", "r": "---:"}
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells for {len(header)} columns: {row!r}")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["cell", "table"]
