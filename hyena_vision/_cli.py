"""Console-script entry points (``[project.scripts]``): each calls a command's ``main`` in ``hyena_vision.engine``.

The commands' ``main`` return their results (summaries, metrics) for callers in Python; a console script's return
value would become the exit status, so these wrappers drop it. The engine is imported only when a command runs.
"""

from __future__ import annotations

import importlib


def _run(module: str) -> None:
    importlib.import_module(f"hyena_vision.engine.{module}").main()


def train() -> None:
    _run("classify")


def train_lm() -> None:
    _run("lm")


def make_shards() -> None:
    _run("make_shards")


def evaluate() -> None:
    _run("evaluate")


def perplexity() -> None:
    _run("perplexity")


def sample() -> None:
    _run("sample")


def compare_cifar10() -> None:
    _run("compare_cifar10")


def compare_lm() -> None:
    _run("compare_lm")


def train_clip() -> None:
    _run("clip")


def compare_clip() -> None:
    importlib.import_module("hyena_vision.engine.clip").compare_main()
