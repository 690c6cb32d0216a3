import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the hub
# Tiny models gain nothing from threads, and two cores shared with subprocesses
# (torchrun tests) slow down badly when every process spins two OpenMP threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from mitp.backbones import build_backbone  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_clip():
    return build_backbone("tiny-clip")


@pytest.fixture(scope="session")
def tiny_pair():
    return build_backbone("tiny-pair")


@pytest.fixture(params=["tiny-clip", "tiny-pair"])
def tiny_backbone(request, tiny_clip, tiny_pair):
    return {"tiny-clip": tiny_clip, "tiny-pair": tiny_pair}[request.param]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory):
    """A small generated dataset (32 / 16 / 16) that tests read but never change."""
    from mitp.synthetic import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy-shared"), sizes=(32, 16, 16))


@pytest.fixture(scope="session")
def tiny_run(toy_dataset, tmp_path_factory):
    """A finished MITP run on ``toy_dataset`` (configs/tiny.yaml, 2 epochs), shared read-only."""
    from pathlib import Path

    from mitp.app.cli import main

    run = tmp_path_factory.mktemp("runs-shared") / "mitp"
    config = Path(__file__).parents[1] / "configs" / "tiny.yaml"
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--set",
                f"data={toy_dataset}",
                "--set",
                "train.epochs=2",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    return run
