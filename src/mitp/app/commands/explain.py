"""``mitp explain``: what a trained prompt method does with one image-text pair (mitp.app.analysis.explain):
a figure and its JSON."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("explain", help="hub similarity and attention on prompts for one pair (figure + JSON)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--text", required=True, help="text")
    p.add_argument("--out", help="figure path (default: RUN_DIR/explain.png; the JSON goes next to it)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.explain import explain_run  # torch: loaded when the command runs (`mitp --help` stays fast)

    report, figure = explain_run(args.run_dir, args.image, args.text, args.out)
    best = report["predictions"][0]
    print(f"{best['label']} ({best['score']:.3f}); cosine to the frozen embeddings: "
          + ", ".join(f"{k} {v:.4f}" for k, v in report["cosine_to_frozen"].items()))
    print(f"wrote {figure} and {figure.with_suffix('.json')}")
    return 0
