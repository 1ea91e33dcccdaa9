"""``backend="auto"``: pick the long-convolution backend by measurement, never by assumption.

The first call for a kind of problem on a device (see ``ProblemKey``) runs both backends on that call's tensors, checks
that Triton's result matches torch's within the dtype's tolerance, times both (forward and backward where the call
records gradients: on an H200 the Triton forward at L = 1K ran 1.3x faster than torch's but forward+backward 0.9x as
fast, so a forward-only choice would slow training down), and caches the choice for the process. Triton is chosen only
where it is correct and faster; a mismatch or an error falls back to torch with one warning saying why.
``HYENA_FFTCONV_BACKEND=torch|triton|auto`` overrides the choice for the whole process. While ``torch.compile`` traces
or a CUDA graph is captured nothing is timed: the cached choice is used, else torch.
"""

from __future__ import annotations

import os
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["ENV_VAR", "AutoBackend", "ProblemKey", "forced_backend", "AUTO"]

ENV_VAR = "HYENA_FFTCONV_BACKEND"
Step = Callable[[str], object]  # runs one call with the named backend
# Largest elementwise difference allowed between the backends, relative to the torch result's largest magnitude.
# bf16/fp16 outputs are rounded to 8/11 mantissa bits, so one rounding step apart is already ~0.4% / 0.05%.
MATCH_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def forced_backend() -> str | None:
    """The backend ``HYENA_FFTCONV_BACKEND`` forces ("torch" or "triton"), or None when unset or "auto"."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in ("auto", "torch", "triton"):
        raise ValueError(f"{ENV_VAR} must be one of 'auto', 'torch', 'triton', got {value!r}")
    return None if value == "auto" else value


@dataclass(frozen=True)
class ProblemKey:
    """What one measured choice covers: device, convolution kind, dtype, gating, a power-of-two size bucket and
    whether the call records gradients."""

    device: str
    kind: str  # "causal", "bidirectional" or "2d"
    dtype: str
    gated: bool
    size_bucket: int  # the next power of two >= L (1D) or H * W (2D)
    backward: bool = False  # True: forward+backward is timed

    @classmethod
    def of(cls, u: torch.Tensor, kind: str, gated: bool, backward: bool = False) -> ProblemKey:
        points = u.shape[-1] if kind != "2d" else u.shape[-2] * u.shape[-1]
        name = torch.cuda.get_device_name(u.device) if u.is_cuda else str(u.device)
        bucket = 1 << max(points - 1, 0).bit_length()
        return cls(name, kind, str(u.dtype).removeprefix("torch."), gated, bucket, backward)


def cuda_event_ms(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` runs after one warm-up, timed with CUDA events."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _capturing_or_tracing() -> bool:
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class AutoBackend:
    """The process's cache of measured choices. ``timer(fn) -> ms`` is injectable (tests run it on the CPU)."""

    def __init__(self, timer: Callable[[Callable[[], object]], float] = cuda_event_ms):
        self.timer = timer
        self.choices: dict[ProblemKey, str] = {}
        self.reasons: dict[ProblemKey, str] = {}

    def choose(self, key: ProblemKey, run: Callable[[str], torch.Tensor], step: Step | None = None) -> str:
        """The backend for ``key``; ``run(name)`` computes this call's result with backend ``name``, ``step(name)``
        its forward and backward (required where ``key.backward``)."""
        if key in self.choices:
            return self.choices[key]
        if _capturing_or_tracing():
            return "torch"  # nothing is timed while tracing or capturing, and nothing is cached
        if key.backward and step is None:
            raise ValueError(f"step is required to time the backward of {key}")
        choice, reason = self._measure(key, run, step if key.backward else run)
        self.choices[key], self.reasons[key] = choice, reason
        return choice

    def _measure(self, key: ProblemKey, run: Callable[[str], torch.Tensor], timed: Step) -> tuple[str, str]:
        with torch.no_grad():
            expected = run("torch")
            try:
                actual = run("triton")
            except Exception as error:  # a compile or launch failure: the user still gets a result
                return self._fall_back(key, f"the Triton kernel failed ({type(error).__name__}: {error})")
            scale = expected.abs().max().item()
            error = (actual.double() - expected.double()).abs().max().item() / (scale if scale > 0 else 1.0)
            tol = MATCH_TOL[expected.dtype]
            if not error <= tol:  # also catches NaN
                return self._fall_back(key, f"Triton's result differs from torch's by {error:.3g} relative (> {tol})")
            triton_ms = self.timer(lambda: timed("triton"))
            torch_ms = self.timer(lambda: timed("torch"))
        choice = "triton" if triton_ms < torch_ms else "torch"
        what = "forward+backward" if key.backward else "forward"
        return choice, f"measured ({what}): triton {triton_ms:.3f} ms, torch {torch_ms:.3f} ms"

    @staticmethod
    def _fall_back(key: ProblemKey, why: str) -> tuple[str, str]:
        warnings.warn(f"fftconv backend='auto' uses torch for {key}: {why}", RuntimeWarning, stacklevel=4)
        return "torch", why


AUTO = AutoBackend()
