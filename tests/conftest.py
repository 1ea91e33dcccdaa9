"""Test set-up shared by every test file.

Without a GPU the Triton kernels run in the interpreter (TRITON_INTERPRET=1, CPU tensors). The variable must be set
before triton is imported, hence here; `import torch` does not import triton.
"""

import os
import pathlib
import tarfile

import pytest
import torch
from hv_testing import REPO

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def device() -> str:
    """'cuda' when a GPU is present (kernels compiled for real), else 'cpu' (Triton interpreter)."""
    return DEVICE


@pytest.fixture
def shared_data() -> pathlib.Path:
    """../shared/data beside the checkout (real CIFAR-10, ImageNet sample, Tiny Shakespeare)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not found")
    return SHARED_DATA


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory):
    """Factory: ``cifar_subset(train_per_class, test_per_class)`` extracts the first images of every class from the
    real CIFAR-10 tar into a fresh ImageFolder (``<root>/{train,test}/<class>/NNNN.jpg``) and returns its root."""
    archive = SHARED_DATA / "cifar10-jpg.tar.gz"

    def extract(train_per_class: int, test_per_class: int) -> pathlib.Path:
        if not archive.is_file():
            pytest.skip(f"{archive} not found")
        root = tmp_path_factory.mktemp("cifar")
        wanted = {
            f"cifar10/{split}/{name}/{i:04d}.jpg"
            for name in CIFAR10_CLASSES
            for split, count in (("train", train_per_class), ("test", test_per_class))
            for i in range(count)
        }
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name in wanted]
            tar.extractall(root, members=members, filter="data")
        assert len(members) == len(wanted)
        return root / "cifar10"

    return extract


@pytest.fixture(scope="module")
def one_thread():
    """Many small ops on 2 shared cores: one intra-op thread avoids spin-waiting thread pools (several times faster).
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
