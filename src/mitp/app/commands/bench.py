"""``mitp bench``: what the methods cost, side by side, one subcommand per question.

``step``: a training step's time and peak memory, and an inference pass, per method; ``profile``: where a
training step's CPU time goes; ``epochs``: an epoch in each method's best mode; ``inference``: eager
PyTorch against the ONNX graphs; ``serve``: `mitp serve` under concurrent clients.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from rich.console import Console

from mitp.atomic import write_json_atomic, write_text_atomic

from ..outputs import check_outputs
from ..threads import available_cores
from ._args import non_negative_int, picked, positive_float, positive_int, positive_int_list

# Options several benchmarks share; each benchmark adds the ones it honours (and may say them its own way).
SHARED = {
    "--backbone": {"default": "shape:clip-vit-base-patch16", "help": "backbone spec (default: %(default)s)"},
    "--methods": {
        "default": "",
        "help": "comma-separated method names, a setting as NAME[key=value;...] e.g. mitp[prompt_gate=false] "
        "(default: every registered method)",
    },
    "--method": {"default": "mitp", "help": "method name, or a setting as NAME[key=value;...] (default: mitp)"},
    "--batch-size": {"type": positive_int, "default": 8, "help": "batch size (default: 8)"},
    "--steps": {"type": positive_int, "default": 3},
    "--rounds": {"type": positive_int, "default": 3},
    "--warmup": {"type": non_negative_int, "default": 2},
    "--seq-len": {"type": positive_int, "default": 32, "help": "text length in tokens (default: 32)"},
    "--num-classes": {"type": positive_int, "default": 101, "help": "classes of the head (default: %(default)s)"},
    "--threads": {"type": positive_int},
}


HELP = "what the methods cost: training step, profile, epoch, inference runtimes, serving"
DESCRIPTION = (
    "What the methods cost, side by side on one backbone with random weights (speed and memory "
    "do not depend on the weights): one benchmark per subcommand, each with its own --help."
)


def add_arguments(parser) -> None:
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    step = _benchmark(
        benchmarks,
        measure_step,
        "training-step time, peak training memory and inference speed of several methods",
        "One fresh worker process per method; the methods are asked in turn, round after round, so machine "
        "drift hits all of them alike.",
    )
    _shared(
        step,
        "--backbone --methods --batch-size --steps --rounds --warmup --seq-len --num-classes --threads",
        steps="timed training steps and inference passes per method per round (default: 3)",
        rounds="rounds over all methods (default: 3)",
        warmup="untimed training steps and inference passes per method first (default: 2)",
        threads="torch threads per worker (default: every available core)",
    )
    step.add_argument("--device", help="cpu or cuda[:N] (default: cuda if available, else cpu)")
    step.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="METHOD/REF:KEY<=BOUND",
        help="check a ratio of two measured rows, e.g. mitp/full_finetune:train_step_ms<=0.45 "
        "(repeatable; printed as met or NOT met)",
    )

    profile = _benchmark(
        benchmarks,
        measure_profile,
        "where a training step's CPU time goes: the top operators per method (torch.profiler)",
        "Each method in this process, on the same random batch: warm-up steps, then profiled ones.",
    )
    _shared(
        profile,
        "--backbone --methods --batch-size --steps --warmup --seq-len --num-classes --threads",
        steps="profiled training steps per method (default: 3)",
        warmup="untimed training steps per method first (default: 2)",
        threads="torch threads (default: as torch sets them)",
    )

    epochs = _benchmark(
        benchmarks,
        measure_epochs,
        "what a user pays per epoch, every method in its best mode (prefix cache where there is a frozen prefix)",
        "Every method trains as a real `mitp train` in a fresh process, the methods in turn round after round; "
        "the figures are the last epoch's (the first fills the cache).",
    )
    _shared(
        epochs,
        "--backbone --methods --batch-size --rounds --threads",
        rounds="rounds over all methods (default: 3)",
        threads="threads per training run (default: every available core)",
    )
    epochs.add_argument("--epochs", type=positive_int, default=2, help="epochs per run, >= 2 (default: 2)")
    epochs.add_argument("--samples", type=positive_int, default=16, help="generated training samples (default: 16)")
    epochs.add_argument("--compile", action="store_true", help="train.compile (torch.compile) the methods")

    inference = _benchmark(
        benchmarks,
        measure_inference,
        "one method's forward pass on eager PyTorch, the ONNX graph and the int8 graph",
        "Exported once; each runtime loads it in a fresh process with the same threads, and the runtimes are "
        "asked in turn, round after round, per batch size.",
    )
    _shared(
        inference,
        "--backbone --method --rounds --steps --warmup --seq-len --num-classes --threads",
        rounds="rounds over all runtimes (default: 3)",
        steps="timed calls per runtime and batch size per round (default: 3)",
        warmup="untimed calls per runtime and batch size first (default: 2)",
        threads="threads per runtime (default: every available core)",
    )
    inference.add_argument(
        "--batch-sizes", type=positive_int_list, default=(1, 16), metavar="N,N", help="batch sizes (default: 1,16)"
    )
    inference.add_argument("--image-size", type=positive_int, metavar="PX", help="square images (default: backbone's)")

    serve = _benchmark(
        benchmarks,
        measure_serve,
        "requests/s and p50/p99 latency of `mitp serve`, batched and not; or, with --load, a server under load",
        "Without --load: the app in this process, with request batching and without, --requests each. With "
        "--load: a `mitp serve` process under --clients clients sending good and bad requests for SECONDS.",
    )
    _shared(serve, "--backbone --method")
    serve.add_argument("--num-classes", type=positive_int, default=10, help="classes of the head (default: 10)")
    serve.add_argument("--clients", type=positive_int, default=16, help="concurrent clients (default: 16)")
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--requests", type=positive_int, default=200, help="requests per mode (default: 200)")
    mode.add_argument(
        "--load",
        type=positive_float,
        metavar="SECONDS",
        help="instead: requests/s, latency, status codes and server memory of a server process under load",
    )

    for benchmark in (step, profile, epochs, inference, serve):
        benchmark.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
        benchmark.add_argument("--markdown", metavar="FILE", help="write a report with its command to FILE")


def _benchmark(benchmarks, measure, help: str, description: str) -> argparse.ArgumentParser:
    parser = benchmarks.add_parser(measure.__name__.removeprefix("measure_"), help=help, description=description)
    parser.set_defaults(measure=measure)
    return parser


def _shared(parser, flags: str, **helps: str) -> None:
    """Add the SHARED options named in ``flags``; where SHARED gives no help, ``helps`` does (``seq_len=`` for
    --seq-len): what the option means in this benchmark."""
    for flag in flags.split():
        parser.add_argument(flag, **{"help": helps.get(flag[2:].replace("-", "_")), **SHARED[flag]})


NOT_OPTIONS = ("command", "benchmark", "func", "measure", "argv")  # what the namespace holds besides options


def command_line(args) -> str:
    """The command that reproduces this run, every setting spelled out (an option's flag is its name)."""
    parts = ["mitp", "bench", args.benchmark]
    for name, value in vars(args).items():
        if name in NOT_OPTIONS or value is None or value is False or value == []:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):  # a repeatable option
            parts += [part for item in value for part in (flag, item)]
        else:
            parts += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return shlex.join(parts)


