"""A finished run's one-screen summary."""

from __future__ import annotations


def summary_table(results: dict):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{results['method']} on {results['backbone']}"), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "best epoch", f"{results['best_epoch']} of {results['epochs']} (by val {results['selection_metric']})"
    )
    for split in ("val", "test"):
        table.add_row(
            split,
            "  ".join(f"{k} {v:.4f}" for k, v in results[split].items())
            if results[split]
            else "not read (a sweep reads test for its best trial only)",
        )
    table.add_row(
        "trainable params",
        f"{results['trainable_params']:,} of {results['total_params']:,} "
        f"({100 * results['trainable_params'] / results['total_params']:.3f}%)",
    )
    table.add_row("peak memory", f"{results['peak_memory_mb']:.0f} MB ({results['peak_memory_kind']})")
    table.add_row("train time", f"{results['train_seconds']:.1f} s on {results['num_processes']} process(es)")
    return table
