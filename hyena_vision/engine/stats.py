"""Statistics for classifier comparisons: top-1 with a Wilson 95% interval, McNemar's paired test, and the
Markdown table and PNG plot that report them.

Two models evaluated on the same test images are compared image by image (McNemar): only the images exactly one
of them gets right (the discordant pairs) carry information, and under "equally good" each such image is a fair
coin. A model is called better or worse than the reference only at p < ``ALPHA``; otherwise "not significant".
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .figures import save_figure, subplots

__all__ = [
    "ALPHA",
    "Comparison",
    "McNemar",
    "RunResult",
    "comparison_table",
    "load_predictions",
    "mcnemar",
    "plot_curves",
    "pop_predictions",
    "save_predictions",
    "write_results",
    "wilson_interval",
]

ALPHA = 0.05
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a proportion ``correct / total``, as fractions in [0, 1].

    Unlike the normal approximation it stays inside [0, 1] and keeps its coverage near 0% and 100%.
    """
    if total <= 0:
        raise ValueError(f"total must be a positive count, got {total}")
    if not 0 <= correct <= total:
        raise ValueError(f"correct must be in [0, total={total}], got {correct}")
    p = correct / total
    denom = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_binom_pmf(k: int, n: int) -> float:
    """log P(X = k) for X ~ Binomial(n, 1/2), through lgamma (no overflow at any n)."""
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)


@dataclass(frozen=True)
class McNemar:
    """McNemar's paired test. ``only_model``: images only the model gets right; ``only_reference``: images only the
    reference gets right. ``p_exact``: two-sided exact binomial p; ``p_mid``: its mid-p version (less conservative,
    closer to nominal size); ``p``: the one reported (mid-p)."""

    only_model: int
    only_reference: int
    p_exact: float
    p_mid: float

    @property
    def p(self) -> float:
        return self.p_mid


