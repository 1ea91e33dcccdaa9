"""Console-script entry points: they run the scripts of a source checkout (train/, eval/ beside the package).

The package never imports those scripts; these functions only locate and execute them, so the commands work from an
editable install (``pip install -e .``) of the repository.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(script: str) -> None:
    path = REPO / script
    if not path.is_file():
        sys.exit(f"{script} not found beside the package ({REPO}); these commands need an editable install")
    sys.argv[0] = str(path)
    sys.path.insert(0, str(REPO))
    runpy.run_path(str(path), run_name="__main__")


def classify() -> None:
    _run("train/classify.py")


def make_shards() -> None:
    _run("train/make_shards.py")


def evaluate() -> None:
    _run("eval/evaluate.py")


def compare_cifar10() -> None:
    _run("eval/compare_cifar10.py")
