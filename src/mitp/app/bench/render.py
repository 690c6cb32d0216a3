"""`mitp bench step` results as a terminal table and as markdown."""

from __future__ import annotations

from rich.table import Table

from mitp.markdown import table

from .settings import BenchResult

# (markdown header, short terminal header) per column
COLUMNS = (
    ("method", "method"),
    ("trainable params", "trainable"),
    ("peak train memory (MB)", "peak MB"),
    ("train step (ms)", "step ms"),
    ("train step CPU (ms)", "CPU ms"),
    ("inference (samples/s)", "infer/s"),
    ("step vs full", "step/full"),
    ("step CPU vs full", "CPU/full"),
    ("memory vs full", "mem/full"),
)


def _cells(row: dict) -> list[str]:
    def ratio(value) -> str:
        return "-" if value is None else f"{value:.2f}x"

    return [
        row["method"],
        f"{row['trainable_params']:,}",
        f"{row['peak_memory_mb']:,.1f}",
        f"{row['train_step_ms']:,.1f}",
        "-" if row["train_step_cpu_ms"] is None else f"{row['train_step_cpu_ms']:,.1f}",
        f"{row['infer_samples_per_s']:,.2f}",
        ratio(row["ratio_step_vs_full"]),
        ratio(row["ratio_step_cpu_vs_full"]),
        ratio(row["ratio_memory_vs_full"]),
    ]


def render_table(result: BenchResult) -> Table:
    s = result.settings
    terminal = Table(
        title=f"mitp bench: {s.backbone}, batch {s.batch_size}, text length {s.seq_len}, {s.device}",
        caption="peak MB: peak training memory; step ms: median training step (wall); CPU ms: its "
        "process CPU time, all threads; infer/s: inference samples per second; */full: ratio "
        "to full_finetune",
    )
    for i, (_, name) in enumerate(COLUMNS):
        terminal.add_column(name, justify="left" if i == 0 else "right")
    for row in result.rows:
        terminal.add_row(*_cells(row))
    return terminal


def to_markdown(result: BenchResult) -> str:
    """The settings, the table, then the notes and the --target checks as a list."""
    s = result.settings
    return (
        f"Backbone `{s.backbone}`, batch {s.batch_size}, text length {s.seq_len}, device {s.device}, "
        f"{s.threads} threads.\n\n"
        + table([header for header, _ in COLUMNS], [_cells(row) for row in result.rows])
        + "".join(f"\n- {line}" for line in result.notes + result.checks())
    )
