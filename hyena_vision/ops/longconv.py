"""The torch backend's long convolution and short depthwise convolution as single autograd functions.

Autograd through ``rfft -> multiply -> irfft -> crop -> + D x -> * gate`` keeps a padded copy, a spectrum and a
product per step and runs a complex-to-complex transform in the backward of ``rfft``; most of the CPU time goes to
those copies. ``LongConv`` computes the same linear convolution in one function and keeps only what its backward
needs: the input spectrum (for the kernel's gradient), the kernel spectrum and, with a post-gate, the ungated
output. Its backward is the adjoint: a correlation, i.e. the same transforms with the conjugate kernel spectrum.

The kernel is laid out circularly (lag 0 at index 0, negative lags at the end of the FFT buffer), so that every
output is the first ``L`` (``H x W``) samples of the inverse transform; the FFT pads the input (``n=`` / ``s=``)
without a padded copy. Outputs and input gradients are written with the memory layout of ``u`` (a channels-last
view stays channels-last, so callers need not permute), while transforms run on contiguous channels-first buffers
(a strided transform is up to twice as slow). Half-precision inputs are transformed in float32.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["long_conv", "short_conv"]


def empty_like_layout(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised dense tensor of t's shape whose dimensions are ordered in memory as t's are.

    ``torch.empty_like`` keeps strides only for dense tensors; slices of a wider tensor (the split of a
    projection) would come back channels-first.
    """
    order = sorted(range(t.ndim), key=lambda d: t.stride(d), reverse=True)  # outermost first
    buffer = torch.empty([t.shape[d] for d in order], dtype=dtype or t.dtype, device=t.device)
    return buffer.permute([order.index(d) for d in range(t.ndim)])


class LongConv(torch.autograd.Function):
    """``post * (conv(k, pre * u) + D * (pre * u))`` over the last ``len(size)`` dimensions; see ``long_conv``."""

    @staticmethod
    def forward(ctx, u, k, D, pre, post, lag0, size, dtype):
        dims = tuple(range(-len(size), 0))
        x = _mul_like(u, pre, u, dtype) if pre is not None else u.to(dtype)  # (B, C, *spatial), u's layout
        k_circ = F.pad(
            k.to(dtype), [p for s, n in zip(reversed(k.shape[1:]), reversed(size), strict=True) for p in (0, n - s)]
        )
        if any(lag0):
            k_circ = torch.roll(k_circ, shifts=[-lag for lag in lag0], dims=dims)  # lag 0 at index 0
        k_f = torch.fft.rfftn(k_circ, dim=dims)  # (C, *spectrum)
        x_f = _rfft(x, size)  # (B, C, *spectrum)
        h = _add_skip(_irfft_crop(x_f * k_f, size, u.shape[2:]), x, D, u)  # (B, C, *spatial)
        y = _mul_like(h, post, u) if post is not None else h.to(u.dtype)
        ctx.save_for_backward(u, D, pre, post, x_f if ctx.needs_input_grad[1] else None, k_f, h)
        ctx.lag0, ctx.size, ctx.dtype, ctx.kshape, ctx.kdtype = lag0, size, dtype, k.shape, k.dtype
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        u, D, pre, post, x_f, k_f, h = ctx.saved_tensors
        size, dtype = ctx.size, ctx.dtype
        dims = tuple(range(-len(size), 0))
        need_u, need_k, need_d, need_pre, need_post = ctx.needs_input_grad[:5]
        grad_u = grad_k = grad_d = grad_pre = grad_post = None
        if post is not None:
            if need_post:
                grad_post = _mul_like(h, grad, post)
            grad = _mul_like(grad, post, u, dtype)  # gradient of h, in u's layout
        else:
            grad = grad.to(dtype)
        if need_d and not need_k:
            x = _mul_like(u, pre, u, dtype) if pre is not None else u.to(dtype)
            grad_d = (grad * x).sum([d for d in range(grad.ndim) if d != 1]).to(D.dtype)
        if not (need_u or need_pre or need_k):
            return grad_u, grad_k, grad_d, grad_pre, grad_post, None, None, None
        g_f = _rfft(grad, size)  # (B, C, *spectrum)
        if need_k:  # correlation of the input with the output gradient, summed over the batch
            k_circ = torch.fft.irfftn((g_f * x_f.conj()).sum(0), s=size, dim=dims)  # (C, *size)
            if need_d:  # the correlation at lag 0 is sum(grad * x): D's gradient for free
                grad_d = k_circ[(slice(None), *[0] * len(size))].to(D.dtype)
            if any(ctx.lag0):
                k_circ = torch.roll(k_circ, shifts=list(ctx.lag0), dims=dims)
            grad_k = k_circ[(slice(None), *[slice(0, n) for n in ctx.kshape[1:]])].to(ctx.kdtype)
        if need_u or need_pre:  # the adjoint of a convolution is the correlation: conjugate kernel spectrum
            grad_x = _add_skip(_irfft_crop(g_f * k_f.conj(), size, u.shape[2:]), grad, D, u)
            if pre is None:
                grad_u = grad_x.to(u.dtype)
            else:
                grad_u = _mul_like(grad_x, pre, u) if need_u else None
                grad_pre = _mul_like(grad_x, u, pre) if need_pre else None
        return grad_u, grad_k, grad_d, grad_pre, grad_post, None, None, None


