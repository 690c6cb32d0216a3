"""`mitp bench` results as a terminal table and as markdown."""

from __future__ import annotations

from .settings import BenchResult


def _fmt_ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _fmt_number(value) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _fmt_params(n: int) -> str:
    return f"{n:,}"


COLUMNS = (
    "method",
    "trainable params",
    "peak train memory (MB)",
    "train step (ms)",
    "train step CPU (ms)",
    "inference (samples/s)",
    "step vs full",
    "step CPU vs full",
    "memory vs full",
)


def _cells(row: dict) -> list[str]:
    return [
        row["method"],
        _fmt_params(row["trainable_params"]),
        f"{row['peak_memory_mb']:,.1f}",
        f"{row['train_step_ms']:,.1f}",
        _fmt_number(row["train_step_cpu_ms"]),
        f"{row['infer_samples_per_s']:,.2f}",
        _fmt_ratio(row["ratio_step_vs_full"]),
        _fmt_ratio(row["ratio_step_cpu_vs_full"]),
        _fmt_ratio(row["ratio_memory_vs_full"]),
    ]


# Short headers for the terminal table, in the order of COLUMNS.
SHORT_COLUMNS = ("method", "trainable", "peak MB", "step ms", "CPU ms", "infer/s", "step/full", "CPU/full", "mem/full")


def render_table(result: BenchResult):
    from rich.table import Table

    s = result.settings
    table = Table(
        title=f"mitp bench: {s.backbone}, batch {s.batch_size}, text length {s.seq_len}, {s.device}",
        caption="peak MB: peak training memory; step ms: median training step (wall); CPU ms: its "
        "process CPU time, all threads; infer/s: inference samples per second; */full: ratio "
        "to full_finetune",
    )
    for i, name in enumerate(SHORT_COLUMNS):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in result.rows:
        table.add_row(*_cells(row))
    return table


def to_markdown(result: BenchResult, command: str | None = None, date: str | None = None) -> str:
    s = result.settings
    lines = [
        (
            f"Backbone `{s.backbone}`, batch {s.batch_size}, text length {s.seq_len}, device {s.device}, "
            f"{s.threads} threads."
        ),
        "",
    ]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(COLUMNS) - 1)) + "|")
    for row in result.rows:
        lines.append("| " + " | ".join(_cells(row)) + " |")
    lines.append("")
    for note in result.notes:
        lines.append(f"- {note}")
    for check in result.checks():
        lines.append(f"- {check}")
    if command or date:
        lines.append("")
        if command:
            lines += ["Reproduce with:", "", "```", command, "```", ""]
        if date:
            lines.append(f"Measured {date}; the whole run took {result.wall_seconds:.0f} s.")
    return "\n".join(lines) + "\n"
