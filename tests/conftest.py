"""Test set-up shared by every test file.

Without a GPU the Triton kernels run in the interpreter (TRITON_INTERPRET=1, CPU tensors). The variable must be set
before triton is imported, hence here; `import torch` does not import triton.
"""

import importlib.util
import os
import pathlib
import sys
import tarfile

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Relative tolerance for results of different computations (other shapes, crops, batching, thread counts): the BLAS
# kernel picked per shape, CPU model and thread count rounds differently in the last bits.
REL_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float | None = None) -> None:
    """``actual`` equals ``expected`` up to ``rel`` (default: the dtype's ``REL_TOL``) of ``expected``'s largest
    magnitude, elementwise. For results of different computations; exact equality stays for the very same one."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    rel = REL_TOL[expected.dtype] if rel is None else rel
    scale = expected.abs().max().item()
    assert scale > 0, "compare on non-zero values"
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


REPO = pathlib.Path(__file__).resolve().parents[1]
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


def load_script(relative: str):
    """Imports a script of the checkout (``eval/x.py``) as a module, so a test can call its ``main(argv)``."""
    spec = importlib.util.spec_from_file_location(pathlib.Path(relative).stem + "_script", REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module