def run(args) -> int:
    from .. import bench  # torch: loaded when the command runs (`mitp --help` stays fast)

    started = time.perf_counter()
    check_outputs(files=[path for path in (args.json, args.markdown) if path], flag="--json/--markdown")
    if "methods" in vars(args):  # checked, and spelled out in the recorded command (none named: every method)
        args.methods = ",".join(bench.settings.method_names(args.methods))
    result, markdown = args.measure(args, bench)
    if args.json:
        write_json_atomic(args.json, result)
    if args.markdown:
        write_text_atomic(
            args.markdown,
            f"# mitp bench {args.benchmark}\n\n{markdown.strip()}\n\nReproduce with:\n\n```\n{command_line(args)}\n"
            f"```\n\nMeasured {time.strftime('%Y-%m-%d %H:%M %Z')}; the whole run took "
            f"{time.perf_counter() - started:.0f} s.\n",
        )
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_step(args, bench) -> tuple[list[dict], str]:
    settings = bench.settings.BenchSettings(
        methods=tuple(args.methods.split(",")),
        targets=tuple(bench.settings.Target.parse(text) for text in args.target),
        **picked(args, "backbone batch_size steps rounds warmup seq_len device threads num_classes"),
    )
    result = bench.measure.run_benchmark(settings, progress=_say)
    # Wide enough for the table when the output goes to a file or pipe (rich assumes 80 columns there).
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 150, highlight=False)
    console.print(bench.measure.terminal_table(result))
    for line in result.notes + result.checks():
        console.print(line)
    console.print(f"wall time {result.wall_seconds:.0f} s")
    return result.rows, bench.measure.render(result)


def measure_profile(args, bench) -> tuple[list[dict], str]:
    profiles = [
        bench.profile.profile_step(
            args.backbone, method, **picked(args, "batch_size seq_len steps warmup num_classes threads")
        )
        for method in args.methods.split(",")
    ]
    return _printed(profiles, bench.profile.render(profiles))


def measure_epochs(args, bench) -> tuple[list[dict], str]:
    rows = bench.epochs.epoch_benchmark(
        args.backbone,
        tuple(args.methods.split(",")),
        **picked(args, "samples batch_size epochs rounds threads compile"),
        progress=_say,
    )
    return _printed(rows, bench.epochs.render(rows))


def measure_inference(args, bench) -> tuple[dict, str]:
    result = bench.inference.inference_benchmark(
        args.backbone,
        args.method,
        **picked(args, "batch_sizes rounds steps warmup seq_len image_size num_classes"),
        threads=args.threads or available_cores(),
        progress=_say,
    )
    return _printed(result, bench.inference.render(result))


def measure_serve(args, bench) -> tuple[list[dict] | dict, str]:
    if args.load is None:
        rows = bench.serving.serve_benchmark(
            args.backbone, args.method, requests=args.requests, clients=args.clients, num_classes=args.num_classes
        )
        return _printed(rows, bench.serving.render(rows))
    args.requests = None  # not sent under --load: left out of the recorded command
    result = bench.load.load_benchmark(
        args.backbone, args.method, args.load, clients=args.clients, num_classes=args.num_classes, progress=_say
    )
    return _printed(result, bench.load.render(result))


def _printed(result, markdown: str):
    print(markdown, flush=True)
    return result, markdown
