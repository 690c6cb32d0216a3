"""``mitp check DATA_DIR``: validate a prepared dataset without training (see docs/data.md)."""

from __future__ import annotations

from mitp.data.check import check_dataset
from mitp.data.progress import rich_tracker

from ..errors import UserError
from ._args import non_negative_int, positive_int

HELP = "validate a prepared dataset: images decode, texts, labels, unique ids, JSON lines"
DESCRIPTION = (
    "Validate a prepared dataset. Prints one line per problem (file:line), a summary, and exits 1 if anything is wrong."
)


def add_arguments(p) -> None:
    p.add_argument("data_dir", metavar="DATA_DIR", help="directory with train/val/test.jsonl and labels.json")
    p.add_argument("--no-decode", action="store_true", help="only check that image files exist (faster)")
    p.add_argument("--workers", type=positive_int, default=4, help="threads decoding images (default 4)")
    p.add_argument(
        "--max-problems",
        type=non_negative_int,
        default=0,
        help="print at most this many problem lines (default 0: all)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--allow-external-paths",
        action="store_true",
        help="accept images outside DATA_DIR (absolute paths, .., symlinks), as converters write for "
        "raw data kept in place",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help='accept samples without an image or a text ("image": null / "text": null), as a run '
        "with data.allow_missing: true reads them",
    )


def run(args) -> int:
    import os

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if not os.path.isdir(args.data_dir):
        raise UserError(f"{args.data_dir} is not a directory")
    console = Console(soft_wrap=True)
    with rich_tracker(enabled=not args.no_progress) as track:
        report = check_dataset(
            args.data_dir,
            decode_images=not args.no_decode,
            workers=args.workers,
            track=track,
            allow_external_paths=args.allow_external_paths,
            allow_missing=args.allow_missing,
        )

    shown = report.problems if args.max_problems <= 0 else report.problems[: args.max_problems]
    for problem in shown:
        # Plain text: one problem per line, file:line first, easy to grep and click.
        console.print(
            f"{problem.location}: [{problem.kind}] {problem.message}", markup=False, highlight=False, soft_wrap=True
        )
    if len(shown) < len(report.problems):
        console.print(f"... {len(report.problems) - len(shown)} more problems not shown", markup=False)

    table = Table(title=escape(f"mitp check {args.data_dir}"))
    table.add_column("split")
    table.add_column("lines", justify="right")
    table.add_column("valid samples", justify="right")
    if report.no_label:
        table.add_column("no label (all negative)", justify="right")
    if report.missing:
        table.add_column("no image", justify="right")
        table.add_column("no text", justify="right")
    for split in report.lines:
        extra = [f"{report.no_label.get(split, 0):,}"] if report.no_label else []
        if report.missing:
            counts = report.missing.get(split, {})
            extra += [f"{counts.get('image', 0):,}", f"{counts.get('text', 0):,}"]
        table.add_row(split, f"{report.lines[split]:,}", f"{report.valid.get(split, 0):,}", *extra)
    console.print(table)
    if report.labels is not None:
        console.print(
            f"task: {report.labels.task}, {report.labels.num_classes} labels; "
            f"{report.images_checked:,} distinct images {'checked' if args.no_decode else 'decoded'}",
            highlight=False,
        )
    for root in report.image_roots:
        console.print(
            f"image root (recorded by mitp prepare in image_roots.json): {root}", markup=False, highlight=False
        )
    for warning in report.warnings:
        console.print(f"warning: {warning}", markup=False, highlight=False)
    if report.ok:
        console.print("[green]OK[/green]: no problems found")
        return 0
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.problems_by_kind().items()))
    console.print(f"[red]FAILED[/red]: {len(report.problems)} problem(s): {kinds}", highlight=False)
    return 1
