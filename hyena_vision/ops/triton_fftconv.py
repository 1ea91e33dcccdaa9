"""Triton backend of :mod:`hyena_vision.ops.fftconv`: fused FFT long convolution, forward and backward.

``fftconv.py`` validates the arguments and calls :func:`fftconv` / :func:`fftconv2d` here. Both go through the custom
ops ``hyena_vision::fftconv`` and ``hyena_vision::fftconv_backward`` (``torch.library.custom_op`` with fake
implementations and a registered autograd formula), so ``torch.compile`` keeps them as single graph nodes.

Per call: one small kernel computes the filter's spectrum (once per channel, shared by the batch), then one program
per (b, c) row runs gate -> FFT -> multiply -> inverse FFT -> D skip -> gate with every intermediate in registers
(see ``_triton_kernels``). The backward is one program per channel looping over the batch; it recomputes the
input's spectrum instead of storing it and produces every gradient in the same pass.
All arithmetic is fp32 (inputs in fp16/bf16/fp32; outputs in the inputs' dtypes).
"""

import dataclasses
import functools
import math

import torch

from . import _triton_kernels as kernels

__all__ = ["supports", "fftconv", "fftconv2d", "plan_1d", "plan_2d", "MAX_FFT_POINTS"]

MIN_SIDE = 16  # tl.dot needs every tile side >= 16, so the FFT grid is at least 16 x 16
MAX_FFT_POINTS = 1 << 14  # largest grid (N1 * N2) one program holds in registers
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where a signal and its filter sit on the (n1, n2) FFT grid."""

    n1: int
    n2: int
    fft_shape: tuple[int, ...]  # (N,) for 1D, (Nh, Nw) for 2D; n1 * n2 == prod(fft_shape)
    lag0: tuple[int, ...]  # index of lag 0 in k along each filter axis
    rows: int  # the signal occupies grid rows < rows, columns < cols, flat offsets row * stride + col < limit
    cols: int
    stride: int
    limit: int
    twiddle: bool  # True: 1D four-step FFT; False: 2D DFT of the grid


def _pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def plan_1d(length: int, klen: int, causal: bool) -> Plan:
    """FFT grid for u (B, C, length) and k (C, klen): N >= length + (reach of k) - 1 so nothing wraps around."""
    lag0 = 0 if causal else (klen - 1) // 2
    n = max(MIN_SIDE * MIN_SIDE, _pow2_at_least(length + klen - 1 - lag0))
    n1 = 1 << (n.bit_length() - 1) // 2
    return Plan(n1, n // n1, (n,), (lag0,), n1, n // n1, n // n1, length, twiddle=True)


def plan_2d(height: int, width: int, kh: int, kw: int) -> Plan:
    """FFT grid for u (B, C, height, width) and centred k (C, kh, kw)."""
    nh = max(MIN_SIDE, _pow2_at_least(height + (kh + 1) // 2 - 1))
    nw = max(MIN_SIDE, _pow2_at_least(width + (kw + 1) // 2 - 1))
    return Plan(nh, nw, (nh, nw), ((kh - 1) // 2, (kw - 1) // 2), height, width, width, height * width, twiddle=False)


def _plan(u: torch.Tensor, k: torch.Tensor, causal: bool) -> Plan:
    if u.ndim == 4:
        return plan_2d(u.shape[2], u.shape[3], k.shape[1], k.shape[2])
    return plan_1d(u.shape[2], k.shape[1], causal)


def supports(u: torch.Tensor) -> bool:
    """Whether backend='auto' should use Triton for u: CUDA tensors of a kernel dtype."""
    return u.is_cuda and u.dtype in KERNEL_DTYPES


@functools.lru_cache(maxsize=64)
def _dft_matrix(n: int, device: torch.device) -> torch.Tensor:
    """(2, n, n) fp32: real and imaginary parts of exp(-2 pi i j k / n), computed in float64."""
    j = torch.arange(n, dtype=torch.int64)
    angle = (j[:, None] * j[None, :] % n).double() * (-2 * math.pi / n)  # (n, n)
    return torch.stack((angle.cos(), angle.sin())).float().to(device)


@functools.lru_cache(maxsize=64)
def _twiddles(n1: int, n2: int, twiddle: bool, device: torch.device) -> torch.Tensor:
    """(2, n1, n2) fp32: exp(-2 pi i k1 n2 / (n1 n2)), or 1 where the grid is a 2D image (no twiddles)."""
    n = n1 * n2
    exponent = torch.arange(n1)[:, None] * torch.arange(n2)[None, :] % n if twiddle else torch.zeros(n1, n2)
    angle = exponent.double() * (-2 * math.pi / n)  # (n1, n2)
    return torch.stack((angle.cos(), angle.sin())).float().to(device)


def _constants(plan: Plan, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _dft_matrix(plan.n1, device), _dft_matrix(plan.n2, device), _twiddles(plan.n1, plan.n2, plan.twiddle, device)


def _num_warps(plan: Plan) -> int:
    return 4 if plan.n1 * plan.n2 <= 1024 else 8


def _circular_filter(k: torch.Tensor, plan: Plan) -> torch.Tensor:
    """k (C, *kshape) placed on the FFT grid with lag 0 at the origin and negative lags wrapped: (C, n1, n2) fp32."""
    channels = k.shape[0]
    grid = k.new_zeros((channels, *plan.fft_shape), dtype=torch.float32)  # (C, N) or (C, Nh, Nw)
    grid[(slice(None), *(slice(0, size) for size in k.shape[1:]))] = k
    axes = tuple(range(1, grid.ndim))
    grid = torch.roll(grid, shifts=tuple(-lag for lag in plan.lag0), dims=axes)
    return grid.reshape(channels, plan.n1, plan.n2).contiguous()


def _filter_from_grid(grid: torch.Tensor, plan: Plan, kshape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of _circular_filter: (C, n1, n2) -> (C, *kshape)."""
    grid = grid.reshape(grid.shape[0], *plan.fft_shape)  # (C, N) or (C, Nh, Nw)
    grid = torch.roll(grid, shifts=plan.lag0, dims=tuple(range(1, grid.ndim)))
    return grid[(slice(None), *(slice(0, size) for size in kshape))]


