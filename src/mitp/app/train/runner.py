"""One training run from a config to a finished run directory (used by train and compare)."""

from __future__ import annotations

from pathlib import Path

from mitp import runs

from .config import RunConfig
from .loop import Trainer
from .reports import plot_curves, summary_table, write_json_atomic, write_text_atomic
from .rundir import MetricsLog, write_marker


def run_training(config: RunConfig, run_dir: Path, resume: bool = False, console=None,
                 command: str | None = None) -> dict:
    """Train (or resume) into ``run_dir`` and write config.yaml, results.json and curves.png."""
    run_dir = Path(run_dir)
    trainer = Trainer(config, run_dir, resume=resume, console=console)
    if trainer.main:
        write_marker(run_dir)
        write_text_atomic(run_dir / runs.CONFIG, trainer.config.to_yaml())
        write_text_atomic(run_dir / runs.LABELS, (Path(trainer.config.data) / runs.LABELS).read_text())
        if console is not None:
            console.print(f"run directory: {run_dir}", markup=False, highlight=False)
    trainer.accelerator.wait_for_everyone()
    results = trainer.fit()
    results["command"] = command  # how this run was made (or resumed), for the model card
    if trainer.main:
        write_json_atomic(run_dir / runs.RESULTS, results)
        plot_curves(MetricsLog(run_dir / runs.METRICS).records(), results["selection_metric"], run_dir / runs.CURVES)
        if console is not None:
            console.print(summary_table(results))
            console.print(f"results: {run_dir / runs.RESULTS}", markup=False, highlight=False)
    return results
