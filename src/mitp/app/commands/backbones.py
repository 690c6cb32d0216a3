"""``mitp backbones``: every backbone spec, and whether it is ready to use offline."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("backbones", help="list backbone specs and whether each is ready offline")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--prepare", metavar="SPEC",
                   help="convert and cache an offline backbone now, e.g. --prepare offline:dinov2s-minilm")
    p.set_defaults(func=run)


def _rows() -> list[dict]:
    from mitp.backbones import BUILTIN_SPECS
    from mitp.backbones.offline import offline_status

    rows = [{"spec": spec, "kind": "builtin", "description": desc, "state": "builtin", "ready_offline": True}
            for spec, desc in BUILTIN_SPECS.items()]
    for spec, status in offline_status().items():
        if status["ready"]:
            state = "ready"
        elif status["installed"]:
            state = "installed"
        else:
            state = "missing"
        rows.append({"spec": spec, "kind": "offline", "state": state, "ready_offline": status["ready"], **status})
    rows.append({"spec": "<hub id or local dir>", "kind": "pretrained", "state": "needs-hub", "ready_offline": False,
                 "description": "a CLIPModel checkpoint (from_pretrained)",
                 "note": "needs the Hugging Face hub or a local checkpoint directory"})
    rows.append({"spec": "pair:<text>+<vision>", "kind": "pretrained", "state": "needs-hub", "ready_offline": False,
                 "description": "BERT-family text + ViT/DINOv2 image encoders",
                 "note": "each a hub id or local directory: needs the Hugging Face hub or local checkpoint "
                         "directories"})
    return rows


def _state_text(row: dict) -> str:
    state = row["state"]
    if state == "builtin":
        return "[green]ready[/green] (built in, random weights)"
    if state == "needs-hub":
        return "[yellow]needs the hub or a local dir[/yellow]"
    if state == "ready":
        return "[green]ready[/green] (converted, cached)"
    if state == "installed":
        return "[yellow]installed, not converted yet[/yellow]"
    return "[red]not installed[/red]"


def _details(row: dict) -> str | None:
    """A line under the table for specs that need a word more than the table cell."""
    spec, state = row["spec"], row["state"]
    if state == "needs-hub":
        return f"{spec}: {row['note']}"
    if row["kind"] != "offline":
        return None
    if state == "ready":
        diff = row.get("max_abs_diff")
        checked = f" (max abs diff vs the ONNX graph {diff:.1e})" if diff is not None else ""
        return f"{spec}: image encoder {row['vision_dir']}{checked}; text encoder {row['text_dir']}"
    if state == "installed":
        lacking = [name for name, ok in row["converter"].items() if not ok]
        if lacking:
            return f"{spec}: converting needs {', '.join(lacking)}: pip install onnx onnxruntime"
        return f"{spec}: converts on first use, or now with: mitp backbones --prepare {spec}"
    return f"{spec}: {row['install']}"


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from mitp.backbones.offline import cache_root, ensure_offline_backbone

    if args.prepare:
        # Progress goes to stderr with --json, so stdout stays one JSON object.
        progress = Console(stderr=bool(args.json), soft_wrap=True)
        text_dir, vision_dir = ensure_offline_backbone(args.prepare, progress=lambda msg: progress.print(msg))
        progress.print(f"{args.prepare if args.prepare.startswith('offline:') else 'offline:' + args.prepare} "
                       f"is ready offline: image encoder {vision_dir}, text encoder {text_dir}")
        if not args.json:
            return 0
    rows = _rows()
    if args.json:
        print(json.dumps({"cache": str(cache_root()), "specs": rows}))
        return 0
    console = Console(soft_wrap=True)
    table = Table(title="Backbone specs")
    table.add_column("spec", no_wrap=True)
    table.add_column("what")
    table.add_column("offline")
    for row in rows:
        table.add_row(row["spec"], row["description"], _state_text(row))
    console.print(table)
    for row in rows:
        line = _details(row)
        if line:
            console.print(line, highlight=False)
    console.print(f"offline cache: {cache_root()} (set MITP_CACHE to move it)")
    return 0
