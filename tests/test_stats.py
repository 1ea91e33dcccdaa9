"""Comparison statistics: Wilson intervals and McNemar's test against independent exact computations."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from hyena_vision.engine.stats import (
    Z95,
    RunResult,
    comparison_table,
    mcnemar,
    plot_curves,
    wilson_interval,
)


def exact_mcnemar(b: int, c: int) -> tuple[float, float]:
    """Two-sided exact and mid-p McNemar p-values in exact rational arithmetic (math.comb)."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0, 1.0
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)
    point = Fraction(math.comb(n, k), 2**n)
    return float(min(1, 2 * tail)), float(min(1, 2 * (tail - point / 2)))


def paired(b: int, c: int, both: int, neither: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Correctness vectors with b images only the model gets, c only the reference, shuffled."""
    model = torch.tensor([True] * b + [False] * c + [True] * both + [False] * neither)
    reference = torch.tensor([False] * b + [True] * c + [True] * both + [False] * neither)
    perm = torch.randperm(model.numel(), generator=torch.Generator().manual_seed(seed))
    return model[perm], reference[perm]


def check_mcnemar(test_fn) -> None:
    """``test_fn(correct, reference) -> McNemar`` agrees with the exact rational computation on many tables."""
    cases = [(10, 2), (2, 10), (0, 0), (0, 7), (5, 5), (30, 18), (1, 0), (260, 220), (700, 610)]
    for seed, (b, c) in enumerate(cases):
        model, reference = paired(b, c, both=37 + seed, neither=11, seed=seed)
        result = test_fn(model, reference)
        p_exact, p_mid = exact_mcnemar(b, c)
        assert (result.only_model, result.only_reference) == (b, c)
        assert result.p_exact == pytest.approx(p_exact, rel=1e-9, abs=1e-300), (b, c)
        assert result.p_mid == pytest.approx(p_mid, rel=1e-9, abs=1e-300), (b, c)


def test_mcnemar_matches_exact_binomial():
    check_mcnemar(mcnemar)


def test_mcnemar_textbook_value():
    result = mcnemar(*paired(10, 2, both=50, neither=20, seed=0))
    assert result.p_exact == pytest.approx(2 * 79 / 4096, rel=1e-12)  # 2 P(X <= 2), X ~ Bin(12, 1/2)
    assert result.p_mid == pytest.approx(2 * (79 - 33) / 4096, rel=1e-12)
    assert result.p == result.p_mid


def test_check_detects_planted_error():
    """The check above fails on a plausible bug: a one-sided p-value (the tail not doubled)."""

    def one_sided(model, reference):
        r = mcnemar(model, reference)
        return type(r)(r.only_model, r.only_reference, r.p_exact / 2, r.p_mid / 2)

    with pytest.raises(AssertionError):
        check_mcnemar(one_sided)


def test_wilson_known_values():
    lo, hi = wilson_interval(81, 263)  # Newcombe (1998), Stat. Med. 17:857, method 3
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z95**2 / (10 + Z95**2)), rel=1e-12, abs=1e-12)
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + Z95**2), 1.0), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("correct, total", [(1, 7), (512, 2000), (8123, 10000), (9990, 10000)])
def test_wilson_bounds_are_score_test_roots(correct, total):
    """Each bound p solves (phat - p)^2 = z^2 p (1 - p) / n: the score test sits exactly at |z| = 1.96 there."""
    phat = correct / total
    for p in wilson_interval(correct, total):
        assert (phat - p) ** 2 == pytest.approx(Z95**2 * p * (1 - p) / total, rel=1e-9)
    lo, hi = wilson_interval(correct, total)
    assert lo < phat < hi


@pytest.mark.parametrize("correct, total", [(-1, 10), (11, 10), (0, 0)])
def test_wilson_bad_counts_raise(correct, total):
    with pytest.raises(ValueError, match="correct|total"):
        wilson_interval(correct, total)


def test_mcnemar_bad_input_raises():
    with pytest.raises(ValueError, match="bool"):
        mcnemar(torch.ones(5), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="same test images"):
        mcnemar(torch.ones(5, dtype=torch.bool), torch.ones(6, dtype=torch.bool))


def _run(name: str, correct: torch.Tensor) -> RunResult:
    return RunResult(name, 1000, "fp32", 5000, 12.0, 416.7, correct)


def test_comparison_table_verdicts():
    a, ref = paired(60, 20, both=300, neither=120, seed=1)  # clearly better
    worse = ref.clone()
    worse[torch.nonzero(ref)[:45, 0]] = False  # 45 fewer correct, nothing gained
    same = ref.clone()
    flip = torch.nonzero(ref)[:3, 0]
    same[flip] = False
    same[torch.nonzero(~ref)[:2, 0]] = True  # 2 vs 3 discordant images: p = 1
    text = comparison_table([_run("ref", ref), _run("a", a), _run("w", worse), _run("s", same)], "ref")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["ref"].rstrip().endswith("| reference |")
    assert rows["a"].rstrip().endswith("| better |")
    assert rows["w"].rstrip().endswith("| worse |")
    assert rows["s"].rstrip().endswith("| not significant |")
    lo, hi = wilson_interval(int(a.sum()), a.numel())
    assert f"{100 * a.float().mean():.2f} [{100 * lo:.2f}, {100 * hi:.2f}]" in rows["a"]


def test_comparison_table_refuses_unpaired_runs():
    ref = torch.ones(10, dtype=torch.bool)
    with pytest.raises(ValueError, match="evaluated on 9 images"):
        comparison_table([_run("ref", ref), _run("b", ref[:9])], "ref")
    with pytest.raises(ValueError, match="reference 'x'"):
        comparison_table([_run("ref", ref)], "x")


def test_plot_curves_writes_png(tmp_path):
    curves = {"a": [(10.0, 500, 30.0, 2000), (20.0, 1000, 41.5, 2000)], "b": [(15.0, 500, 25.0, 2000)]}
    path = plot_curves(curves, tmp_path / "c.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
