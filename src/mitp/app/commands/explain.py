"""``mitp explain``: what a trained prompt method does with one image-text pair (mitp.app.analysis.explain):
a figure and its JSON."""

from __future__ import annotations

import json

from ..errors import UserError
from ._args import positive_int

HELP = "hub similarity and attention on prompts for one pair (figure + JSON)"


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--image", help="image file")
    p.add_argument("--text", help="text")
    p.add_argument(
        "--exchange",
        action="store_true",
        help="instead: how much each tower's embedding moves when the other modality is swapped for "
        "another sample's, over --samples of --split (0 for towers that never meet), and how far "
        "the prompt gates opened; prints JSON",
    )
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="with --exchange (default val)")
    p.add_argument("--samples", type=positive_int, default=256, help="with --exchange (default 256)")
    p.add_argument("--out", help="figure path (default: RUN_DIR/explain.png; the JSON goes next to it)")


def run(args) -> int:
    if args.exchange:
        from ..analysis.exchange import cross_modal_influence  # torch: loaded when the command runs

        print(json.dumps(cross_modal_influence(args.run_dir, args.split, args.samples), indent=2))
        return 0
    if not args.image or args.text is None:
        raise UserError("give --image and --text (or --exchange)")
    from ..analysis.explain import explain_run  # torch: loaded when the command runs (`mitp --help` stays fast)

    report, figure = explain_run(args.run_dir, args.image, args.text, args.out)
    best = report["predictions"][0]
    print(
        f"{best['label']} ({best['score']:.3f}); cosine to the frozen embeddings: "
        + ", ".join(f"{k} {v:.4f}" for k, v in report["cosine_to_frozen"].items())
    )
    print(f"wrote {figure} and {figure.with_suffix('.json')}")
    return 0