def mcnemar(correct: torch.Tensor, reference_correct: torch.Tensor) -> McNemar:
    """McNemar's test of two classifiers on the same images: ``correct`` and ``reference_correct`` are boolean
    (N,) tensors, image i of both being the same test image.

    Exact two-sided p = min(1, 2 P(X <= min(b, c))) with X ~ Binomial(b + c, 1/2) over the b + c discordant images;
    mid-p subtracts P(X = min(b, c)) once. No discordant image: p = 1.
    """
    for name, t in (("correct", correct), ("reference_correct", reference_correct)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.bool or t.ndim != 1:
            raise ValueError(f"{name} must be a 1-D bool tensor (one entry per test image), got {t!r:.80}")
    if correct.shape != reference_correct.shape:
        raise ValueError(
            f"correct {tuple(correct.shape)} and reference_correct {tuple(reference_correct.shape)} must cover the "
            "same test images"
        )
    b = int((correct & ~reference_correct).sum())
    c = int((~correct & reference_correct).sum())
    n, k = b + c, min(b, c)
    if n == 0:
        return McNemar(b, c, 1.0, 1.0)
    logs = [_log_binom_pmf(i, n) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)  # P(X <= k)
    p_exact = min(1.0, 2.0 * tail)
    p_mid = min(1.0, 2.0 * (tail - 0.5 * math.exp(logs[-1])))
    return McNemar(b, c, p_exact, p_mid)


@dataclass
class RunResult:
    """One trained model's final evaluation. ``correct``: (N,) bool per test image, in test-set order."""

    name: str
    params: int
    precision: str  # what ran: "fp32", "bf16", ...
    images_seen: int  # training images processed (updates x global batch)
    train_seconds: float
    train_img_per_s: float
    correct: torch.Tensor

    @property
    def top1(self) -> float:
        return 100.0 * self.correct.float().mean().item()

    @property
    def interval(self) -> tuple[float, float]:
        lo, hi = wilson_interval(int(self.correct.sum()), self.correct.numel())
        return 100.0 * lo, 100.0 * hi


@dataclass(frozen=True)
class Comparison:
    """A run against the reference: the test and the verdict ("better" / "worse" at p < ALPHA, else
    "not significant")."""

    test: McNemar

    @property
    def verdict(self) -> str:
        if self.test.p >= ALPHA:
            return "not significant"
        return "better" if self.test.only_model > self.test.only_reference else "worse"


def compare(result: RunResult, reference: RunResult) -> Comparison:
    return Comparison(mcnemar(result.correct, reference.correct))


def _fmt_p(p: float) -> str:
    return f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"


def comparison_table(results: Sequence[RunResult], reference: str) -> str:
    """Markdown table of ``results``, each tested against the run named ``reference`` on the same test images."""
    by_name = {r.name: r for r in results}
    if reference not in by_name:
        raise ValueError(f"reference {reference!r} is not one of the runs {list(by_name)}")
    ref = by_name[reference]
    n = ref.correct.numel()
    lines = [
        f"{n:,} test images; p: McNemar's paired test (mid-p) against {reference} on the same images; "
        f"better / worse only at p < {ALPHA}.",
        "",
        "| model | params | precision | images seen | train time (s) | img/s | top-1 % [95% CI] | p vs "
        f"{reference} | verdict |",
        "|---|---:|---|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        if r.correct.numel() != n:
            raise ValueError(f"run {r.name!r} was evaluated on {r.correct.numel()} images, the reference on {n}")
        lo, hi = r.interval
        if r.name == reference:
            p, verdict = "", "reference"
        else:
            cmp = compare(r, ref)
            p, verdict = _fmt_p(cmp.test.p), cmp.verdict
        lines.append(
            f"| {r.name} | {r.params:,} | {r.precision} | {r.images_seen:,} | {r.train_seconds:.0f} | "
            f"{r.train_img_per_s:.1f} | {r.top1:.2f} [{lo:.2f}, {hi:.2f}] | {p} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(
    curves: dict[str, Sequence[tuple[float, int, float, int]]], path: str | os.PathLike, title: str
) -> Path:
    """Two panels, test top-1 against training wall-clock seconds and against images seen, with Wilson 95%
    intervals. ``curves[name]``: (train seconds, images seen, top-1 %, test images) per evaluation."""
    fig, axes = subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, points in curves.items():
        if not points:
            continue
        seconds, seen, top1, n = zip(*points, strict=True)
        lower, upper = [], []  # error bar lengths below / above each point
        for accuracy, images in zip(top1, n, strict=True):
            lo, hi = wilson_interval(round(accuracy * images / 100.0), images)
            lower.append(accuracy - 100.0 * lo)
            upper.append(100.0 * hi - accuracy)
        err = [lower, upper]
        for ax, x in zip(axes, (seconds, seen), strict=True):
            ax.errorbar(x, top1, yerr=err, marker="o", capsize=3, label=name)
    axes[0].set_xlabel("training wall-clock time (s)")
    axes[1].set_xlabel("training images seen")
    axes[0].set_ylabel("test top-1 (%), 95% CI")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, 130), fontsize=9)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------------
# Per-image predictions of a run's final evaluation (``predictions.pt`` in the run folder)

PREDICTION_KEYS = ("predictions", "targets")


def pop_predictions(metrics: dict) -> dict[str, torch.Tensor]:
    """Remove the per-image tensors ``evaluate_classifier(..., return_predictions=True)`` adds (none: {})."""
    return {k: metrics.pop(k) for k in PREDICTION_KEYS if k in metrics}


def save_predictions(path: str | os.PathLike, predictions: dict[str, torch.Tensor]) -> Path:
    """Write predicted and true classes, (N,) each in test-set order, as int16 (``torch.save``)."""
    if set(predictions) != set(PREDICTION_KEYS) or predictions["predictions"].shape != predictions["targets"].shape:
        raise ValueError(
            f"predictions must map {PREDICTION_KEYS} to (N,) tensors of one shape, got {predictions!r:.200}"
        )
    path = Path(path)
    torch.save({k: v.to(torch.int16) for k, v in predictions.items()}, path)
    return path


def load_predictions(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``save_predictions``' file back as int64 tensors."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    return {k: data[k].long() for k in PREDICTION_KEYS}


def write_results(out: str | os.PathLike, stem: str, table: str, data: object) -> Path:
    """Prints a Markdown ``table`` and writes it to ``out/<stem>.md`` and ``data`` to ``out/<stem>.json``; returns
    the folder ``out`` (created if needed)."""
    print(table)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(table)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1))
    return out
