"""What a finished run leaves behind: results.json, curves.png and a one-screen summary."""

from __future__ import annotations

from pathlib import Path


def plot_curves(records: list[dict], selection: str, path: Path) -> Path:
    """Loss (train and val) and the validation selection metric per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("val", "-s")):
        rows = [r for r in records if r["split"] == split]
        ax_loss.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], style, label=split)
    val = [r for r in records if r["split"] == "val"]
    ax_metric.plot([r["epoch"] for r in val], [r["metrics"][selection] for r in val], "-s", color="tab:green")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_metric.set(xlabel="epoch", ylabel=selection, title=f"validation {selection}")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
