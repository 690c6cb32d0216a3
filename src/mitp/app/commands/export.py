"""``mitp export``: a run's best checkpoint (a model folder) with its model card, and optionally its ONNX graph."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mitp.files import CONFIG_FILE, MODEL_CARD, MODEL_FILES, WEIGHTS_FILE

from ..errors import UserError
from ..outputs import check_outputs

HELP = "write a run's best model as config.json + model.safetensors + README.md"
DESCRIPTION = (
    "Copy a run's best checkpoint, a model folder that Classifier.from_pretrained and `mitp serve` "
    "load (config.json, model.safetensors: trainable tensors only, no pickle), and add a model card README.md."
)


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, or a model folder")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (created; must be empty)")
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also write model.onnx (the whole classifier as one graph, dynamic batch and text length, "
        "checked against PyTorch to 1e-4), onnx.json and the tokenizer, for `--runtime onnx` "
        "without PyTorch",
    )
    p.add_argument("--quantize", choices=("int8",), help="with --onnx: also model.int8.onnx (dynamic int8)")


def run(args) -> int:
    # torch: loaded when the command runs (`mitp --help` stays fast)
    from mitp.model_card import model_card
    from mitp.onnx_export import export_onnx
    from mitp.torch_runtime import TorchClassifier, model_folder_of

    out = Path(args.out)
    check_outputs(
        files=[out / name for name in MODEL_FILES], folders=[out], inputs=[args.run_dir], creates="model folder"
    )
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out}: exists and is not an empty directory")
    if args.quantize and not args.onnx:
        raise UserError("--quantize applies to the ONNX graph: add --onnx")
    classifier = TorchClassifier.from_pretrained(args.run_dir)  # every file checked before anything is written
    source = model_folder_of(args.run_dir)
    # Written beside --out and renamed at the end: a failed export leaves no half folder, and the staging
    # folder has a fixed name, so one left by a killed export is removed by the next.
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copyfile(source / name, staging / name)
        (staging / MODEL_CARD).write_text(model_card(classifier.config, classifier.model))
        spec = export_onnx(classifier, staging, quantize=args.quantize) if args.onnx else None
        if out.is_dir():
            out.rmdir()  # empty, checked above
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
