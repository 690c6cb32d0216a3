"""``mitp bench``: training-step time, peak memory and inference speed of every method, side by side."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console

from ..errors import UserError
from ._args import non_negative_int, positive_int, positive_int_list


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time training steps and inference, and measure training memory, for several methods",
        description="One fresh worker process per method, all on the same backbone (random weights); the "
        "methods are asked in turn, round after round, so machine drift hits all of them alike.",
    )
    p.add_argument(
        "--backbone", default="shape:clip-vit-base-patch16", help="backbone spec (default: shape:clip-vit-base-patch16)"
    )
    p.add_argument(
        "--methods",
        default="",
        help="comma-separated method names, a setting as NAME[key=value;...] e.g. mitp[prompt_gate=false] "
        "(default: every registered method)",
    )
    p.add_argument(
        "--target",
        dest="targets",
        action="append",
        default=[],
        metavar="METHOD/REF:KEY<=BOUND",
        help="check a ratio of two measured rows, e.g. mitp/full_finetune:train_step_ms<=0.45 "
        "(repeatable; printed as met or NOT met)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="batch size (default: 8)")
    p.add_argument(
        "--steps",
        type=positive_int,
        default=3,
        help="timed training steps and inference passes per method per round (default: 3)",
    )
    p.add_argument("--rounds", type=positive_int, default=3, help="rounds over all methods (default: 3)")
    p.add_argument(
        "--warmup",
        type=non_negative_int,
        default=2,
        help="untimed training steps and inference passes per method first (default: 2)",
    )
    p.add_argument("--seq-len", type=positive_int, default=32, help="text length in tokens (default: 32)")
    p.add_argument("--num-classes", type=positive_int, default=101, help="classes of the head (default: 101)")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=positive_int, help="torch threads per worker (default: every available core)")
    p.add_argument(
        "--epochs",
        type=positive_int,
        metavar="N",
        help="instead: what a user pays per epoch, every method side by side in its best mode (prefix "
        "cache on where there is a frozen prefix), N epochs, --rounds rounds",
    )
    p.add_argument(
        "--samples", type=positive_int, default=16, help="with --epochs: generated training samples (default: 16)"
    )
    p.add_argument("--compile", action="store_true", help="with --epochs: train.compile (torch.compile) the methods")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead: where a training step's CPU time goes, top operators per method (torch.profiler)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="instead: requests/s and p50/p99 latency of `mitp serve` (first method), batched and not",
    )
    p.add_argument("--requests", type=positive_int, default=200, help="with --serve: requests per mode (default: 200)")
    p.add_argument("--clients", type=positive_int, default=16, help="with --serve: concurrent clients (default: 16)")
    p.add_argument(
        "--load",
        type=float,
        metavar="SECONDS",
        help="with --serve: instead, a `mitp serve` process under --clients clients sending good and bad "
        "requests for SECONDS; requests/s, latency, status codes, server memory (bench/load.py)",
    )
    p.add_argument(
        "--inference",
        action="store_true",
        help="instead: the first method's forward pass on eager PyTorch, the ONNX graph and the int8 graph "
        "(exported once, each runtime in a fresh process, same threads), per batch size",
    )
    p.add_argument(
        "--batch-sizes",
        type=positive_int_list,
        default=(1, 16),
        metavar="N,N",
        help="with --inference: batch sizes (default: 1,16)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        metavar="PX",
        help="with --inference: square images of PX pixels (default: the backbone's)",
    )
    p.add_argument("--json", metavar="FILE", help="write the rows as a JSON list to FILE")
    p.add_argument("--markdown", metavar="FILE", help="write a markdown table (with this command and date) to FILE")
    p.set_defaults(func=run)


def command_line(args) -> str:
    """The command that reproduces this run, every setting spelled out."""
    parts = [
        "mitp",
        "bench",
        "--backbone",
        args.backbone,
        "--methods",
        args.methods,
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--rounds",
        str(args.rounds),
        "--warmup",
        str(args.warmup),
        "--seq-len",
        str(args.seq_len),
        "--num-classes",
        str(args.num_classes),
    ]
    for flag, value in (
        ("--device", args.device),
        ("--threads", args.threads),
        ("--json", args.json),
        ("--markdown", args.markdown),
    ):
        if value is not None:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(part) for part in parts)


def run(args) -> int:
    from .. import bench  # torch: loaded when the command runs (`mitp --help` stays fast)

    methods = bench.method_names(args.methods)
    if args.epochs is not None:
        return run_epochs(args, methods, bench)
    if args.serve:
        return run_serve(args, methods, bench)
    if args.profile:
        return run_profile(args, methods, bench)
    if args.inference:
        return run_inference(args, methods, bench)
    settings = bench.BenchSettings(
        backbone=args.backbone,
        methods=methods,
        batch_size=args.batch_size,
        steps=args.steps,
        rounds=args.rounds,
        warmup=args.warmup,
        seq_len=args.seq_len,
        device=args.device,
        threads=args.threads,
        num_classes=args.num_classes,
        targets=tuple(bench.Target.parse(text) for text in args.targets),
    )
    # Wide enough for the table when the output goes to a file or pipe (rich assumes 80 columns there).
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 150)
    log = Console(stderr=True, soft_wrap=True)
    try:
        result = bench.run_benchmark(settings, progress=lambda message: log.print(message, highlight=False))
    except bench.BenchError as err:
        if err.user:
            raise UserError(str(err)) from None
        raise
    console.print(bench.render_table(result))
    for line in result.notes + result.checks():
        console.print(line, highlight=False)
    console.print(f"wall time {result.wall_seconds:.0f} s", highlight=False)
    if args.json:
        Path(args.json).write_text(json.dumps(result.rows, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(
            bench.to_markdown(result, command=command_line(args), date=time.strftime("%Y-%m-%d %H:%M %Z"))
        )
    return 0


def _write_outputs(args, kind: str, result, table: str) -> None:
    """--json (the rows) and --markdown (the table with its command and date), for every mode but the step table."""
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(
            f"# mitp bench --{kind}\n\n{table}\n\n    {' '.join(sys.argv)}\n\n{time.strftime('%Y-%m-%d %H:%M %Z')}\n"
        )


def run_epochs(args, methods, bench) -> int:
    """``--epochs``: every method side by side in its best mode, round after round."""
    if args.epochs < 2:
        raise UserError("--epochs must be >= 2: the first epoch of a cached method fills its cache")
    rows = bench.epoch_benchmark(
        args.backbone,
        methods,
        samples=args.samples,
        batch_size=args.batch_size,
        epochs=args.epochs,
        rounds=args.rounds,
        threads=args.threads,
        compile=args.compile,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    table = bench.render_epochs(rows)
    print(table, flush=True)
    _write_outputs(args, "epochs", rows, table)
    return 0


def run_serve(args, methods, bench) -> int:
    """``--serve``: `mitp serve` under concurrent load, with request batching and without; or, with --load,
    a server process under many clients sending good and bad requests."""
    if args.load is not None:
        if args.load <= 0:
            raise UserError("--load must be > 0 seconds")
        result = bench.load_benchmark(
            args.backbone,
            methods[0],
            seconds=args.load,
            clients=args.clients,
            progress=lambda message: print(message, file=sys.stderr, flush=True),
        )
        table = bench.render_load(result)
    else:
        result = bench.serve_benchmark(
            args.backbone, methods[0], requests=args.requests, clients=args.clients, num_classes=args.num_classes
        )
        table = bench.render_serve(result)
    print(table, flush=True)
    _write_outputs(args, "serve", result, table)
    return 0


def run_profile(args, methods, bench) -> int:
    """``--profile``: the top operators of a training step, per method."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    profiles = [
        bench.profile_step(
            args.backbone,
            method,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            steps=args.steps,
            warmup=args.warmup,
            num_classes=args.num_classes,
        )
        for method in methods
    ]
    table = bench.render_profiles(profiles)
    print(table, flush=True)
    _write_outputs(args, "profile", profiles, table)
    return 0


def run_inference(args, methods, bench) -> int:
    """``--inference``: eager PyTorch against onnxruntime, fp32 and int8, on one exported model."""
    result = bench.inference_benchmark(
        args.backbone,
        methods[0],
        batch_sizes=args.batch_sizes,
        rounds=args.rounds,
        steps=args.steps,
        warmup=args.warmup,
        threads=args.threads or bench.available_cores(),
        seq_len=args.seq_len,
        image_size=args.image_size,
        num_classes=args.num_classes,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    table = bench.render_inference(result)
    print(table, flush=True)
    _write_outputs(args, "inference", result, table)
    return 0
