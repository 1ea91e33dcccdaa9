"""FFT long convolution: the reference (pure torch) backend and the backend switch.

Conventions (all linear convolutions, zero-padded, never circular):

* causal 1D: ``u`` (B, C, L), ``k`` (C, Lk) with ``Lk <= L``::

      y[b, c, t] = sum_{s=0..min(t, Lk-1)} k[c, s] * u[b, c, t-s] + D[c] * u[b, c, t]

* bidirectional 1D: ``k`` (C, 2M-1) with ``M <= L``, index ``M-1`` is lag 0 (so ``(C, 2L-1)`` covers every lag)::

      y[b, c, t] = sum_{s=-(M-1)..M-1} k[c, M-1+s] * u[b, c, t-s] + D[c] * u[b, c, t]

* 2D: ``u`` (B, C, H, W), ``k`` (C, 2Mh-1, 2Mw-1) centred at (Mh-1, Mw-1), ``Mh <= H``, ``Mw <= W``.

Optional gates give ``y = post_gate * (k * (pre_gate * u) + D * (pre_gate * u))``, the form a fused kernel computes.
The FFT runs in float32 for half-precision inputs (float64 stays float64); the output has ``u``'s dtype and the
torch backend writes it with ``u``'s memory layout (see ``longconv``).
"""

from __future__ import annotations

import torch

from . import dispatch
from .longconv import long_conv

__all__ = ["fftconv", "fftconv2d", "fft_size", "BACKENDS"]

BACKENDS = ("auto", "torch", "triton")


def _smooth_sizes(limit: int) -> tuple[int, ...]:
    sizes = []
    p5 = 1
    while p5 <= limit:
        p35 = p5
        while p35 <= limit:
            m = p35
            while m <= limit:
                sizes.append(m)
                m *= 2
            p35 *= 3
        p5 *= 5
    return tuple(sorted(sizes))


_FFT_SIZES = _smooth_sizes(1 << 40)  # every 2^a 3^b 5^c up to 2^40 (about 10k numbers)


def fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: every such size is fast in cuFFT / pocketfft, and at most ~1.25x n."""
    if not 1 <= n <= _FFT_SIZES[-1]:
        raise ValueError(f"fft_size: n must be in [1, {_FFT_SIZES[-1]}], got {n}")
    lo, hi = 0, len(_FFT_SIZES) - 1  # binary search in plain Python (torch.compile traces it)
    while lo < hi:
        mid = (lo + hi) // 2
        if _FFT_SIZES[mid] < n:
            lo = mid + 1
        else:
            hi = mid
    return _FFT_SIZES[lo]


def _check_float(name: str, t: torch.Tensor) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), got {t.dtype}")


def _check_gate(name: str, gate: torch.Tensor | None, u: torch.Tensor) -> None:
    if gate is None:
        return
    _check_float(name, gate)
    if gate.shape != u.shape:
        raise ValueError(f"{name} must have u's shape {tuple(u.shape)}, got {tuple(gate.shape)}")


def _check_skip(D: torch.Tensor | None, channels: int) -> None:
    if D is None:
        return
    _check_float("D", D)
    if D.shape != (channels,):
        raise ValueError(f"D must have shape (C,) = ({channels},), got {tuple(D.shape)}")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _triton_module():
    """The Triton backend module, or None when Triton (or its kernels) cannot be imported here."""
    try:
        from . import triton_fftconv
    except ImportError:
        return None
    return triton_fftconv


def _use_triton(backend: str, u: torch.Tensor, kind: str, gated: bool, conv, tensors: tuple) -> bool:
    """Whether this call runs the Triton kernel; ``conv(name, *tensors)`` computes the call with backend ``name``."""
    if backend == "auto":
        backend = dispatch.forced_backend() or "auto"
    if backend == "torch" or (backend == "auto" and not u.is_cuda):
        return False  # the kernels run on CUDA tensors: no need to import triton for CPU ones
    module = _triton_module()
    if backend == "triton":
        if module is None:
            raise RuntimeError(
                "backend='triton' requested but the Triton kernels cannot be imported (is triton installed?)"
            )
        return True
    if module is None or not module.supports(u):
        return False
    backward = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    key = dispatch.ProblemKey.of(u, kind, gated, backward)
    step = _training_step(conv, tensors) if backward else None
    return dispatch.AUTO.choose(key, lambda name: conv(name, *tensors), step) == "triton"


def _training_step(conv, tensors: tuple):
    """step(name): forward and backward of the call with backend ``name``, for timing, on detached copies of its
    tensors (the caller's graph and .grad stay untouched), seeded with one random output gradient."""
    leaves = [None if t is None else t.detach().requires_grad_(t.requires_grad) for t in tensors]
    inputs = [t for t in leaves if t is not None and t.requires_grad]
    grad_y = None

    def step(name: str) -> None:
        nonlocal grad_y
        with torch.enable_grad():
            y = conv(name, *leaves)
            if grad_y is None:
                grad_y = torch.randn_like(y)
            torch.autograd.grad(y, inputs, grad_y)

    return step


def _check_signal_and_filter(u: torch.Tensor, k: torch.Tensor, u_layout: str, k_layout: str) -> None:
    """Float tensors of the layouts' ranks (``"(B, C, L)"``, ``"(C, Lk)"``) with the same channel count."""
    for name, t, layout in (("u", u, u_layout), ("k", k, k_layout)):
        _check_float(name, t)
        if t.ndim != layout.count(",") + 1:
            raise ValueError(f"{name} must be {layout}, got shape {tuple(t.shape)}")
    if k.shape[0] != u.shape[1]:
        raise ValueError(f"k has {k.shape[0]} channels but u has C={u.shape[1]}")


def _check_1d(u: torch.Tensor, k: torch.Tensor, causal: bool) -> int:
    """Validate the 1D arguments; returns the index of lag 0 in k (0 when causal, M-1 when bidirectional)."""
    _check_signal_and_filter(u, k, "(B, C, L)", "(C, Lk)")
    length = u.shape[2]
    if length == 0:
        raise ValueError("u must have L >= 1")
    klen = k.shape[1]
    if causal:
        if not 1 <= klen <= length:
            raise ValueError(f"causal k must be (C, Lk) with 1 <= Lk <= L={length}, got Lk={klen}")
        return 0
    if klen % 2 == 0 or not 1 <= (klen + 1) // 2 <= length:
        raise ValueError(
            f"bidirectional k must be (C, 2M-1) with 1 <= M <= L={length} (lag 0 at index M-1), got length {klen}"
        )
    return (klen - 1) // 2


def fftconv(
    u: torch.Tensor,
    k: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    causal: bool = True,
    pre_gate: torch.Tensor | None = None,
    post_gate: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Long 1D convolution of ``u`` (B, C, L) with per-channel filters ``k`` by FFT (see the module docstring).

    ``backend``: "torch" (reference), "triton" (fused kernel; error if unavailable) or "auto" (the reference on the
    CPU; on CUDA the backend measured correct and faster for this kind of problem, see ``hyena_vision.ops.dispatch``).
    Differentiable in every tensor argument.
    """
    _check_backend(backend)
    lag0 = _check_1d(u, k, causal)
    _check_skip(D, u.shape[1])
    _check_gate("pre_gate", pre_gate, u)
    _check_gate("post_gate", post_gate, u)

    def conv(name: str, u, k, D, pre_gate, post_gate) -> torch.Tensor:
        return fftconv(u, k, D, causal=causal, pre_gate=pre_gate, post_gate=post_gate, backend=name)

    gated = pre_gate is not None or post_gate is not None
    kind = "causal" if causal else "bidirectional"
    if _use_triton(backend, u, kind, gated, conv, (u, k, D, pre_gate, post_gate)):
        return _triton_module().fftconv(u, k, D, causal=causal, pre_gate=pre_gate, post_gate=post_gate)
    return _fftconv_torch(u, k, D, lag0, pre_gate, post_gate)


def _fftconv_torch(u, k, D, lag0, pre_gate, post_gate):
    size = fft_size(u.shape[-1] + k.shape[-1] - 1 - lag0)  # every output free of wrap-around
    return long_conv(u, k, D, lag0=(lag0,), size=(size,), pre_gate=pre_gate, post_gate=post_gate)


def fftconv2d(
    u: torch.Tensor,
    k: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Linear 2D convolution of ``u`` (B, C, H, W) with centred per-channel kernels ``k`` (C, 2Mh-1, 2Mw-1).

    Output has u's shape: ``y[b,c,i,j] = sum_{p,q} k[c, Mh-1+p, Mw-1+q] u[b,c,i-p,j-q] + D[c] u[b,c,i,j]``.
    """
    _check_backend(backend)
    _check_signal_and_filter(u, k, "(B, C, H, W)", "(C, 2Mh-1, 2Mw-1)")
    _, channels, height, width = u.shape
    kh, kw = k.shape[1:]
    if kh % 2 == 0 or kw % 2 == 0 or (kh + 1) // 2 > height or (kw + 1) // 2 > width:
        raise ValueError(
            f"k must be (C, 2Mh-1, 2Mw-1) with Mh <= H={height}, Mw <= W={width} (odd sizes, centred), "
            f"got {tuple(k.shape[1:])}"
        )
    _check_skip(D, channels)
    if _use_triton(backend, u, "2d", False, lambda name, u, k, D: fftconv2d(u, k, D, backend=name), (u, k, D)):
        return _triton_module().fftconv2d(u, k, D)
    mh, mw = (kh + 1) // 2, (kw + 1) // 2
    size = (fft_size(height + mh - 1), fft_size(width + mw - 1))
    return long_conv(u, k, D, lag0=(mh - 1, mw - 1), size=size)
