"""Command-line options the timing benchmarks (``eval/bench_*.py``) share."""

from __future__ import annotations

import argparse

__all__ = ["add_timing_args"]


def add_timing_args(parser: argparse.ArgumentParser, *, warmup: int, iters: int, device: bool = False) -> None:
    """``--warmup`` and ``--iters`` (untimed and timed calls per measurement); with ``device``, ``--device`` too
    (default: CUDA when present)."""
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls before each measurement")
    parser.add_argument("--iters", type=int, default=iters, help="timed calls per measurement")
    if device:
        import torch

        parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
