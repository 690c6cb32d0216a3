"""``mitp bench``: rows, ratios, round order and reports (no assertion on timing values)."""

import json
import shlex
from pathlib import Path

import pytest

from mitp.app.bench.measure import run_benchmark
from mitp.app.bench.model import random_classifier
from mitp.app.bench.settings import REQUIRED_KEYS, ROW_KEYS, BenchSettings, Target
from mitp.app.cli import build_parser, main
from mitp.app.commands.bench import command_line
from mitp.backbones import build_backbone
from mitp.configuration import ConfigError
from mitp.methods import build_model, make_config

FAST = [
    "--backbone",
    "tiny-clip",
    "--batch-size",
    "2",
    "--steps",
    "1",
    "--warmup",
    "1",
    "--seq-len",
    "8",
    "--num-classes",
    "3",
    "--threads",
    "1",
    "--device",
    "cpu",
]


SETTING = "mitp[prompt_gate=false;num_steps=2]"


def step_argv(out):
    return [
        "bench",
        "step",
        *FAST,
        "--methods",
        f"mitp,{SETTING},full_finetune",
        "--rounds",
        "1",
        "--target",
        "mitp/full_finetune:train_step_ms<=0.45",
        "--json",
        str(out / "rows.json"),
        "--markdown",
        str(out / "table.md"),
    ]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One fast CLI run shared by the tests: tiny-clip, mitp, a mitp setting and full_finetune, one round."""
    out = tmp_path_factory.mktemp("bench")
    assert main(step_argv(out)) == 0
    return out


@pytest.mark.slow
def test_json_rows_have_the_required_keys_with_sane_types(bench_run):
    rows = json.loads((bench_run / "rows.json").read_text())
    assert [row["method"] for row in rows] == ["mitp", SETTING, "full_finetune"]
    for row in rows:
        assert set(REQUIRED_KEYS) <= set(row) and set(row) == set(ROW_KEYS)
        assert row["backbone"] == "tiny-clip" and row["batch_size"] == 2
        assert isinstance(row["trainable_params"], int) and row["trainable_params"] > 0
        for key in ("peak_memory_mb", "train_step_ms", "infer_samples_per_s", "ratio_step_vs_full"):
            assert isinstance(row[key], (int, float)), key
        # the peak is what the training steps add to the built model (clamped at 0 by definition)
        assert row["peak_memory_mb"] == pytest.approx(
            max(0.0, row["peak_memory_total_mb"] - row["model_memory_mb"]), abs=0.15
        )
        assert row["infer_samples_per_s"] == pytest.approx(2 / (row["infer_ms"] / 1000), rel=0.01)
        assert row["device"] == "cpu" and row["threads"] == 1 and row["memory_kind"].startswith("cpu_peak_rss")
        assert row["timed_train_steps"] == 1 and row["timed_infer_passes"] == 1


@pytest.mark.slow
def test_trainable_params_match_the_built_model(bench_run):
    rows = {row["method"]: row for row in json.loads((bench_run / "rows.json").read_text())}
    backbone = build_backbone("tiny-clip")
    for method in ("mitp", "full_finetune"):
        expected = build_model(make_config(method, num_classes=3), backbone).num_parameters(True)
        assert rows[method]["trainable_params"] == expected


@pytest.mark.slow
def test_full_finetune_is_the_reference(bench_run):
    rows = {row["method"]: row for row in json.loads((bench_run / "rows.json").read_text())}
    full, mitp = rows["full_finetune"], rows["mitp"]
    assert full["peak_memory_mb"] > 0  # the towers' gradients and AdamW state
    assert mitp["ratio_step_vs_full"] == pytest.approx(mitp["train_step_ms"] / full["train_step_ms"], abs=1e-3)
    assert mitp["ratio_memory_vs_full"] == pytest.approx(mitp["peak_memory_mb"] / full["peak_memory_mb"], abs=1e-3)


@pytest.mark.slow
def test_markdown_table_is_written(bench_run):
    text = (bench_run / "table.md").read_text()
    assert "| method | trainable params |" in text
    assert "| mitp |" in text and "| full_finetune |" in text
    assert "growth of peak RSS in a fresh process per method" in text
    assert text.startswith("# mitp bench step\n")
    assert f"mitp bench step --backbone tiny-clip --methods 'mitp,{SETTING},full_finetune'" in text  # shell-quoted
    assert "mitp train_step_ms / full_finetune train_step_ms =" in text  # the --target, met or not


def recorded_command(markdown: str) -> list[str]:
    """The argv of the command a --markdown report records (the line after "Reproduce with:")."""
    lines = markdown.splitlines()
    command = lines[lines.index("Reproduce with:") + 3]
    assert command.startswith("mitp bench ")
    return shlex.split(command)[1:]


@pytest.mark.slow
def test_the_recorded_command_reproduces_the_run_setting_for_setting(bench_run):
    given = vars(build_parser().parse_args(step_argv(bench_run)))
    recorded = recorded_command((bench_run / "table.md").read_text())
    assert vars(build_parser().parse_args(recorded)) == given
    assert "--rounds" in recorded and "--seq-len" in recorded and "--target" in recorded  # defaults spelled out


@pytest.mark.parametrize(
    "argv, default",
    [
        (
            ["step", "--methods", "mitp,pmf", "--target", "mitp/pmf:train_step_ms<=1", "--target", "x/y:infer_ms<=2"],
            "--rounds",
        ),
        (
            ["profile", "--backbone", "tiny-clip", "--methods", "mitp", "--warmup", "0", "--json", "a b.json"],
            "--seq-len",
        ),
        (["epochs", "--methods", "mitp", "--compile", "--epochs", "3"], "--samples"),
        (
            ["inference", "--method", "mitp[prompt_gate=false]", "--batch-sizes", "1,4", "--image-size", "112"],
            "--steps",
        ),
        (["serve", "--method", "late_fusion", "--requests", "9"], "--clients"),
    ],
)
def test_the_recorded_command_spells_out_every_setting(argv, default):
    args = build_parser().parse_args(["bench", *argv])
    recorded = shlex.split(command_line(args))
    assert recorded[:3] == ["mitp", "bench", argv[0]] and default in recorded and "--backbone" in recorded
    assert vars(build_parser().parse_args(recorded[1:])) == vars(args)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: BENCHMARK"),
        (["serve", "--epochs", "2"], "unrecognized arguments: --epochs 2"),
        (["step", "--load", "3"], "unrecognized arguments: --load 3"),
        (["step", "--serve"], "unrecognized arguments: --serve"),
        (["epochs", "--device", "cpu"], "unrecognized arguments: --device cpu"),
        (["inference", "--methods", "mitp"], "unrecognized arguments: --methods mitp"),
        (["profile", "--target", "mitp/pmf:train_step_ms<=1"], "unrecognized arguments: --target"),
        (["serve", "--load", "3", "--requests", "5"], "argument --requests: not allowed with argument --load"),
        (["serve", "--load", "0"], "argument --load: must be a number > 0, got 0"),
    ],
)
def test_each_benchmark_refuses_the_options_of_the_others(capsys, argv, message):
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_an_output_path_is_checked_before_the_work(tmp_path, capsys):
    assert main(["bench", "step", *FAST, "--methods", "mitp", "--markdown", str(tmp_path)]) == 2
    assert f"--json/--markdown: refusing to write {tmp_path}: it is a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_rounds_alternate_the_methods_and_ratios_need_the_reference():
    settings = BenchSettings(
        backbone="tiny-clip",
        methods=("late_fusion", "mitp"),
        batch_size=2,
        steps=1,
        rounds=2,
        warmup=1,
        seq_len=8,
        num_classes=3,
        device="cpu",
        threads=1,
    )
    result = run_benchmark(settings)
    assert result.schedule == [
        (0, "late_fusion"),
        (0, "mitp"),
        (1, "late_fusion"),
        (1, "mitp"),
        (2, "late_fusion"),
        (2, "mitp"),
    ]
    assert [m for r, m in result.schedule if r > 0] == ["late_fusion", "mitp", "late_fusion", "mitp"]
    assert all(row["timed_train_steps"] == 2 for row in result.rows)
    assert all(row["ratio_step_vs_full"] is None and row["ratio_memory_vs_full"] is None for row in result.rows)
    assert any("full_finetune was not measured" in note for note in result.notes)


def test_targets_are_parsed_and_stated_as_facts():
    rows = [
        {"method": "mitp", "train_step_ms": 30.0, "peak_memory_mb": 50.0},
        {"method": "pmf", "train_step_ms": 20.0, "peak_memory_mb": 40.0},
        {"method": "full_finetune", "train_step_ms": 100.0, "peak_memory_mb": 100.0},
        {"method": "mitp[prompt_gate=false]", "train_step_ms": 28.0, "peak_memory_mb": 50.0},
    ]
    specs = [
        "mitp/full_finetune:train_step_ms<=0.45",
        "mitp/full_finetune:peak_memory_mb<=0.27",
        "mitp/pmf:train_step_ms<=1.3",
        "mitp/mitp[prompt_gate=false]:train_step_ms<=1.1",
        "mitp/deep_prompts:train_step_ms<=1",
    ]  # deep_prompts was not measured: no line
    lines = [line for line in (Target.parse(spec).check(rows) for spec in specs) if line]
    assert lines == [
        "mitp train_step_ms / full_finetune train_step_ms = 0.30 (target <= 0.45: met)",
        "mitp peak_memory_mb / full_finetune peak_memory_mb = 0.50 (target <= 0.27: NOT met)",
        "mitp train_step_ms / pmf train_step_ms = 1.50 (target <= 1.3: NOT met)",
        "mitp train_step_ms / mitp[prompt_gate=false] train_step_ms = 1.07 (target <= 1.1: met)",
    ]
    for bad in ("mitp:train_step_ms<=1", "mitp/pmf:speed<=1", "mitp/pmf:train_step_ms<=x", "mitp/pmf"):
        with pytest.raises(ConfigError, match="METHOD/REFERENCE:KEY<=BOUND"):
            Target.parse(bad)


@pytest.mark.slow
def test_a_method_setting_is_a_row_of_its_own(bench_run):
    rows = {row["method"]: row for row in json.loads((bench_run / "rows.json").read_text())}
    assert rows[SETTING]["trainable_params"] < rows["mitp"]["trainable_params"]  # no gates, fewer steps


def test_a_misspelt_method_setting_is_named(capsys):
    assert main(["bench", "step", *FAST, "--methods", "mitp[prompt_gat=false]"]) == 2
    assert "prompt_gat" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "mitp,nope"], "unknown method 'nope'"),
        (["--methods", "mitp,mitp"], "'mitp' is listed twice"),
        (["--backbone", "shape:nope"], "unknown shape spec"),
        (["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
    ],
)
def test_errors_exit_2_and_name_the_problem(capsys, args, message):
    assert main(["bench", "step", *FAST, *args]) == 2
    assert message in capsys.readouterr().err


def test_bench_serve_reports_batched_and_unbatched(tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert (
        main(
            [
                "bench",
                "serve",
                "--backbone",
                "tiny-clip",
                "--method",
                "late_fusion",
                "--requests",
                "40",
                "--clients",
                "8",
                "--num-classes",
                "3",
                "--json",
                str(out),
                "--markdown",
                str(tmp_path / "serve.md"),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert [r["mode"] for r in rows] == ["batched", "unbatched"]
    batched, unbatched = rows
    assert unbatched["largest_batch"] == 1 and unbatched["batches"] == 40  # one request per batch
    assert batched["batches"] <= 40 and batched["p99_ms"] >= batched["p50_ms"]
    table = capsys.readouterr().out
    assert "batched / unbatched throughput" in table
    markdown = (tmp_path / "serve.md").read_text()
    assert markdown.startswith("# mitp bench serve\n") and table.strip() in markdown


def test_bench_profile_lists_the_top_operators(tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert (
        main(
            [
                "bench",
                "profile",
                "--backbone",
                "tiny-clip",
                "--methods",
                "mitp,deep_prompts,mitp[prompt_gate=false]",
                "--steps",
                "1",
                "--warmup",
                "1",
                "--batch-size",
                "2",
                "--seq-len",
                "8",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    profiles = json.loads(out.read_text())
    assert [p["method"] for p in profiles] == ["mitp", "deep_prompts", "mitp[prompt_gate=false]"]
    for p in profiles:
        shares = [o["share"] for o in p["ops"]]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0001
        assert any("addmm" in o["op"] or "mm" in o["op"] for o in p["ops"]), "matrix products are among the top"
    assert "self ms / step" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_serve_load_drives_a_server_process_with_good_and_bad_requests(tmp_path, capsys):
    from mitp.app.bench.load import MIX

    out = tmp_path / "load.json"
    assert (
        main(
            [
                "bench",
                "serve",
                "--load",
                "3",
                "--clients",
                "6",
                "--backbone",
                "tiny-clip",
                "--method",
                "late_fusion",
                "--json",
                str(out),
                "--markdown",
                str(tmp_path / "load.md"),
            ]
        )
        == 0
    )
    row = json.loads(out.read_text())
    assert row["good_5xx"] == 0 and row["requests"] > 0 and row["rss_mb"]["peak"] >= row["rss_mb"]["start"] > 0
    assert row["server_tracebacks"] == 0
    expected = {
        "good_multipart": {"200"},
        "good_json": {"200"},
        "bad_json": {"400"},
        "deep_json": {"400"},
        "surrogate": {"400"},
        "pixel_bomb": {"413"},
    }
    for kind, statuses in row["statuses"].items():
        assert kind in MIX
        if kind in expected:
            assert set(statuses) == expected[kind], (kind, statuses)
        else:  # a body refused while it streams: 413, or the connection closed under the client
            assert all(s == "413" or s.startswith("closed") for s in statuses), statuses
    assert "| kind | share |" in capsys.readouterr().out
    recorded = recorded_command((tmp_path / "load.md").read_text())
    assert "--requests" not in recorded  # not sent under --load; the command runs as recorded
    assert build_parser().parse_args(recorded).load == 3


@pytest.mark.slow
def test_bench_inference_times_each_runtime_in_its_own_process(tmp_path, capsys):
    out = tmp_path / "inference.json"
    assert (
        main(
            [
                "bench",
                "inference",
                "--backbone",
                "tiny-clip",
                "--method",
                "mitp",
                "--batch-sizes",
                "1,4",
                "--rounds",
                "1",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["runtime"], r["batch_size"]) for r in rows] == [
        (runtime, size) for size in (1, 4) for runtime in ("torch", "onnx", "onnx-int8")
    ]
    assert all(r["timed_calls"] == 2 and r["ms_per_batch"] > 0 for r in rows)
    for r in rows:  # a deployment's process: onnxruntime workers never load torch
        assert r["torch_in_process"] == (r["runtime"] == "torch")
        torch_row = next(t for t in rows if t["runtime"] == "torch" and t["batch_size"] == r["batch_size"])
        assert r["speedup_vs_torch"] == pytest.approx(torch_row["ms_per_batch"] / r["ms_per_batch"], rel=0.02)
    assert result["parity_max_abs"] < 1e-4 and "| onnx-int8 | 4 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "sizes, message",
    [
        ("1,0", "must be an integer >= 1, got 0"),
        ("1,x", "must be comma-separated integers >= 1, got '1,x'"),
        ("4,4", "lists a value twice: '4,4'"),
    ],
)
def test_bench_inference_batch_sizes_are_checked(capsys, sizes, message):
    assert main(["bench", "inference", "--batch-sizes", sizes]) == 2
    assert f"argument --batch-sizes: {message}" in capsys.readouterr().err


def documented_bench_commands() -> list[tuple[str, str]]:
    """(file, command) for every `mitp bench` command line in README.md and docs/ (continued lines joined)."""
    root = Path(__file__).parents[1]
    found = []
    for path in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        text = path.read_text().replace("\\\n", " ")
        found += [(path.name, line.strip()) for line in text.splitlines() if line.strip().startswith("mitp bench ")]
    return found


def test_every_documented_bench_command_parses():
    commands = documented_bench_commands()
    assert len(commands) >= 10 and {command.split()[2] for _, command in commands} >= {
        "step",
        "profile",
        "epochs",
        "inference",
        "serve",
    }
    for name, command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except Exception as err:  # named with the file and the command
            pytest.fail(f"{name}: {command}: {err}")


def test_the_benchmarked_model_takes_a_method_setting_and_opens_its_gates():
    ungated = random_classifier("tiny-clip", "mitp[prompt_gate=false]", 3, max_length=1000)
    assert ungated.model.config.prompt_gate is False and ungated.labels.num_classes == 3
    assert ungated.preprocessor.max_length == ungated.model.backbone.text_format.max_length  # at most the tower's
    gated = random_classifier("tiny-clip", "mitp", 3, max_length=8, open_gates=True)
    gates = [p for name, p in gated.model.named_parameters() if "gates" in name]
    assert gates and all(bool((p == 1).all()) for p in gates) and gated.config.preprocessing.max_text_length == 8