_DFT_MAX = 128  # 2D transforms up to this size per axis run as DFT matrix products on the CPU


def _use_dft(t: torch.Tensor, size: tuple[int, ...]) -> bool:
    """Small 2D transforms on the CPU: two DFT matrix products beat MKL's batched 2D FFT (which copies its input
    and output several times) by about 1.7x at 64 x 64; CUDA keeps cuFFT."""
    return len(size) == 2 and not t.is_cuda and max(size) <= _DFT_MAX


@functools.lru_cache(maxsize=16)
def _dft_matrices(spatial: tuple[int, int], size: tuple[int, int], dtype: torch.dtype, device: torch.device):
    """Matrices of the 2D rfft of an (H, W) input zero-padded to size (nh, nw) and of its inverse cropped to (H, W).

    fw = nw // 2 + 1 frequencies along W. Forward: ``A = x @ fw_ri`` (real (W, 2 fw), interleaved real/imag),
    ``X = fh @ A`` (complex (nh, H)). Inverse: ``Z = gh @ Y`` (complex (H, nh)), ``y = real(Z) @ gw_ri``
    (real (2 fw, W)); gw weights the half spectrum as c2r does (DC and Nyquist once, their imaginary parts
    ignored). Built in float64.
    """
    (height, width), (nh, nw) = spatial, size
    fw = nw // 2 + 1

    def phase(freqs: int, points: int, n: int, sign: float) -> torch.Tensor:
        f = torch.arange(freqs, dtype=torch.float64)[:, None]
        return torch.exp(sign * 2j * math.pi * f * torch.arange(points, dtype=torch.float64) / n)  # (freqs, points)

    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    fw_ri = torch.view_as_real(phase(fw, width, nw, -1.0).T.contiguous()).reshape(width, 2 * fw)
    fh = phase(nh, height, nh, -1.0)
    gh = phase(height, nh, nh, 1.0) / nh
    weight = torch.full((fw, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if nw % 2 == 0:
        weight[-1] = 1.0
    gw = phase(width, fw, nw, 1.0).T * weight / nw  # (fw, W)
    gw_ri = torch.stack([gw.real, -gw.imag], dim=1).reshape(2 * fw, width)
    real = {"dtype": dtype, "device": device}
    cplx = {"dtype": complex_dtype, "device": device}
    return fw_ri.to(**real), fh.to(**cplx), gh.to(**cplx), gw_ri.to(**real)


def _rfft(t: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """rfftn of t (B, C, *spatial) zero-padded to size over the spatial dimensions: (B, C, *spectrum)."""
    if not _use_dft(t, size):  # 1D: MKL reads strided rows at full speed, so no contiguous copy
        return torch.fft.rfftn(t, s=size, dim=tuple(range(-len(size), 0)))
    fw_ri, fh, _, _ = _dft_matrices(tuple(t.shape[2:]), size, t.dtype, t.device)
    rows = torch.view_as_complex((t.contiguous() @ fw_ri).unflatten(-1, (-1, 2)))  # (B, C, H, fw)
    return torch.matmul(fh, rows)  # (B, C, nh, fw)


def _irfft_crop(spectrum: torch.Tensor, size: tuple[int, ...], spatial: tuple[int, ...]) -> torch.Tensor:
    """The first ``spatial`` samples of irfftn(spectrum, s=size): (B, C, *spatial), contiguous."""
    if not _use_dft(spectrum, size):
        full = torch.fft.irfftn(spectrum, s=size, dim=tuple(range(-len(size), 0)))
        return full[(..., *[slice(0, n) for n in spatial])]
    real = torch.float64 if spectrum.dtype == torch.complex128 else torch.float32
    _, _, gh, gw_ri = _dft_matrices(tuple(spatial), size, real, spectrum.device)
    rows = torch.matmul(gh, spectrum)  # (B, C, H, fw), only the H rows kept
    return torch.view_as_real(rows).flatten(-2) @ gw_ri  # (B, C, H, W)


def _add_skip(conv: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """conv + D x, written in like's layout (the one pass that moves a transform's output into that layout)."""
    out = empty_like_layout(like, conv.dtype)
    if D is None:
        return out.copy_(conv)
    return torch.addcmul(conv, x, D.to(conv.dtype).view(-1, *([1] * (x.ndim - 2))), out=out)


def _mul_like(a: torch.Tensor, b: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """a * b, computed in a's dtype (or dtype), written with like's layout in that dtype (default like's)."""
    compute = dtype or a.dtype
    out = empty_like_layout(like, dtype or like.dtype)
    if out.dtype == compute:
        return torch.mul(a.to(compute), b.to(compute), out=out)
    return out.copy_(a.to(compute) * b.to(compute))


def long_conv(
    u: torch.Tensor,
    k: torch.Tensor,
    D: torch.Tensor | None,
    *,
    lag0: tuple[int, ...],
    size: tuple[int, ...],
    pre_gate: torch.Tensor | None = None,
    post_gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Linear convolution of u (B, C, *spatial) with per-channel kernels k (C, *klen) whose lag 0 is at ``lag0``.

    ``size`` is the FFT size per spatial dimension; it must be at least ``spatial + klen - 1 - lag0`` so that no
    output wraps around (the caller validates shapes). Gates and D as in ``fftconv``; output has u's dtype and
    memory layout. Float64 if any tensor is float64, otherwise float32.
    """
    tensors = (u, k, D, pre_gate, post_gate)
    dtype = torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32
    return LongConv.apply(u, k, D, pre_gate, post_gate, tuple(lag0), tuple(size), dtype)


class ShortConv(torch.autograd.Function):
    """Depthwise 1D convolution along dim 1 of channels-last z (B, L, C) as K shifted multiply-adds."""

    @staticmethod
    def forward(ctx, z, weight, bias, padding):
        length, taps = z.shape[1], weight.shape[-1]
        w = weight.reshape(-1, taps).t().to(z.dtype).contiguous()  # (K, C): contiguous rows broadcast fast
        if bias is None:
            y = torch.mul(z, w[padding])  # the centre tap (shift 0)
        else:
            y = torch.addcmul(bias.to(z.dtype), z, w[padding])
        for j, shift in _shifts(taps, padding, length):
            src, dst = _windows(shift, length)
            y[:, dst].addcmul_(z[:, src], w[j])  # y[t] += w[j] z[t + shift]
        ctx.save_for_backward(z, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        z, weight = ctx.saved_tensors
        padding, length, taps = ctx.padding, z.shape[1], weight.shape[-1]
        grad = grad.contiguous()
        w = weight.reshape(-1, taps).t().to(z.dtype).contiguous()  # (K, C)
        grad_z = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_z = torch.mul(grad, w[padding])
            for j, shift in _shifts(taps, padding, length):
                src, dst = _windows(shift, length)
                grad_z[:, src].addcmul_(grad[:, dst], w[j])
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(w)  # (K, C)
            for j in range(taps):
                src, dst = _windows(j - padding, length)
                grad_w[j] = (grad[:, dst] * z[:, src]).sum((0, 1))
            grad_w = grad_w.t().reshape(weight.shape).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 1))
        return grad_z, grad_w, grad_b, None


def _shifts(taps: int, padding: int, length: int):
    """(tap, shift) of every tap but the centre one (shift 0) whose window is not empty."""
    return [(j, j - padding) for j in range(taps) if j != padding and abs(j - padding) < length]


def _windows(shift: int, length: int) -> tuple[slice, slice]:
    """Source and destination time windows of ``y[t] += w z[t + shift]`` over the valid t."""
    if shift >= 0:
        return slice(shift, length), slice(0, max(length - shift, 0))
    return slice(0, max(length + shift, 0)), slice(-shift, length)


def short_conv(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """``Conv1d(C, C, K, groups=C, padding=padding)(z)[..., :L]`` on channels-last z (B, L, C) -> (B, L, C).

    Output t sees inputs t - padding .. t - padding + K - 1: ``padding = K - 1`` is causal, ``K // 2`` centred.
    ``weight`` (C, 1, K) and ``bias`` (C,) are the Conv1d module's parameters.
    """
    if not 0 <= padding < weight.shape[-1]:
        raise ValueError(f"padding must be in [0, K={weight.shape[-1]}), got {padding}")
    return ShortConv.apply(z, weight, bias, padding)
