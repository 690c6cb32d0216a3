"""``mitp prepare KIND``: convert a raw dataset into the manifest format (see docs/data.md)."""

from __future__ import annotations

import os
from pathlib import Path

from mitp.data.errors import ManifestError
from mitp.data.manifest import DATASET_FILES, IMAGES_DIR
from mitp.data.prepare import PUBLISHED, converters, get_converter
from mitp.data.progress import rich_tracker

from ..errors import UserError
from ..outputs import check_outputs, folder_kind

HELP = f"convert a raw dataset ({', '.join(sorted(converters()))}) into a manifest directory"
DESCRIPTION = (
    "Convert a raw dataset into train/val/test.jsonl + labels.json. One sub-command per "
    "registered converter; `mitp prepare KIND --help` shows its options, docs/data.md the raw "
    "layouts."
)


def add_arguments(p) -> None:
    kinds_parsers = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, converter in sorted(converters().items()):
        q = kinds_parsers.add_parser(kind, help=converter.help, description=converter.help)
        if converter.raw_positional:
            q.add_argument("raw", metavar="SOURCE", help=converter.raw_help)
        else:
            q.add_argument(
                "--raw",
                metavar="RAW_DIR",
                required=converter.raw_default is None,
                default=converter.raw_default or None,
                help=converter.raw_help,
            )
        q.add_argument("--out", required=True, metavar="DATA_DIR", help="output manifest directory")
        q.add_argument("--overwrite", action="store_true", help="replace the dataset that --out holds")
        for opt in converter.options:
            q.add_argument(*opt.flags, **opt.kwargs)
        q.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # torch: loaded when the command runs (`mitp --help` stays fast)

    converter = get_converter(args.kind)
    options = {opt.dest: getattr(args, opt.dest) for opt in converter.options}
    # never onto the files it reads (--input, --labels, ...) nor into a run directory
    inputs = [str(v) for v in options.values() if isinstance(v, str) and os.path.isfile(v)]
    inputs += [os.path.join(args.raw, str(v)) for v in options.values() if args.raw and isinstance(v, str)]
    inputs += [args.raw] if args.raw else []  # nothing is written into the raw data or the source
    out = Path(args.out)
    # the images/ folder of a dataset being replaced goes with it; anywhere else an images/ folder is not ours
    replacing = args.overwrite and folder_kind(out) == "dataset"
    check_outputs(
        files=[out / name for name in DATASET_FILES if not (replacing and name == IMAGES_DIR)],
        folders=[out, *([out / IMAGES_DIR] if replacing else [])],
        inputs=inputs,
        creates="dataset",
        replace=args.overwrite,
    )
    console = Console(soft_wrap=True)
    try:
        with rich_tracker(enabled=not args.no_progress) as track:
            conv = converter.convert(args.raw, args.out, track=track, **options)
    except ManifestError as err:
        raise UserError(f"[{err.kind}] {err}") from err
    except ValueError as err:
        raise UserError(str(err)) from err

    table = Table(title=escape(f"{args.kind} -> {args.out}"))
    table.add_column("split")
    table.add_column("samples", justify="right")
    published = PUBLISHED.get(args.kind)
    if published:
        table.add_column("published", justify="right")
    table.add_column("labels seen", justify="right")
    for split, n in conv.counts.items():
        row = [split, f"{n:,}"] + ([f"{published[split]:,}"] if published else [])
        table.add_row(*row, str(len(conv.label_counts(split))))
    console.print(table)
    console.print(f"task: {conv.space.task}, {conv.space.num_classes} labels")
    if conv.dropped:
        console.print(f"dropped {sum(conv.dropped.values()):,} raw rows:")
        for reason, n in sorted(conv.dropped.items()):
            examples = "; ".join(conv.dropped_examples[reason])
            console.print(f"  {n:,} x {reason}  (e.g. {examples})", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print("dropped rows: none")
    for note in conv.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    for warning in conv.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    roots, unrooted = conv.recorded_roots(), conv.unrooted_images
    if roots:  # images referenced in place: the folders they came from are the dataset's own
        console.print(
            f"note: {conv.external_images - unrooted:,} images are referenced where they are, under "
            f"{', '.join(roots)}, recorded as this dataset's image root(s) in "
            f"{Path(args.out) / 'image_roots.json'}: runs and checks read them without any flag",
            highlight=False,
            markup=False,
        )
    if unrooted:  # outside --out and outside the recorded roots: runs must allow that explicitly
        console.print(
            f"note: {unrooted:,} images lie outside {args.out} and its image roots; runs on this "
            f"dataset need `data: {{path: {args.out}, allow_external_paths: true}}` in their config "
            "(or --set data.allow_external_paths=true), checks --allow-external-paths",
            highlight=False,
            markup=False,
        )
    flag = " --allow-external-paths" if unrooted else ""
    console.print(
        f"wrote {args.out}/{{train,val,test}}.jsonl and labels.json; "
        f"run `mitp check {args.out}{flag}` to validate images",
        highlight=False,
        markup=False,
    )
    return 0
