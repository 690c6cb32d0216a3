"""mitp compare: methods side by side, strict keys, reuse only of identical runs, grid chosen on val."""

import json
from pathlib import Path

import pytest
import yaml

from mitp.app.analysis.compare_plan import GridPoint, config_for_method, parse_grid
from mitp.app.analysis.compare_report import aggregate, markdown_table
from mitp.app.cli import main
from mitp.app.train.config import load_run_config
from mitp.configuration import ConfigError

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"
ROW_KEYS = {"method", "trainable_params", "test", "val", "peak_memory_mb", "train_seconds", "seeds", "selected"}


def compare_args(toy_dataset, out, *extra):
    return [
        "compare",
        "--config",
        str(CONFIG),
        "--set",
        f"data={toy_dataset}",
        "--set",
        "train.epochs=1",
        "--out",
        str(out),
        *extra,
    ]


def test_model_keys_go_to_every_method_and_methods_keys_to_one():
    config = load_run_config(CONFIG, ["model.prompt_init_std=0.01"])
    assert config_for_method(config, "deep_prompts", 3).model == {
        "prompt_init_std": 0.01,
        "num_steps": 3,
        "prompt_length": 4,
    }
    assert config_for_method(config, "pmf", 1).model == {"prompt_init_std": 0.01}
    late = load_run_config(CONFIG)
    assert config_for_method(late, "late_fusion", 1).model == {} and config_for_method(late, "late_fusion", 1).seed == 1
    with pytest.raises(ConfigError, match="unknown to method 'late_fusion'") as err:
        config_for_method(config, "late_fusion", 0)
    assert err.value.key == "model.prompt_init_std"


