"""``mitp prepare KIND``: convert a raw dataset into the manifest format (see docs/data.md)."""

from __future__ import annotations

KINDS = ("food101", "mmimdb", "snli-ve", "fashion-ve", "jsonl", "csv")
FASHION_VE_FLAGS = ("train_size", "val_size", "test_size", "image_size")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="convert a raw dataset (food101, mmimdb, snli-ve, fashion-ve, jsonl, csv) into a manifest directory",
        description="Convert a raw dataset into train/val/test.jsonl + labels.json. See docs/data.md for the "
                    "raw layouts each KIND expects.")
    p.add_argument("kind", choices=KINDS, metavar="KIND", help=f"one of: {', '.join(KINDS)}")
    p.add_argument("--raw", metavar="RAW_DIR", help="raw dataset directory (jsonl/csv: where image paths are "
                                                    "relative to; default: the --input file's directory; "
                                                    "fashion-ve: the Fashion-MNIST idx files, default "
                                                    "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--out", required=True, metavar="DATA_DIR", help="output manifest directory")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="fraction carved for val where there is no official val split (default 0.1)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the carved splits, or of everything fashion-ve samples (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("snli-ve")
    g.add_argument("--images", metavar="DIR", help="Flickr30k images (default RAW_DIR/flickr30k_images)")
    g = p.add_argument_group("fashion-ve (built from Fashion-MNIST; see docs/fashion-ve.md)")
    g.add_argument("--train-size", type=int, default=None, metavar="N",
                   help="training samples, a multiple of 3 (6 for exact balance); default 1500")
    g.add_argument("--val-size", type=int, default=None, metavar="N", help="validation samples; default 300")
    g.add_argument("--test-size", type=int, default=None, metavar="N", help="test samples; default 600")
    g.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="side of the square composite images in pixels; default 224")
    g = p.add_argument_group("jsonl / csv")
    g.add_argument("--input", metavar="FILE", help="the JSONL or CSV file (CSV needs a header row)")
    g.add_argument("--image-column", default="image", help="column with the image path (default: image)")
    g.add_argument("--text-column", default="text", help="column with the text (default: text)")
    g.add_argument("--label-column", default="label", help="column with the label(s) (default: label)")
    g.add_argument("--id-column", default=None,
                   help="column with unique ids (default: 'id' if present, else line numbers)")
    g.add_argument("--split-column", default=None,
                   help="column with train/val/test (dev/valid/validation = val); default: carve splits")
    g.add_argument("--multi-label", action="store_true", help="labels are lists (JSON) or separated (CSV)")
    g.add_argument("--label-separator", default="|", help="separator of CSV multi-labels (default: |)")
    g.add_argument("--labels", default=None, help="comma-separated label names in fixed order "
                                                  "(default: sorted names found); others are errors")
    g.add_argument("--test-fraction", type=float, default=0.1,
                   help="fraction carved for test when there is no split column (default 0.1)")
    p.set_defaults(func=run)


def _options(args) -> dict:
    from ..cli import UserError

    kind = args.kind
    val_fraction = 0.1 if args.val_fraction is None else args.val_fraction
    given = [f"--{name.replace('_', '-')}" for name in FASHION_VE_FLAGS if getattr(args, name, None) is not None]
    if kind == "fashion-ve":
        if args.input:
            raise UserError("--input is for jsonl/csv; fashion-ve reads the Fashion-MNIST idx files (--raw)")
        if args.val_fraction is not None:
            raise UserError("fashion-ve sets its split sizes with --train-size/--val-size/--test-size; "
                            "--val-fraction does not apply")
        options = {name: getattr(args, name) for name in FASHION_VE_FLAGS if getattr(args, name) is not None}
        return dict(options, seed=args.seed)
    if given:
        raise UserError(f"{', '.join(given)} only apply to fashion-ve")
    if kind in ("jsonl", "csv"):
        if not args.input:
            raise UserError(f"KIND {kind} needs --input FILE")
        return dict(input=args.input, image_column=args.image_column, text_column=args.text_column,
                    label_column=args.label_column, id_column=args.id_column, split_column=args.split_column,
                    multi_label=args.multi_label, label_separator=args.label_separator,
                    labels=[x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None,
                    val_fraction=val_fraction, test_fraction=args.test_fraction, seed=args.seed)
    if not args.raw:
        raise UserError(f"KIND {kind} needs --raw RAW_DIR")
    if args.input:
        raise UserError(f"--input is for jsonl/csv; {kind} reads --raw RAW_DIR")
    if kind == "food101":
        return dict(val_fraction=val_fraction, seed=args.seed)
    if args.val_fraction is not None:
        raise UserError(f"{kind} has an official validation split; --val-fraction does not apply")
    return dict(images=args.images) if kind == "snli-ve" else {}


def run(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..cli import UserError
    from mitp.data.errors import ManifestError
    from mitp.data.prepare import PUBLISHED, prepare
    from mitp.data.progress import rich_tracker

    options = _options(args)
    if args.images and args.kind != "snli-ve":
        raise UserError("--images is only for snli-ve")
    console = Console(soft_wrap=True)
    try:
        with rich_tracker(enabled=not args.no_progress) as track:
            if args.kind == "fashion-ve":
                from mitp.data.prepare.fashion_ve import convert_fashion_ve

                conv = convert_fashion_ve(args.raw, args.out, track=track, **options)
            else:
                conv = prepare(args.kind, args.raw, args.out, track=track, **options)
    except ManifestError as err:
        raise UserError(f"[{err.kind}] {err}") from err
    except ValueError as err:
        raise UserError(str(err)) from err

    table = Table(title=f"{args.kind} -> {args.out}")
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
    external = conv.external_images
    if external:  # images referenced in place, outside --out: runs must allow that explicitly
        console.print(f"note: {external:,} images are referenced where they are, outside {args.out}; runs on "
                      f"this dataset need `data: {{path: {args.out}, allow_external_paths: true}}` in their "
                      "config (or --set data.allow_external_paths=true), checks --allow-external-paths",
                      highlight=False, markup=False)
    flag = " --allow-external-paths" if external else ""
    console.print(f"wrote {args.out}/{{train,val,test}}.jsonl and labels.json; "
                  f"run `mitp check {args.out}{flag}` to validate images", highlight=False, markup=False)
    return 0
