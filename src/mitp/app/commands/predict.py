"""``mitp predict``: label names and scores for one sample or a whole manifest, as JSON lines.

A sample may miss its image or its text (``--image`` or ``--text`` alone; a manifest line whose
``image`` or ``text`` is null or absent): the model sees a blank image / an empty text, and the
output line's ``modalities`` says what it saw."""

from __future__ import annotations

import json
import os
import sys
import time

from mitp.atomic import usual_mode
from mitp.data.errors import CorruptImage, EmptyText, ManifestError, MissingImage
from mitp.data.manifest import check_text, parse_line, read_lines

from ..errors import UserError
from ..outputs import check_outputs
from ._args import add_runtime, positive_int

HELP = "predict labels with a run's best checkpoint or an exported model (JSON lines)"


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_OR_DIR", help="a run directory, or a folder written by `mitp export`")
    p.add_argument("--image", help="image file (alone, or with --text)")
    p.add_argument("--text", help="text (alone, or with --image)")
    p.add_argument(
        "--manifest", help="JSONL file of {id, image, text} lines (label optional; image or text may be null or absent)"
    )
    p.add_argument("--out", help="write JSON lines here instead of stdout")
    p.add_argument("--top-k", type=positive_int, default=1, help="labels to report per sample (single-label)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    add_runtime(p)


def _pairs(args):
    """(id, image_path, text, manifest, line) for every requested prediction."""

    if args.manifest:
        if args.image or args.text:
            raise UserError("give either --manifest or --image with --text, not both")
        if not os.path.isfile(args.manifest):
            raise UserError(f"{args.manifest}: no such file")
        for line_no, raw in read_lines(args.manifest):
            sample = parse_line(args.manifest, line_no, raw, None, for_prediction=True)
            image = sample.image_path() if sample.image is not None else None
            yield sample.id, image, sample.text, args.manifest, line_no
    elif args.image or args.text is not None:
        if args.text is not None:
            try:
                check_text(args.text, "--text")
            except EmptyText as err:
                raise UserError("--text is empty (leave it out to classify the image alone)") from err
            except ManifestError as err:
                raise UserError(err.message) from err
        yield "0", args.image, args.text, "<command line>", None
    else:
        raise UserError("give --image PATH and/or --text STR, or --manifest FILE")


def _output_path(args):
    """Where predictions go: never onto an input, the parent directory created if missing."""
    if not args.out:
        return None

    out = os.path.realpath(args.out)
    check_outputs(files=[args.out], inputs=[args.manifest, args.image], own_runs=[args.run_dir])
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    return out


def run(args) -> int:
    import tempfile

    from mitp.api import Classifier  # the model's runtime: loaded when the command runs
    from mitp.inputs import InputError, NoImageFile

    out_path = _output_path(args)
    if args.quantized and args.runtime != "onnx":
        raise UserError("--quantized applies to --runtime onnx (the int8 graph)")
    classifier = Classifier.from_pretrained(args.run_dir, runtime=args.runtime, quantized=args.quantized)
    if args.top_k > classifier.labels.num_classes and classifier.labels.task == "single_label":
        print(
            f"note: --top-k {args.top_k} is more than the {classifier.labels.num_classes} classes; showing all",
            file=sys.stderr,
        )
    # Written to a temporary file next to the target and renamed at the end: a failed predict
    # leaves an existing output untouched.
    if out_path:
        fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(out_path), prefix=".predict.", suffix=".tmp")
        out = os.fdopen(fd, "w", encoding="utf-8")
    else:
        out = sys.stdout

    def prepare(sample_id, image, text, manifest, line):
        try:
            return classifier.prepare(image, text)
        except InputError as err:  # named at the manifest line that gave the image
            error = MissingImage if isinstance(err, NoImageFile) else CorruptImage
            raise error(manifest, line, f"{err} (id {sample_id!r})") from err

    def flush(chunk):
        logits = classifier.logits([prepare(*pair) for pair in chunk])
        seen = [(image is not None) * ("image",) + (text is not None) * ("text",) for _, image, text, *_ in chunk]
        for (sample_id, *_), predictions in zip(chunk, classifier.to_predictions(logits, args.top_k, seen)):
            out.write(
                json.dumps({"id": sample_id, "predictions": predictions, "modalities": list(predictions.modalities)})
                + "\n"
            )

    from rich.console import Console
    from rich.progress import Progress

    # A progress bar on stderr for manifests written to a file (stdout stays pure JSON lines).
    started, done = time.perf_counter(), 0
    with Progress(console=Console(stderr=True), disable=not (args.manifest and args.out)) as progress:
        task = progress.add_task("predicting", total=None)
        try:
            chunk = []
            for pair in _pairs(args):
                chunk.append(pair)
                if len(chunk) == args.batch_size:
                    flush(chunk)
                    progress.advance(task, len(chunk))
                    done += len(chunk)
                    chunk = []
            if chunk:
                flush(chunk)
                progress.advance(task, len(chunk))
                done += len(chunk)
        except BaseException:
            if out is not sys.stdout:
                out.close()
                os.unlink(tmp_path)
            raise
    if out is not sys.stdout:
        out.close()
        usual_mode(tmp_path)
        os.replace(tmp_path, out_path)
    if args.manifest:
        seconds = time.perf_counter() - started
        print(
            f"predicted {done} samples in {seconds:.1f} s ({done / max(seconds, 1e-9):.1f} samples/s, batch "
            f"{args.batch_size})",
            file=sys.stderr,
        )
    return 0