def test_a_model_key_a_compared_method_does_not_know_fails_before_training(toy_dataset, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(compare_args(toy_dataset, out, "--set", "model.num_steps=2", "--methods", "mitp,late_fusion")) == 2
    err = capsys.readouterr().err
    assert "model.num_steps" in err and "'late_fusion'" in err and "methods:" in err
    assert not (out / "mitp").exists(), "nothing trained"


def test_a_methods_key_the_method_does_not_know_is_named():
    with pytest.raises(ConfigError) as err:
        load_run_config(CONFIG, ["methods.late_fusion.num_steps=2"])
    assert err.value.key == "methods.late_fusion.num_steps"
    with pytest.raises(ConfigError) as err:
        load_run_config(CONFIG, ["methods.nope.num_steps=2"])
    assert err.value.key == "methods.nope"


@pytest.mark.slow
def test_compare_two_methods_end_to_end_and_reuse_only_the_same_config(toy_dataset, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = compare_args(
        toy_dataset, out, "--methods", "mitp,late_fusion", "--seeds", "0", "--set", "methods.late_fusion.train.lr=0.01"
    )  # a train key for one method only
    assert main(args) == 0
    rows = json.loads((out / "compare.json").read_text())
    lrs = {m: load_run_config(out / m / "seed-0" / "config.yaml").train.lr for m in ("mitp", "late_fusion")}
    assert lrs == {"mitp": 0.003, "late_fusion": 0.01}
    assert [r["method"] for r in rows] == ["mitp", "late_fusion"]
    for row in rows:
        assert ROW_KEYS <= set(row) and row["status"] == "ok" and row["seeds"] == [0]
        results = json.loads((out / row["method"] / "seed-0" / "results.json").read_text())
        assert row["test"]["accuracy"] == {"mean": results["test"]["accuracy"], "std": 0.0}
        assert row["trainable_params"] == results["trainable_params"]
    run_config = yaml.safe_load((out / "mitp" / "seed-0" / "config.yaml").read_text())
    assert run_config["model"]["num_steps"] == 3 and "methods" not in run_config  # methods.mitp applied
    assert rows[0]["trainable_params"] > rows[1]["trainable_params"]
    table = (out / "compare.md").read_text()
    assert "| mitp |" in table and "| late_fusion |" in table
    assert (out / "compare.png").stat().st_size > 0

    capsys.readouterr()
    assert main(args) == 0, "a finished comparison is reused, not retrained"
    assert "finished earlier with the same config, reusing its results" in capsys.readouterr().out

    # Other settings into the same --out: refused, naming the run and the key, nothing retrained ...
    before = (out / "mitp" / "seed-0" / "results.json").stat().st_mtime_ns
    assert main([*args, "--set", "train.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.003 in the run, 0.01 asked" in err and str(out / "mitp" / "seed-0") in err
    assert (out / "mitp" / "seed-0" / "results.json").stat().st_mtime_ns == before
    # ... unless --force, which trains them again with the new settings.
    assert main([*args, "--set", "train.lr=0.01", "--force"]) == 0
    assert load_run_config(out / "mitp" / "seed-0" / "config.yaml").train.lr == 0.01


def test_an_out_that_is_a_file_or_a_run_is_refused_before_the_work(toy_dataset, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert main(compare_args(toy_dataset, taken, "--methods", "late_fusion")) == 2
    err = capsys.readouterr().err
    assert f"--out: refusing to write {taken}: it exists and is not a directory" in err and "Traceback" not in err
    assert taken.read_text() == "not a folder"
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "config.yaml").write_text(CONFIG.read_text())
    (run / ".mitp-run").write_text('{"format": 1}\n')
    assert main(compare_args(toy_dataset, run, "--methods", "late_fusion")) == 2
    assert "it holds a run" in capsys.readouterr().err and not (run / "late_fusion").exists()


def test_an_interrupted_compare_prints_one_line_and_exits_130(toy_dataset, tmp_path, capsys, monkeypatch):
    import mitp.app.analysis.compare as compare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "run_comparison", interrupted)
    assert main(compare_args(toy_dataset, tmp_path / "cmp", "--methods", "late_fusion")) == 130
    assert capsys.readouterr().err == "mitp compare: interrupted\n"


def test_unknown_method_fails_before_training(tmp_path, capsys):
    assert main(["compare", "--config", str(CONFIG), "--methods", "mitp,nope", "--out", str(tmp_path)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


# --- the grid --------------------------------------------------------------------------------
def test_grid_is_the_cartesian_product_in_order():
    grid = parse_grid(["train.lr=1e-4,1e-3", "head.dropout=0,0.1"])
    assert [p.as_dict() for p in grid] == [
        {"train.lr": 1e-4, "head.dropout": 0},
        {"train.lr": 1e-4, "head.dropout": 0.1},
        {"train.lr": 1e-3, "head.dropout": 0},
        {"train.lr": 1e-3, "head.dropout": 0.1},
    ]
    assert parse_grid([]) == [GridPoint()]
    for bad in (["train.lr"], ["train.lr=1,1"], ["seed=0,1"], ["train.lr=1", "train.lr=2"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def fake_run(method, lr, seed, val, test):
    results = {
        "selection_metric": "accuracy",
        "val": {"accuracy": val},
        "test": {"accuracy": test},
        "trainable_params": 10,
        "total_params": 100,
        "peak_memory_mb": 1.0,
        "peak_memory_kind": "x",
        "train_seconds": 1.0,
    }
    return {"method": method, "setting": {"train.lr": lr}, "seed": seed, "results": results}


def test_selection_uses_validation_never_test():
    runs = [fake_run("m", 0.1, s, val=0.6, test=0.9) for s in (0, 1)]  # best on test
    runs += [fake_run("m", 0.01, s, val=0.7 + s / 100, test=0.5) for s in (0, 1)]  # best on val
    (row,) = aggregate(runs, ["m"])
    assert row["selected"] == {"train.lr": 0.01}
    assert row["test"]["accuracy"]["mean"] == pytest.approx(0.5)
    assert row["val"]["accuracy"]["mean"] == pytest.approx(0.705)
    assert [g["selected"] for g in row["grid"]] == [False, True]


def test_a_setting_with_a_failed_seed_cannot_be_chosen():
    runs = [
        fake_run("m", 0.1, 0, val=0.99, test=0.9),
        {"method": "m", "setting": {"train.lr": 0.1}, "seed": 1, "error": "RunFailed: boom"},
        fake_run("m", 0.01, 0, val=0.5, test=0.5),
        fake_run("m", 0.01, 1, val=0.5, test=0.5),
    ]
    (row,) = aggregate(runs, ["m"])
    assert row["selected"] == {"train.lr": 0.01} and row["status"] == "partial"
    table = markdown_table([row], load_run_config(CONFIG), [0, 1], parse_grid(["train.lr=0.1,0.01"]))
    assert "(incomplete)" in table and "train.lr=0.01 |" in table


@pytest.mark.slow
def test_grid_end_to_end_chooses_the_best_validation_setting(toy_dataset, tmp_path):
    out = tmp_path / "grid"
    args = compare_args(toy_dataset, out, "--methods", "late_fusion", "--seeds", "0,1", "--grid", "train.lr=1e-4,3e-2")
    assert main(args) == 0
    (row,) = json.loads((out / "compare.json").read_text())
    val = {}
    for lr in ("0.0001", "0.03"):
        runs = [
            json.loads((out / "late_fusion" / f"train.lr={lr}" / f"seed-{s}" / "results.json").read_text())
            for s in (0, 1)
        ]
        assert {r["seed"] for r in runs} == {0, 1}
        val[float(lr)] = sum(r["val"]["accuracy"] for r in runs) / 2
    assert row["selected"] == {"train.lr": max(val, key=val.get)}
    assert load_run_config(out / "late_fusion" / "train.lr=0.03" / "seed-1" / "config.yaml").train.lr == 0.03
    table = (out / "compare.md").read_text()
    assert "setting chosen on val" in table and "per grid point" in table


def test_a_train_key_for_one_method_is_checked_and_applied_to_it_alone():
    with pytest.raises(ConfigError) as err:
        load_run_config(CONFIG, ["methods.mitp.train.lrr=1"])
    assert err.value.key == "methods.mitp.train.lrr"
    single = load_run_config(CONFIG, ["methods.mitp.train.lr=0.02"]).for_method("mitp")
    assert single.train.lr == 0.02 and single.methods == {}


def test_one_seed_shows_no_spread():
    runs = [fake_run("m", lr, 0, val=v, test=0.5) for lr, v in ((0.1, 0.6), (0.01, 0.7))]
    (row,) = aggregate(runs, ["m"])
    config = load_run_config(CONFIG)
    table = markdown_table([row], config, [0], parse_grid(["train.lr=0.1,0.01"]))
    assert "±" not in table and "Seed 0, one run per setting" in table
    assert "| 0.7000* |" in table and "| 0.5000 |" in table
    (row,) = aggregate(runs + [fake_run("m", lr, 1, val=0.6, test=0.5) for lr in (0.1, 0.01)], ["m"])
    assert "0.6500 ± 0.0707*" in markdown_table([row], config, [0, 1], parse_grid(["train.lr=0.1,0.01"]))


def test_table_reports_the_tasks_other_metrics_on_test():
    runs = []
    for seed, (acc, macro) in enumerate(((0.7, 0.5), (0.8, 0.6))):
        run = fake_run("m", 0.1, seed, val=acc, test=acc)
        run["results"]["test"] = {"accuracy": acc, "f1_macro": macro, "f1_weighted": macro + 0.1}
        runs.append(run)
    (row,) = aggregate(runs, ["m"])
    table = markdown_table([row], load_run_config(CONFIG), [0, 1], parse_grid([]))
    header, _, line = table.splitlines()[4:7]
    assert "| test accuracy | test f1_macro | test f1_weighted |" in header
    assert "| 0.7500 ± 0.0707 | 0.5500 ± 0.0707 | 0.6500 ± 0.0707 |" in line


@pytest.mark.slow
def test_jobs_run_at_once_with_their_share_of_threads_and_give_the_same_results(toy_dataset, tmp_path, capsys):
    """Two runs at a time (each on cores / 2 threads) against one at a time: the same table, each run
    recording its threads, a failing job leaving the others alone, and a finished compare reused as is."""
    from mitp.app.threads import available_cores

    def rows_of(out):
        return {r["method"]: r for r in json.loads((out / "compare.json").read_text())}

    failing = ["--set", "methods.deep_prompts.num_steps=50"]  # a valid config; 50 steps do not fit a 6-layer tower
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(compare_args(toy_dataset, one, "--methods", "mitp,late_fusion", "--seeds", "0")) == 0
    assert (
        main(
            compare_args(
                toy_dataset, two, "--methods", "mitp,late_fusion,deep_prompts", "--seeds", "0", *failing, "--jobs", "2"
            )
        )
        == 1
    )
    out = capsys.readouterr().out
    assert "3 runs, 2 at a time" in out and "finished, val accuracy" in out
    a, b = rows_of(one), rows_of(two)
    # the failing run is reported with its real error, on the console as in compare.json; the others ran
    assert b["deep_prompts"]["status"] == "failed" and "num_steps" in json.dumps(b["deep_prompts"]["errors"])
    (error,) = b["deep_prompts"]["errors"].values()
    (said,) = [line for line in out.splitlines() if "deep_prompts, seed 0 failed: " in line]
    assert said.endswith(error) and "mitp train: error: " in error and "num_steps" in error
    assert b["mitp"]["status"] == b["late_fusion"]["status"] == "ok" and "failed:" in (two / "compare.md").read_text()
    for method in ("mitp", "late_fusion"):
        for split in ("val", "test"):
            for metric, stat in a[method][split].items():
                assert b[method][split][metric]["mean"] == pytest.approx(stat["mean"], abs=1e-6), (method, metric)
        results = json.loads((two / method / "seed-0" / "results.json").read_text())
        assert results["num_threads"] == max(1, available_cores() // 2)
        assert load_run_config(two / method / "seed-0" / "config.yaml").train.num_threads == results["num_threads"]
        assert (two / "logs" / f"{method}-seed-0.log").is_file()
    before = (two / "mitp" / "seed-0" / "results.json").stat().st_mtime_ns
    assert main(compare_args(toy_dataset, two, "--methods", "mitp,late_fusion", "--seeds", "0")) == 0  # --jobs 1 now
    assert (two / "mitp" / "seed-0" / "results.json").stat().st_mtime_ns == before  # threads do not make a conflict


def test_the_table_links_to_the_significance_of_its_differences():
    """The method best on validation against each other one, on the chosen setting's runs (seeds)."""
    import shlex

    runs = []
    for method, val in (("a", 0.6), ("b", 0.7), ("c", 0.65)):
        for seed in (0, 1):
            run = fake_run(method, 0.1, seed, val=val, test=0.5)
            run["run_dir"] = f"out/{method}/seed-{seed}"
            runs.append(run)
    runs.append({**fake_run("b", 0.01, 0, val=0.1, test=0.9), "run_dir": "out/b/other"})  # not chosen
    rows = aggregate(runs, ["a", "b", "c"])
    table = markdown_table(rows, load_run_config(CONFIG), [0, 1], parse_grid([]))
    assert "## Is a difference resolved? (b, best on validation, against each other method)" in table
    commands = [line for line in table.splitlines() if line.startswith("mitp significance")]
    assert [shlex.split(c) for c in commands] == [
        [
            "mitp",
            "significance",
            "--a",
            "out/b/seed-0",
            "out/b/seed-1",
            "--b",
            f"out/{o}/seed-0",
            f"out/{o}/seed-1",
            "--split",
            "test",
        ]
        for o in ("c", "a")
    ]
