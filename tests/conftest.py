import os
import socket
from pathlib import Path

import pytest
import torch

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
WORDNET_DIR = Path("/usr/share/wordnet")
# Pretrained weights come from installed packages; a test that reached for the hub would hang
# on a machine without the network instead of failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def mnist_dir() -> Path:
    """Where the MNIST IDX files are: $LOWDIM_MNIST_DIR, else data/mnist (`make mnist`)."""
    return Path(os.environ.get("LOWDIM_MNIST_DIR", Path(__file__).parents[1] / "data" / "mnist"))


def require(path: Path, how: str) -> Path:
    """Real-data tests run wherever the data is; in CI (which installs it) a missing folder is a
    failure, never a skip."""
    if not path.is_dir() or not any(path.iterdir()):
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing in CI; {how}")
        pytest.skip(f"{path} is missing; {how}")
    return path


@pytest.fixture
def fashion_dir() -> Path:
    return require(FASHION_DIR, "apt-get install dataset-fashion-mnist")


@pytest.fixture
def wordnet_dir() -> Path:
    return require(WORDNET_DIR, "apt-get install wordnet-base")


@pytest.fixture
def mnist_path() -> Path:
    return require(mnist_dir(), "run `make mnist`")


@pytest.fixture
def free_port() -> int:
    """A TCP port on loopback that is free now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A bug in lowdim must fail the test with its traceback, not become the CLI's one-line
# "internal error" (tests of that line itself unset this).
os.environ.setdefault("LOWDIM_DEBUG", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip where there is no GPU (CI); `make gpu-suite` runs them."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (make gpu-suite runs it)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
