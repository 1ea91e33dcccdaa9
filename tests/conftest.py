"""Test set-up shared by every test file.

Without a GPU the Triton kernels run in the interpreter (TRITON_INTERPRET=1, CPU tensors). The variable must be set
before triton is imported, hence here; `import torch` does not import triton.
"""

import os
import pathlib

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


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
