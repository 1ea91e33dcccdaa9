"""Helpers that test files import by name (``from hv_testing import ...``).

They live here, not in ``conftest.py``: ``tests/timm_generic`` has a conftest of its own, and once pytest has
imported it, ``import conftest`` inside a test can resolve to that one.
"""

import importlib.util
import pathlib
import sys

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]

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


def load_script(relative: str):
    """Imports a script of the checkout (``eval/x.py``) as a module, so a test can call its ``main(argv)``."""
    spec = importlib.util.spec_from_file_location(pathlib.Path(relative).stem + "_script", REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module
