"""mitp significance: resampled metrics match a direct computation on the resampled samples, both
bootstrap intervals (seeds + samples, samples only) match loops written out by hand, one missing
condition scores as `mitp robustness` does, and runs of different data or a run given twice are refused."""

import json
import math
import shlex
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from mitp.app.analysis.compare_report import significance_command
from mitp.app.analysis.significance import (
    ScoredRun,
    distinct_run_draws,
    paired_bootstrap,
    parse_missing,
    seeds_for_width,
)
from mitp.app.cli import build_parser, main
from mitp.app.errors import UserError
from mitp.metrics import METRICS, compute_metrics, decisions, resampled_metrics
from mitp.synthetic import write_toy_dataset

CONFIG = Path(__file__).parents[1] / "configs" / "tiny.yaml"


def random_task(task, seed, samples=40, classes=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(samples, classes, generator=g)
    if task == "single_label":
        return logits, torch.randint(0, classes, (samples,), generator=g)
    return logits, (torch.rand(samples, classes, generator=g) > 0.6).float()


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
@pytest.mark.parametrize("seed", range(3))
def test_resampled_metrics_equal_the_metrics_of_the_resampled_samples(task, seed):
    logits, labels = random_task(task, seed)
    drawn = torch.randint(0, len(labels), (5, len(labels)), generator=torch.Generator().manual_seed(seed))
    weights = torch.zeros(5, len(labels)).scatter_add_(1, drawn, torch.ones(5, len(labels)))
    weights = torch.cat([torch.ones(1, len(labels)), weights])  # row 0: the split itself
    indices = [torch.arange(len(labels))] + list(drawn)
    ours = resampled_metrics(*decisions(logits, labels, task, 0.4), weights, task)
    assert set(ours) == set(METRICS[task])
    for row, index in enumerate(indices):
        expected = compute_metrics(logits[index], labels[index], task, 0.4)
        for metric, value in expected.items():
            assert ours[metric][row].item() == pytest.approx(value, abs=1e-12), (metric, row)


def scored(name, logits, labels, task="single_label", ids=None):
    predicted, target = decisions(logits, labels, task)
    ids = ids or [f"{i:03d}" for i in range(len(labels))]
    return ScoredRun(name, name.split("-")[0], task, ("a", "b", "c", "d"), ids, predicted, target)


def test_the_bootstrap_matches_a_loop_written_out():
    """Both intervals against a double loop (draws, then the runs each draw picks) on the same draws: the
    sample draws first, then A's run picks, then B's, all from one generator seeded with ``seed``."""
    _, labels = random_task("single_label", 0)
    runs = {
        f"{name}-{seed}": random_task("single_label", 10 * seed + len(name))[0]
        for name, seeds in (("mitp", 3), ("dp", 2))
        for seed in range(seeds)
    }
    names_a, names_b = ("mitp-0", "mitp-1", "mitp-2"), ("dp-0", "dp-1")
    a = [scored(n, runs[n], labels) for n in names_a]
    b = [scored(n, runs[n], labels) for n in names_b]
    report = paired_bootstrap(a, b, resamples=300, seed=7)
    generator = torch.Generator().manual_seed(7)
    drawn = torch.randint(0, len(labels), (300, len(labels)), generator=generator)
    picks_a = torch.randint(0, 3, (300, 3), generator=generator)
    picks_b = torch.randint(0, 2, (300, 2), generator=generator)
    quantiles = torch.tensor([0.025, 0.975], dtype=torch.float64)
    for metric in METRICS["single_label"]:

        def side(names, index=slice(None), metric=metric):
            values = [compute_metrics(runs[n][index], labels[index], "single_label")[metric] for n in names]
            return sum(values) / len(values)

        samples_only = torch.tensor([side(names_a, i) - side(names_b, i) for i in drawn], dtype=torch.float64)
        both_levels = []
        for i, pick_a, pick_b in zip(drawn, picks_a, picks_b):
            picked_a = [names_a[p] for p in pick_a]  # a run picked twice counts twice
            picked_b = [names_b[p] for p in pick_b]
            both_levels.append(side(picked_a, i) - side(picked_b, i))
        both_levels = torch.tensor(both_levels, dtype=torch.float64)
        m = report["metrics"][metric]
        assert m["a"] == pytest.approx(side(names_a), abs=1e-12)
        assert m["difference"] == pytest.approx(m["a"] - m["b"], abs=1e-12)
        for key, diffs in (("samples_only", samples_only), ("seeds_and_samples", both_levels)):
            assert m[key]["interval"] == pytest.approx(torch.quantile(diffs, quantiles).tolist(), abs=1e-12), key
            assert m[key]["p_a_not_above"] == pytest.approx((diffs <= 0).double().mean().item()), key


def test_the_samples_only_interval_does_not_depend_on_resampling_the_runs():
    _, labels = random_task("single_label", 3)
    a = [scored(f"a-{i}", random_task("single_label", 30 + i)[0], labels) for i in range(3)]
    b = [scored(f"b-{i}", random_task("single_label", 40 + i)[0], labels) for i in range(2)]
    both = paired_bootstrap(a, b, resamples=400, seed=5)
    fixed = paired_bootstrap(a, b, resamples=400, seed=5, resample_runs=False)
    assert fixed["runs_resampled"] is False
    for metric, m in fixed["metrics"].items():
        assert m["seeds_and_samples"] is None
        assert m["samples_only"] == both["metrics"][metric]["samples_only"]


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
def test_identical_runs_give_the_samples_only_interval(task):
    """Seeds that agree add no variance: resampling them changes nothing, to the last digit."""
    logits_a, labels = random_task(task, 4, samples=60)
    logits_b, _ = random_task(task, 5, samples=60)
    a = [scored(f"a-{i}", logits_a, labels, task) for i in range(3)]
    b = [scored(f"b-{i}", logits_b, labels, task) for i in range(2)]
    report = paired_bootstrap(a, b, resamples=500, seed=1)
    for metric, m in report["metrics"].items():
        assert m["seeds_and_samples"] == m["samples_only"], metric
        assert m["samples_only"]["interval"][0] < m["samples_only"]["interval"][1], metric


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
def test_seeds_that_disagree_widen_the_interval(task):
    _, labels = random_task(task, 6, samples=80)
    a = [scored(f"a-{i}", random_task(task, 60 + i, samples=80)[0], labels, task) for i in range(3)]
    b = [scored(f"b-{i}", random_task(task, 70 + i, samples=80)[0], labels, task) for i in range(3)]
    report = paired_bootstrap(a, b, resamples=2000, seed=2)
    for metric, m in report["metrics"].items():
        assert statistics.stdev(m["a_per_run"]) > 0.01, metric  # the seeds disagree
        low, high = m["seeds_and_samples"]["interval"]
        samples_low, samples_high = m["samples_only"]["interval"]
        assert high - low > samples_high - samples_low, metric


def test_the_same_seed_gives_the_same_numbers():
    _, labels = random_task("multi_label", 7)
    a = [scored(f"a-{i}", random_task("multi_label", 80 + i)[0], labels, "multi_label") for i in range(2)]
    b = [scored(f"b-{i}", random_task("multi_label", 90 + i)[0], labels, "multi_label") for i in range(2)]
    first, again = paired_bootstrap(a, b, 300, seed=3), paired_bootstrap(a, b, 300, seed=3)
    assert first == again
    other = paired_bootstrap(a, b, 300, seed=4)
    assert other["metrics"]["f1_micro"]["seeds_and_samples"] != first["metrics"]["f1_micro"]["seeds_and_samples"]


def test_a_side_with_one_run_is_refused_by_name_unless_only_samples_are_resampled():
    logits, labels = random_task("single_label", 8)
    one, two = [scored("x-0", logits, labels)], [scored("y-0", logits, labels), scored("y-1", logits, labels)]
    with pytest.raises(UserError, match=r"A has one run \(x-0\).*--samples-only"):
        paired_bootstrap(one, two)
    with pytest.raises(UserError, match=r"B has one run \(x-0\)"):
        paired_bootstrap(two, one)
    assert paired_bootstrap(one, two, resamples=50, resample_runs=False)["runs_resampled"] is False


@pytest.mark.parametrize("copies", [1, 2])
def test_identical_sides_differ_by_nothing_and_a_perfect_side_wins(copies):
    logits, labels = random_task("single_label", 1, samples=60)
    resample_runs = copies > 1
    keys = ("samples_only", "seeds_and_samples") if resample_runs else ("samples_only",)
    chance = paired_bootstrap(
        [scored(f"x-{i}", logits, labels) for i in range(copies)],
        [scored(f"y-{i}", logits, labels) for i in range(copies)],
        resamples=200,
        resample_runs=resample_runs,
    )
    perfect = paired_bootstrap(
        [scored(f"p-{i}", torch.nn.functional.one_hot(labels, 4).float(), labels) for i in range(copies)],
        [scored(f"x-{i}", random_task("single_label", 1 + i, samples=60)[0], labels) for i in range(copies)],
        resamples=200,
        resample_runs=resample_runs,
    )
    for metric in METRICS["single_label"]:
        for key in keys:
            assert chance["metrics"][metric][key]["interval"] == [0.0, 0.0]
            assert chance["metrics"][metric][key]["p_a_not_above"] == 1.0
            assert perfect["metrics"][metric][key]["interval"][0] > 0
            assert perfect["metrics"][metric][key]["p_a_not_above"] == 0.0


def test_runs_of_other_samples_or_labels_are_refused():
    logits, labels = random_task("single_label", 2)
    base = scored("x-0", logits, labels)
    shifted = scored("y-0", logits, labels, ids=[f"{i:03d}" for i in range(1, len(labels) + 1)])
    with pytest.raises(UserError, match="y-0 and x-0 were scored on different samples"):
        paired_bootstrap([base], [shifted])
    with pytest.raises(UserError, match="disagree on the labels"):
        paired_bootstrap([base], [scored("z-0", logits, (labels + 1) % 4)])


@pytest.fixture(scope="module")
def late_fusion_run(toy_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "late_fusion"
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIG),
                "--set",
                f"data={toy_dataset}",
                "--set",
                "method=late_fusion",
                "--set",
                "train.epochs=1",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    return run


def test_the_command_scores_each_run_as_evaluate_does(tiny_run, late_fusion_run, capsys):
    capsys.readouterr()
    expected = []
    for run in (tiny_run, late_fusion_run):
        assert main(["evaluate", str(run), "--split", "val", "--json"]) == 0
        expected.append(json.loads(capsys.readouterr().out))
    one_each = ["significance", "--a", str(tiny_run), "--b", str(late_fusion_run), "--split", "val"]
    assert main(one_each + ["--samples-only", "--resamples", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["a"]["method"], report["b"]["method"], report["samples"]) == ("mitp", "late_fusion", 16)
    assert report["runs_resampled"] is False and "missing" not in report
    for metric, m in report["metrics"].items():
        assert m["a_per_run"] == [pytest.approx(expected[0][metric], abs=1e-9)]
        assert m["b_per_run"] == [pytest.approx(expected[1][metric], abs=1e-9)]
        assert m["seeds_and_samples"] is None
    assert main(one_each + ["--samples-only", "--resamples", "100"]) == 0
    out = capsys.readouterr().out
    assert "| accuracy |" in out and "seeds + samples" not in out and "Seed variance is not counted" in out


def copies(tmp_path, *runs):
    """Each run and a copy of it (another run directory, the same predictions: seeds that agree)."""
    return [[str(run), str(shutil.copytree(run, tmp_path / f"{Path(run).name}-copy"))] for run in runs]


def test_the_command_resamples_seeds_and_says_how_many(tiny_run, late_fusion_run, tmp_path, capsys):
    """Two runs a side (a run and its copy: seeds that agree, so both intervals are equal)."""
    a, b = copies(tmp_path, tiny_run, late_fusion_run)
    two_each = ["significance", "--a", *a, "--b", *b, "--split", "val", "--resamples", "200"]
    capsys.readouterr()
    assert main(two_each + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runs_resampled"] is True
    for m in report["metrics"].values():
        assert m["seeds_and_samples"] == m["samples_only"]
    assert main(two_each) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[2]
    assert "| 95% interval, seeds + samples (2 + 2 seeds) | P(A <= B) | 95% interval, samples only |" in header
    assert "(A 2, B 2; 3 and 3 distinct draws)" in out
    assert main(two_each + ["--target-width", "0.1"]) == 0
    assert "seeds a side for width 0.1 |" in capsys.readouterr().out


def test_the_command_refuses_one_run_a_side_before_scoring(tiny_run, late_fusion_run, tmp_path, capsys):
    capsys.readouterr()
    never_scored = tmp_path / "not-a-run"  # scoring first would refuse it instead
    args = ["significance", "--a", str(tiny_run), "--b", str(late_fusion_run), str(never_scored)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"A has one run ({tiny_run})" in err and "--samples-only" in err and "scored" not in err
    assert main(args + ["--samples-only", "--target-width", "0.1"]) == 2
    assert "drop --samples-only" in capsys.readouterr().err


def test_a_run_given_twice_is_refused_by_name_before_scoring(tiny_run, tmp_path, monkeypatch, capsys):
    """On one side or on both, however its path is spelled: a run given twice would count its seed twice in
    the bootstrap. The other runs do not exist: scoring any run first would be another error."""
    run, (o1, o2, o3) = str(tiny_run), [str(tmp_path / f"other-{i}") for i in range(3)]
    monkeypatch.chdir(tiny_run.parent.parent)
    relative = f"{tiny_run.parent.name}/{tiny_run.name}"
    spelled = f"{tiny_run.parent.name}/./{tiny_run.name}/"
    for a, b, named in (
        ([run, o1, run], [o2, o3], f"{run} is given twice in --a"),
        ([run, o1], [o2, o2], f"{o2} is given twice in --b"),
        ([run, o1], [o2, run], f"{run} is given in --a and in --b"),
        ([relative, o1], [o2, spelled], f"{relative} (and as {spelled}) is given in --a and in --b"),
        ([o1, spelled], [run, o2], f"{spelled} (and as {run}) is given in --a and in --b"),
        ([run], [run], f"{run} is given in --a and in --b"),
    ):
        for samples_only in ([], ["--samples-only"]):
            args = ["significance", "--a", *a, "--b", *b, "--split", "val", "--resamples", "50", *samples_only]
            assert main(args) == 2, args
            err = capsys.readouterr().err
            assert err == f"mitp significance: error: {named}: each run is one seed and counts once in the " + (
                "bootstrap; give each run once\n"
            ), err


def test_runs_of_another_dataset_are_refused_by_name(tiny_run, tmp_path, capsys):
    other = write_toy_dataset(tmp_path / "other", sizes=(24, 12, 12), seed=5)
    run = tmp_path / "other-run"
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIG),
                "--set",
                f"data={other}",
                "--set",
                "method=late_fusion",
                "--set",
                "train.epochs=1",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["significance", "--a", str(tiny_run), "--b", str(run), "--split", "val", "--samples-only"]) == 2
    assert f"{run} and {tiny_run} were scored on different samples" in capsys.readouterr().err


def robustness_values(runs, modality, rates, out, capsys):
    args = ["robustness", *map(str, runs), "--modality", modality, "--rates", rates, "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    return [curve["values"] for curve in json.loads((out / "robustness.json").read_text())["runs"]]


@pytest.mark.parametrize("modality", ["image", "both"])
def test_one_missing_condition_scores_as_robustness_does(tiny_run, late_fusion_run, modality, tmp_path, capsys):
    runs = [tiny_run, late_fusion_run]
    at_0, at_90 = zip(*robustness_values(runs, modality, "0,0.9", tmp_path / "robustness", capsys))
    base = ["significance", "--a", str(tiny_run), "--b", str(late_fusion_run), "--samples-only", "--json"]
    for condition, expected in ((f"{modality}=0.9", at_90), ("none", at_0)):
        assert main(base + ["--missing", condition, "--resamples", "50"]) == 0
        report = json.loads(capsys.readouterr().out)
        accuracy = report["metrics"]["accuracy"]
        assert accuracy["a_per_run"] + accuracy["b_per_run"] == pytest.approx(list(expected), abs=1e-9), condition
        assert report["missing"]["condition"] == condition and report["missing"]["seed"] == 0
    assert main(base[:-1] + ["--missing", f"{modality}=0.9", "--resamples", "50"]) == 0
    assert "missing in 90% of the samples (drop seed 0)" in capsys.readouterr().out.splitlines()[1]


def test_runs_with_other_drop_seeds_are_refused_unless_a_seed_is_given(tiny_run, late_fusion_run, tmp_path, capsys):
    other = tmp_path / "mitp-drop-seed-3"
    shutil.copytree(tiny_run, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config.setdefault("eval", {}).setdefault("missing", {})["seed"] = 3
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["significance", "--a", str(other), "--b", str(late_fusion_run), "--samples-only", "--resamples", "50"]
    capsys.readouterr()
    assert main(args + ["--missing", "text=0.5"]) == 2
    err = capsys.readouterr().err
    assert f"{other} has eval.missing.seed 3 but {late_fusion_run} has 0" in err and "--missing-seed" in err
    assert main(args + ["--missing", "none", "--json"]) == 0  # nothing dropped: the seed picks nothing
    assert json.loads(capsys.readouterr().out)["missing"]["seed"] == 0
    assert main(args + ["--missing", "text=0.5", "--missing-seed", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["missing"] == {
        "condition": "text=0.5",
        "modality": "text",
        "rate": 0.5,
        "seed": 3,
        "description": "text missing in 50% of the samples (drop seed 3)",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--missing", "image"], "--missing: expected image=RATE"),
        (["--missing", "photo=0.5"], "--missing: expected image=RATE"),
        (["--missing", "text=1.5"], "--missing: expected image=RATE"),
        (["--missing-seed", "2"], "--missing-seed chooses the drop pattern of --missing"),
    ],
)
def test_bad_missing_options_are_refused_by_name(tiny_run, late_fusion_run, args, message, capsys):
    capsys.readouterr()
    assert main(["significance", "--a", str(tiny_run), "--b", str(late_fusion_run), "--samples-only", *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_conditions_parse():
    assert (parse_missing("image=0.9").modality, parse_missing("image=0.9").rate) == ("image", 0.9)
    assert str(parse_missing("both=0.5")) == "both=0.5" and str(parse_missing("none")) == "none"
    none = parse_missing("none").config(seed=4)
    assert (none.image, none.text, none.both, none.seed, none.active) == (0, 0, 0, 4, False)
    both = parse_missing("both=0.9").config(seed=1)
    assert (both.image, both.text, both.both, both.seed) == (0.45, 0.45, 0, 1)
    for bad in ("", "image=", "image=-0.1", "both=nan", "none=0"):
        with pytest.raises(ValueError, match="expected image=RATE"):
            parse_missing(bad)


def test_seeds_for_width_follows_the_normal_approximation():
    a, b = [0.097, 0.192, 0.128], [0.090, 0.192, 0.089]  # per-run macro-F1 of a multi-label example
    spread = statistics.variance(a) + statistics.variance(b)
    z = 1.959963984540054

    def width(n, samples_width):
        return math.sqrt((2 * z) ** 2 * spread / n + samples_width**2)

    for target, samples_width in ((0.05, 0.0), (0.05, 0.02), (0.1, 0.03), (0.02, 0.019)):
        n = seeds_for_width(a, b, target, samples_width=samples_width)
        assert width(n, samples_width) <= target + 1e-12 < width(n - 1, samples_width), (target, samples_width)
    assert seeds_for_width(a, b, 0.05, samples_width=0.05) is None  # the split alone is that wide
    assert seeds_for_width(a, b, 10.0) == 2  # never fewer than the resampled interval accepts
    assert seeds_for_width(a, b, 0.05, level=0.9) < seeds_for_width(a, b, 0.05)
    with pytest.raises(ValueError, match="at least 2 runs a side"):
        seeds_for_width(a[:1], b, 0.05)


def test_distinct_run_draws():
    assert [distinct_run_draws(n) for n in (1, 2, 3, 5, 10)] == [1, 3, 10, 126, 92378]


def test_the_command_line_for_a_report_parses_back_to_its_runs():
    a, b = ["runs/mitp/seed-0", "runs/mitp/seed 1"], [Path("runs/late_fusion/seed-0"), Path("runs/lf/seed-1")]
    line = significance_command(a, b, "val", missing="image=0.9")
    assert line == (
        "mitp significance --a runs/mitp/seed-0 'runs/mitp/seed 1' --b runs/late_fusion/seed-0 runs/lf/seed-1 "
        "--split val --missing image=0.9"
    )
    words = shlex.split(line)
    assert words[:2] == ["mitp", "significance"]
    args = build_parser().parse_args(words[1:])
    assert (args.a, args.b, args.split, args.missing, args.samples_only) == (
        a,
        list(map(str, b)),
        "val",
        "image=0.9",
        False,
    )
    one = significance_command(a[:1], b)
    assert one.endswith("--split test --samples-only") and build_parser().parse_args(shlex.split(one)[1:]).samples_only
    with pytest.raises(ValueError, match="at least one run a side"):
        significance_command([], b)


def test_a_rendered_command_line_runs(tiny_run, late_fusion_run, tmp_path, capsys):
    line = significance_command(*copies(tmp_path, tiny_run, late_fusion_run), "val")
    capsys.readouterr()
    assert main(shlex.split(line)[1:] + ["--resamples", "50"]) == 0
    assert "| accuracy |" in capsys.readouterr().out
