"""``mitp export``: a run's best checkpoint as a Hub-style folder (config.json, model.safetensors, README.md)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a run's best model as config.json + model.safetensors + README.md",
                              description="Write a run's best checkpoint as a folder that Classifier.from_pretrained "
                                          "and `mitp serve` load: config.json, model.safetensors (trainable tensors "
                                          "only, no pickle) and a model card README.md.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (created; must be empty)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mitp.classifier import Classifier  # torch: loaded when the command runs (`mitp --help` stays fast)

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty directory")
    Classifier.from_pretrained(args.run_dir).save_pretrained(out)
    print(f"wrote {out}/config.json, model.safetensors and README.md; load it with "
          f"Classifier.from_pretrained({str(out)!r}) or `mitp serve {out}`")
    return 0
