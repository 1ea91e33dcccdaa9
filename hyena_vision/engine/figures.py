"""Figures the one way every report and benchmark draws them: off-screen (Agg), tight layout, 120 dpi, closed after."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["save_figure", "subplots"]


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` on the off-screen Agg backend (no display on servers and in tests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out, write and close ``fig`` (closing frees it: reports draw many figures in one process)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
