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
