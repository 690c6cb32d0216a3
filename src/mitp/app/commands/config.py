"""``mitp config``: every key of a run config for one method, with its default and what it does."""

from __future__ import annotations

import json

import yaml

TOP_LEVEL = ("data", "backbone", "method", "seed")  # the rest of RunConfig's keys are the sections below


HELP = "print every run-config key with its default and help"
DESCRIPTION = (
    "Print a run config for METHOD with every key at its default, each with what it does (commented YAML), or --json."
)


def add_arguments(p) -> None:
    p.add_argument("--method", default="mitp", help="a registered method (default: mitp)")
    p.add_argument("--json", action="store_true", help="one JSON object: sections of {key, type, default, help}")


def sections(method: str) -> dict[str, list[dict]]:
    """Every key of a run config for ``method``: the top level, then the model, head, train and eval sections."""
    # torch: loaded when the command runs (`mitp --help` stays fast)
    from mitp.app.train.config import EvalConfig, HeadConfig, RunConfig, TrainConfig
    from mitp.methods import get_method

    model = [
        row
        for row in get_method(method).config_class.fields_help()
        if row["key"] not in ("num_classes", "task", "head")
    ]  # from the data, and the head section
    top = [
        {**row, "default": None if row["default"] == "" else row["default"]}  # required: no default
        for row in RunConfig.fields_help()
        if row["key"] in TOP_LEVEL
    ]
    return {
        "": top,
        "model": model,
        "head": HeadConfig.fields_help(),
        "train": TrainConfig.fields_help(),
        "eval": EvalConfig.fields_help(),
    }


def _line(key: str, value, help: str, indent: str) -> str:
    shown = yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip().removesuffix("...").strip()
    text = f"{indent}{key}: {shown}"
    return f"{text:<40} # {help}" if help else text


def render(method: str) -> str:
    lines = [f"# A run config for method {method}: every key at its default (mitp config --method {method})."]
    for section, rows in sections(method).items():
        indent = ""
        if section:
            note = {
                "model": f"{method}'s own keys (classes and task come from the data); keys for one method "
                f"of a comparison go under methods: {{{method}: {{...}}}}",
                "head": "the classification head, the same for every method",
            }.get(section, "")
            lines.append(f"{section}:" + (f"{'':<{40 - len(section) - 1}} # {note}" if note else ""))
            indent = "  "
        for row in rows:
            value = method if row["key"] == "method" and not section else row["default"]
            lines.append(_line(row["key"], value, row["help"], indent))
    return "\n".join(lines) + "\n"


def run(args) -> int:
    if args.json:
        print(json.dumps({"method": args.method, **{k or "run": v for k, v in sections(args.method).items()}}))
    else:
        print(render(args.method), end="")
    return 0
