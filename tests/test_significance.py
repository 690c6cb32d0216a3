"""mitp significance: resampled metrics match a direct computation on the resampled samples, the paired
bootstrap matches a loop written out by hand, and runs of different data are refused."""

import json
from pathlib import Path

import pytest
import torch

from mitp.app.analysis.significance import ScoredRun, paired_bootstrap
from mitp.app.cli import main
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
    _, labels = random_task("single_label", 0)
    runs = {
        f"{name}-{seed}": random_task("single_label", 10 * seed + len(name))[0]
        for name in ("mitp", "dp")
        for seed in range(2)
    }
    a = [scored(n, runs[n], labels) for n in ("mitp-0", "mitp-1")]
    b = [scored(n, runs[n], labels) for n in ("dp-0", "dp-1")]
    report = paired_bootstrap(a, b, resamples=300, seed=7)
    drawn = torch.randint(0, len(labels), (300, len(labels)), generator=torch.Generator().manual_seed(7))
    for metric in METRICS["single_label"]:

        def side(names, index=slice(None), metric=metric):
            return sum(compute_metrics(runs[n][index], labels[index], "single_label")[metric] for n in names) / 2

        diffs = torch.tensor(
            [side(("mitp-0", "mitp-1"), i) - side(("dp-0", "dp-1"), i) for i in drawn], dtype=torch.float64
        )
        m = report["metrics"][metric]
        assert m["a"] == pytest.approx(side(("mitp-0", "mitp-1")), abs=1e-12)
        assert m["difference"] == pytest.approx(m["a"] - m["b"], abs=1e-12)
        assert m["interval"] == pytest.approx(
            torch.quantile(diffs, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        )
        assert m["p_a_not_above"] == pytest.approx((diffs <= 0).double().mean().item())


def test_identical_sides_differ_by_nothing_and_a_perfect_side_wins():
    logits, labels = random_task("single_label", 1, samples=60)
    chance = paired_bootstrap([scored("x-0", logits, labels)], [scored("y-0", logits, labels)], resamples=200)
    perfect = paired_bootstrap(
        [scored("p-0", torch.nn.functional.one_hot(labels, 4).float(), labels)],
        [scored("x-0", logits, labels)],
        resamples=200,
    )
    for metric in METRICS["single_label"]:
        assert chance["metrics"][metric]["interval"] == [0.0, 0.0]
        assert chance["metrics"][metric]["p_a_not_above"] == 1.0
        assert perfect["metrics"][metric]["interval"][0] > 0
        assert perfect["metrics"][metric]["p_a_not_above"] == 0.0


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
    assert (
        main(
            [
                "significance",
                "--a",
                str(tiny_run),
                "--b",
                str(late_fusion_run),
                "--split",
                "val",
                "--resamples",
                "100",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert (report["a"]["method"], report["b"]["method"], report["samples"]) == ("mitp", "late_fusion", 16)
    for metric, m in report["metrics"].items():
        assert m["a_per_run"] == [pytest.approx(expected[0][metric], abs=1e-9)]
        assert m["b_per_run"] == [pytest.approx(expected[1][metric], abs=1e-9)]
    assert (
        main(
            ["significance", "--a", str(tiny_run), "--b", str(late_fusion_run), "--split", "val", "--resamples", "100"]
        )
        == 0
    )
    assert "| accuracy |" in capsys.readouterr().out


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
    assert main(["significance", "--a", str(tiny_run), "--b", str(run), "--split", "val"]) == 2
    assert f"{run} and {tiny_run} were scored on different samples" in capsys.readouterr().err