def _filter_spectrum(k: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Spectrum of k divided by N, (C, 2, n1, n2) fp32, in the kernels' [k1, k2] layout."""
    dft1, dft2, twiddles = _constants(plan, k.device)
    spectrum = torch.empty((k.shape[0], 2, plan.n1, plan.n2), dtype=torch.float32, device=k.device)
    kernels.filter_spectrum_kernel[(k.shape[0],)](
        _circular_filter(k, plan),
        dft1,
        dft2,
        twiddles,
        spectrum,
        1.0 / (plan.n1 * plan.n2),
        N1=plan.n1,
        N2=plan.n2,
        TWIDDLE=plan.twiddle,
        num_warps=_num_warps(plan),
    )
    return spectrum


def _check_size(plan: Plan, u: torch.Tensor) -> None:
    if plan.n1 * plan.n2 > MAX_FFT_POINTS:
        raise NotImplementedError(
            f"backend='triton' handles FFT grids up to {MAX_FFT_POINTS} points; u of shape {tuple(u.shape)} needs "
            f"{plan.n1 * plan.n2} (use backend='torch')"
        )


def _contiguous(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """t made contiguous, or a placeholder pointer (never read) when the optional tensor is absent."""
    return like if t is None else t.contiguous()


def _skip_fp32(D: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like if D is None else D.float().contiguous()


_OP_SCHEMA = "(Tensor u, Tensor k, Tensor? D, Tensor? pre_gate, Tensor? post_gate, bool causal) -> Tensor"
_BACKWARD_SCHEMA = (
    "(Tensor grad_y, Tensor u, Tensor k, Tensor? D, Tensor? pre_gate, Tensor? post_gate, bool causal)"
    " -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)


@torch.library.custom_op("hyena_vision::fftconv", mutates_args=(), schema=_OP_SCHEMA)
def _fftconv_op(u, k, D, pre_gate, post_gate, causal):
    """y = post * (k * (pre * u) + D * (pre * u)); 1D when u is (B, C, L), 2D when u is (B, C, H, W)."""
    plan = _plan(u, k, causal)
    _check_size(plan, u)
    u = u.contiguous()
    y = torch.empty_like(u)
    dft1, dft2, twiddles = _constants(plan, u.device)
    kernels.conv_fwd_kernel[(u.shape[0] * u.shape[1],)](
        u,
        _contiguous(pre_gate, u),
        _contiguous(post_gate, u),
        _skip_fp32(D, u),
        _filter_spectrum(k, plan),
        dft1,
        dft2,
        twiddles,
        y,
        u.shape[1],
        plan.rows,
        plan.cols,
        plan.stride,
        plan.limit,
        N1=plan.n1,
        N2=plan.n2,
        TWIDDLE=plan.twiddle,
        HAS_PRE=pre_gate is not None,
        HAS_POST=post_gate is not None,
        HAS_D=D is not None,
        num_warps=_num_warps(plan),
    )
    return y


@_fftconv_op.register_fake
def _(u, k, D, pre_gate, post_gate, causal):
    return torch.empty_like(u, memory_format=torch.contiguous_format)


def _empty_or_like(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Gradient buffer for an optional input: t's shape and dtype, or an empty tensor when t is absent."""
    return like.new_empty(0) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)


@torch.library.custom_op("hyena_vision::fftconv_backward", mutates_args=(), schema=_BACKWARD_SCHEMA)
def _fftconv_backward_op(grad_y, u, k, D, pre_gate, post_gate, causal):
    """Gradients (u, k, D, pre_gate, post_gate) of _fftconv_op; empty tensors stand for absent inputs."""
    plan = _plan(u, k, causal)
    u = u.contiguous()
    channels = u.shape[1]
    grad_u = torch.empty_like(u)
    grad_pre = _empty_or_like(pre_gate, u)
    grad_post = _empty_or_like(post_gate, u)
    grad_k_grid = torch.empty((channels, plan.n1, plan.n2), dtype=torch.float32, device=u.device)
    grad_d = torch.empty(channels, dtype=torch.float32, device=u.device)
    dft1, dft2, twiddles = _constants(plan, u.device)
    kernels.conv_bwd_kernel[(channels,)](
        grad_y.contiguous(),
        u,
        _contiguous(pre_gate, u),
        _contiguous(post_gate, u),
        _skip_fp32(D, u),
        _filter_spectrum(k, plan),
        dft1,
        dft2,
        twiddles,
        grad_u,
        grad_pre if pre_gate is not None else u,
        grad_post if post_gate is not None else u,
        grad_k_grid,
        grad_d,
        u.shape[0],
        channels,
        plan.rows,
        plan.cols,
        plan.stride,
        plan.limit,
        1.0 / (plan.n1 * plan.n2),
        N1=plan.n1,
        N2=plan.n2,
        TWIDDLE=plan.twiddle,
        HAS_PRE=pre_gate is not None,
        HAS_POST=post_gate is not None,
        HAS_D=D is not None,
        num_warps=_num_warps(plan),
    )
    grad_k = _filter_from_grid(grad_k_grid, plan, tuple(k.shape[1:])).to(k.dtype).contiguous()
    grad_d = grad_d.to(D.dtype) if D is not None else u.new_empty(0)
    return grad_u, grad_k, grad_d, grad_pre, grad_post


@_fftconv_backward_op.register_fake
def _(grad_y, u, k, D, pre_gate, post_gate, causal):
    return (
        torch.empty_like(u, memory_format=torch.contiguous_format),
        torch.empty_like(k, memory_format=torch.contiguous_format),
        _empty_or_like(D, u),
        _empty_or_like(pre_gate, u),
        _empty_or_like(post_gate, u),
    )


def _setup_context(ctx, inputs, output):
    u, k, D, pre_gate, post_gate, causal = inputs
    ctx.save_for_backward(u, k, D, pre_gate, post_gate)
    ctx.causal = causal


def _backward(ctx, grad_y):
    u, k, D, pre_gate, post_gate = ctx.saved_tensors
    grad_u, grad_k, grad_d, grad_pre, grad_post = _fftconv_backward_op(grad_y, u, k, D, pre_gate, post_gate, ctx.causal)
    return (
        grad_u,
        grad_k,
        None if D is None else grad_d,
        None if pre_gate is None else grad_pre,
        None if post_gate is None else grad_post,
        None,
    )


_fftconv_op.register_autograd(_backward, setup_context=_setup_context)


def _check_dtypes(names: tuple[str, ...], tensors: tuple[torch.Tensor | None, ...]) -> None:
    for name, t in zip(names, tensors, strict=True):
        if t is not None and t.dtype not in KERNEL_DTYPES:
            raise TypeError(
                f"backend='triton' takes float16/bfloat16/float32 {name}, got {t.dtype} (use backend='torch')"
            )


def fftconv(
    u: torch.Tensor,
    k: torch.Tensor,
    D: torch.Tensor | None,
    *,
    causal: bool,
    pre_gate: torch.Tensor | None,
    post_gate: torch.Tensor | None,
) -> torch.Tensor:
    """1D long convolution (arguments validated by fftconv.fftconv); differentiable, torch.compile-able."""
    _check_dtypes(("u", "k", "D", "pre_gate", "post_gate"), (u, k, D, pre_gate, post_gate))
    return _fftconv_op(u, k, D, pre_gate, post_gate, causal)


def fftconv2d(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """2D long convolution (arguments validated by fftconv.fftconv2d); differentiable, torch.compile-able."""
    _check_dtypes(("u", "k", "D"), (u, k, D))
    return _fftconv_op(u, k, D, None, None, False)
