"""``mitp export``: a run's best checkpoint as a Hub-style folder (config.json, model.safetensors, README.md)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a run's best model as config.json + model.safetensors + README.md",
        description="Write a run's best checkpoint as a folder that Classifier.from_pretrained "
        "and `mitp serve` load: config.json, model.safetensors (trainable tensors "
        "only, no pickle) and a model card README.md.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (created; must be empty)")
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also write model.onnx (the whole classifier as one graph, dynamic batch and text length, "
        "checked against PyTorch to 1e-4), onnx.json and the tokenizer, for `--runtime onnx` "
        "without PyTorch",
    )
    p.add_argument("--quantize", choices=("int8",), help="with --onnx: also model.int8.onnx (dynamic int8)")
    p.set_defaults(func=run)


def run(args) -> int:
    # torch: loaded when the command runs (`mitp --help` stays fast)
    from mitp.classifier import Classifier
    from mitp.onnx_export import export_onnx

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty directory")
    if args.quantize and not args.onnx:
        raise UserError("--quantize applies to the ONNX graph: add --onnx")
    classifier = Classifier.from_pretrained(args.run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written in a staging folder beside --out and renamed at the end: a failed export leaves no half folder.
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    staging.chmod(0o755)  # mkdtemp's 0700 would make the exported folder private
    try:
        classifier.save_pretrained(staging)
        spec = export_onnx(classifier, staging, quantize=args.quantize) if args.onnx else None
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(
        f"wrote {out}/config.json, model.safetensors and README.md; load it with "
        f"Classifier.from_pretrained({str(out)!r}) or `mitp serve {out}`"
    )
    if spec is not None:
        graphs = "model.onnx" + (" and model.int8.onnx" if spec["int8"] else "")
        print(
            f"wrote {graphs} (logits within {spec['parity_max_abs']:.1e} of PyTorch) and onnx.json; load it with "
            f"Classifier.from_pretrained({str(out)!r}, runtime='onnx') or `mitp serve {out} --runtime onnx`"
        )
    return 0
