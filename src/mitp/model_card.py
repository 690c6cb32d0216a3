"""The model card (README.md) written next to an exported model: what it does, how well, how to use it."""

from __future__ import annotations

from .markdown import table
from .records import ModelConfig


def _metrics(results: dict, split: str) -> str:
    metrics = (results or {}).get(split) or {}
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "not recorded"


def model_card(config: ModelConfig, model) -> str:
    """Markdown for ``README.md``: task, data, metrics from the run's results, parameters, the command that
    trained it, usage and limitations."""
    results = config.results or {}
    method, backbone, labels = config.method["method"], config.backbone.spec, config.labels
    trainable = results.get("trainable_params") or model.num_parameters(trainable_only=True)
    total = results.get("total_params") or model.num_parameters()
    shown = ", ".join(labels.labels[:20]) + (", ..." if len(labels.labels) > 20 else "")
    text_length, image_size = config.preprocessing.max_text_length, config.preprocessing.image_size
    text = f"text up to {text_length} tokens" if text_length else "text up to the text tower's limit"
    images = f"images at {image_size} px" if image_size else "images at the image processor's size"
    if results.get("best_epoch") is None:  # exported before its training finished
        validation = f"{_metrics(results, 'val')} (the run had not finished: its best checkpoint so far)"
    else:
        best = f"best epoch {results['best_epoch']} of {results.get('epochs', '-')}"
        validation = f"{_metrics(results, 'val')} ({best}, by {results.get('selection_metric', '-')})"
    facts = table(
        ["", ""],
        [
            ["task", f"{labels.task} ({len(labels.labels)} labels)"],
            ["training data", f"`{config.data}`"],
            ["validation", validation],
            ["test", _metrics(results, "test")],
            ["parameters", f"{trainable:,} trained of {total:,} ({100 * trainable / max(total, 1):.3f}%)"],
            ["preprocessing", f"{text}, {images}"],
            ["trained with", f"`{results.get('command', 'unknown')}` (seed {results.get('seed', '-')})"],
        ],
        align="ll",
    )
    return f"""---
library_name: mitp
tags: [image-text-classification, prompt-tuning, {method}]
---

# {method} on `{backbone}`

A {labels.task.replace("_", "-")} image-text classifier with {len(labels.labels)} classes ({shown}),
trained with [mitp](https://arxiv.org/abs/2401.14856) method `{method}` on the frozen backbone
`{backbone}`. Only the method's own parameters were trained.

{facts}
## Use

```python
from mitp import Classifier

clf = Classifier.from_pretrained("path/to/this/folder")
clf.predict(images=["photo.jpg"], texts=["a sentence about it"], top_k=3)
```

or `mitp serve path/to/this/folder` for an HTTP endpoint and a web page. The frozen backbone is
rebuilt from its spec (`{backbone}`), which must be available where the model is loaded; a
backbone of other shapes is refused.

## Limitations

- The scores are calibrated to the training data only; the test metric above is the one split the
  run was evaluated on, and says little about other domains or phrasings.
- The backbone is frozen: whatever it cannot see in an image or read in a text, the model cannot
  learn. Its biases are the backbone's and the training data's.
- The method config is in `config.json`; the numbers above come from one training run (one seed).
"""
