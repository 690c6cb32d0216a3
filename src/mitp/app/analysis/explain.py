"""A look inside a trained prompt method for one image-text pair: per interaction step, the memory hub's
similarity matrix (text prompts x vision prompts) and how much of the tokens' attention goes to the
prompts in each tower, plus how far the method moved the pooled embeddings from the frozen ones."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from mitp.inputs import InputError
from mitp.methods import build_model, make_config
from mitp.methods.base import Trace
from mitp.torch_runtime import TorchClassifier

from ..errors import UserError
from ..extras import require
from ..figures import explanation
from ..outputs import OutputError, check_outputs


def explain(classifier, image, text: str) -> dict:
    """Run one pair (image: a path, bytes or a PIL image) through the model with tracing on; plain lists."""
    model = classifier.model
    sample = classifier.prepare(image, text)
    inputs = {
        "pixel_values": sample.pixels[None],
        "input_ids": torch.tensor([sample.tokens]),
        "attention_mask": torch.ones(1, len(sample.tokens), dtype=torch.long),
        "modality_mask": torch.tensor([sample.present]),
    }
    model.trace = Trace()
    try:
        with torch.no_grad():
            features = model.forward_features(**inputs)
            logits = model.forward_head(features)
    finally:
        trace, model.trace = model.trace, None
    frozen = build_model(make_config("late_fusion", num_classes=model.config.num_classes), model.backbone)
    with torch.no_grad():
        reference = frozen.forward_features(**inputs)
    cosine = {
        part: torch.nn.functional.cosine_similarity(features[part], reference[part]).item()
        for part in ("image", "text")
        if part in features
    }
    attention = {
        key: [round(v, 6) for v in record.prompt_share[0].tolist()]
        for key, record in trace.prompt_attention.items()
        if record.prompt_share
    }
    return {
        "method": model.config.method,
        "image": image if isinstance(image, str) else "<uploaded>",
        "text": text,
        "predictions": classifier.to_predictions(logits, top_k=3)[0],
        "cosine_to_frozen": cosine,
        "prompt_attention_share": attention,
        "hub_similarity": [s[0].tolist() for s in trace.similarity],
        "diagnostics": model.diagnostics(),
    }


FIGURE_FORMATS = (".png", ".svg", ".pdf")


def figure_path(out: str | Path) -> Path:
    """The file the figure is written to: ``out``, with ``.png`` added unless it names a figure format (what
    matplotlib would do, made explicit so that the guard checks the file really written)."""
    out = Path(out)
    return out if out.suffix.lower() in FIGURE_FORMATS else out.with_name(out.name + ".png")


REPORT_KEYS = {"method", "predictions", "cosine_to_frozen", "prompt_attention_share", "hub_similarity"}


def check_companion(path: Path) -> None:
    """The report's JSON is written beside the figure without being named: it may replace only an earlier
    report, never a file of the user's that happens to have that name."""
    if not path.exists():
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        earlier = None
    if not (isinstance(earlier, dict) and REPORT_KEYS <= earlier.keys()):
        raise OutputError(
            f"--out: refusing to write {path} (the report beside the figure): it exists and is not an earlier "
            "explain report; choose another output path"
        )


def explain_run(run_dir: str | Path, image: str, text: str, out: str | Path | None = None) -> tuple[dict, Path]:
    """Explain one pair with a run's best checkpoint; write the figure (default RUN_DIR/explain.png) and its
    JSON next to it, never over the command's inputs or the run's files. Returns (report, figure)."""
    figure = figure_path(out) if out else Path(run_dir) / "explain.png"
    check_outputs(files=[figure, figure.with_suffix(".json")], inputs=[image], own_runs=[run_dir])
    check_companion(figure.with_suffix(".json"))
    require("plots", "mitp explain")
    classifier = TorchClassifier.from_pretrained(run_dir)
    if not classifier.model.inserts_prompts:
        raise UserError(f"{run_dir}: method {classifier.model.config.method!r} inserts no prompts; nothing to explain")
    try:
        report = explain(classifier, image, text)
    except InputError as err:
        raise UserError(str(err)) from err
    figure.parent.mkdir(parents=True, exist_ok=True)
    explanation(report, figure)
    figure.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return report, figure


def explain_png(classifier: TorchClassifier, image, text: str) -> bytes:
    """The figure of one pair as PNG bytes (the server's /explain)."""
    report = explain(classifier, image, text)
    with tempfile.TemporaryDirectory() as tmp:
        return explanation(report, Path(tmp) / "explain.png").read_bytes()


__all__ = ["explain", "explain_png", "explain_run"]
