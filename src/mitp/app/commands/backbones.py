"""``mitp backbones``: every backbone spec, and whether it is ready to use offline."""

from __future__ import annotations

import json

HELP = "list backbone specs and whether each is ready offline"


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--prepare",
        metavar="SPEC",
        help="convert and cache an offline backbone now, e.g. --prepare offline:dinov2s-minilm",
    )


def _rows() -> list[dict]:
    """One row per registered spec: built-in ones, offline ones with their readiness, then the patterns
    that need the hub or a local checkpoint (the `*` family last)."""
    from mitp.backbones import registered_backbones  # torch: loaded when the command runs (`mitp --help` stays fast)

    families = sorted(registered_backbones(), key=lambda f: (f.pattern == "*", not f.builtin, f.status is None))
    rows = []
    for family in families:
        if family.builtin:
            rows += [
                {
                    "spec": spec,
                    "kind": "builtin",
                    "description": family.description,
                    "state": "builtin",
                    "ready_offline": True,
                }
                for spec in family.known_specs()
            ]
        elif family.status is not None:
            for spec, status in family.status().items():
                state = "ready" if status["ready"] else "installed" if status["installed"] else "missing"
                rows.append(
                    {"spec": spec, "kind": "offline", "state": state, "ready_offline": status["ready"], **status}
                )
        else:
            rows.append(
                {
                    "spec": family.display or family.pattern,
                    "kind": "pretrained",
                    "state": "needs-hub",
                    "ready_offline": False,
                    "description": family.description,
                    "note": "needs the Hugging Face hub or local checkpoint directories",
                }
            )
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

    # torch: loaded when the command runs (`mitp --help` stays fast)
    from mitp.backbones.families.offline import cache_root, ensure_offline_backbone

    if args.prepare:
        # Progress goes to stderr with --json, so stdout stays one JSON object.
        progress = Console(stderr=bool(args.json), soft_wrap=True)
        text_dir, vision_dir = ensure_offline_backbone(args.prepare, progress=lambda msg: progress.print(msg))
        progress.print(
            f"{args.prepare if args.prepare.startswith('offline:') else 'offline:' + args.prepare} "
            f"is ready offline: image encoder {vision_dir}, text encoder {text_dir}"
        )
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
