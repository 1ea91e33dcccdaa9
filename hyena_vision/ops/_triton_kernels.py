"""Triton kernels of the FFT long convolution: an in-register four-step FFT on an (N1, N2) grid of fp32 tiles.

A length-N signal (N = N1 * N2) is laid on the grid row-major, ``x[n1, n2] = x[N2 * n1 + n2]``. Its spectrum is

    X[k1, k2] = sum_{n2} F2[n2, k2] * T[k1, n2] * sum_{n1} F1[k1, n1] * x[n1, n2]       (frequency k1 + N1 * k2)

with DFT matrices F1 (N1, N1), F2 (N2, N2) and twiddles T[k1, n2] = exp(-2 pi i k1 n2 / N): two complex matrix
products done with ``tl.dot`` and one elementwise multiply. The inverse runs the same steps backwards with conjugates
and returns the signal in natural order, so spectra never leave the kernel in any other layout than [k1, k2].
Without twiddles the same code is the 2D DFT of an (N1, N2) image (``F1 @ x @ F2``), which is how fftconv2d runs.

Complex values are carried as (real, imaginary) pairs of fp32 tiles; half-precision inputs are widened on load.
Spectra of filters are stored pre-scaled by 1/N, so the inverse transform here is unnormalised.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot(a, b):
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _load_complex(ptr, R: tl.constexpr, S: tl.constexpr):
    """(real, imag) tiles of an fp32 (2, R, S) row-major tensor."""
    offs = tl.arange(0, R)[:, None] * S + tl.arange(0, S)[None, :]  # (R, S)
    return tl.load(ptr + offs), tl.load(ptr + R * S + offs)


@triton.jit
def _grid_offsets(ROWS, COLS, STRIDE, LIMIT, N1: tl.constexpr, N2: tl.constexpr):
    """Offsets and mask of the signal's samples on the (N1, N2) grid (zero padding where the mask is false)."""
    n1 = tl.arange(0, N1)[:, None]
    n2 = tl.arange(0, N2)[None, :]
    offs = n1 * STRIDE + n2  # (N1, N2)
    mask = (n1 < ROWS) & (n2 < COLS) & (offs < LIMIT)
    return offs, mask


@triton.jit
def _load_signal(ptr, offs, mask):
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _fft_real(x, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE: tl.constexpr):
    """Spectrum (real, imag), layout [k1, k2], of the real (N1, N2) tile x."""
    ar = _dot(f1r, x)  # (N1, N2), indexed [k1, n2]
    ai = _dot(f1i, x)
    if TWIDDLE:
        ar, ai = ar * twr - ai * twi, ar * twi + ai * twr
    yr = _dot(ar, f2r) - _dot(ai, f2i)  # (N1, N2), indexed [k1, k2]
    yi = _dot(ar, f2i) + _dot(ai, f2r)
    return yr, yi


@triton.jit
def _ifft_real(zr, zi, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE: tl.constexpr):
    """Real part of the unnormalised inverse of the spectrum (zr, zi), as an (N1, N2) tile in natural order."""
    cr = _dot(zr, f2r) + _dot(zi, f2i)  # (N1, N2), indexed [k1, n2]
    ci = _dot(zi, f2r) - _dot(zr, f2i)
    if TWIDDLE:
        cr, ci = cr * twr + ci * twi, ci * twr - cr * twi
    return _dot(f1r, cr) + _dot(f1i, ci)  # (N1, N2), indexed [n1, n2]


@triton.jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _cmul_conj(ar, ai, br, bi):
    """a * conj(b)."""
    return ar * br + ai * bi, ai * br - ar * bi


@triton.jit
def filter_spectrum_kernel(
    k_ptr,  # (C, N1, N2) fp32 filter, lag 0 at [0, 0], negative lags wrapped to the end
    dft1_ptr,  # (2, N1, N1) fp32
    dft2_ptr,  # (2, N2, N2) fp32
    tw_ptr,  # (2, N1, N2) fp32
    spec_ptr,  # (C, 2, N1, N2) fp32 out
    scale,
    N1: tl.constexpr,
    N2: tl.constexpr,
    TWIDDLE: tl.constexpr,
):
    """One program per channel: the filter's spectrum times ``scale`` (1/N), shared by every batch element."""
    c = tl.program_id(0).to(tl.int64)
    f1r, f1i = _load_complex(dft1_ptr, N1, N1)
    f2r, f2i = _load_complex(dft2_ptr, N2, N2)
    twr, twi = _load_complex(tw_ptr, N1, N2)
    offs = tl.arange(0, N1)[:, None] * N2 + tl.arange(0, N2)[None, :]  # (N1, N2)
    kr, ki = _fft_real(tl.load(k_ptr + c * N1 * N2 + offs), f1r, f1i, f2r, f2i, twr, twi, TWIDDLE)
    tl.store(spec_ptr + c * 2 * N1 * N2 + offs, kr * scale)
    tl.store(spec_ptr + c * 2 * N1 * N2 + N1 * N2 + offs, ki * scale)


@triton.jit
def conv_fwd_kernel(
    u_ptr,  # (B, C, LIMIT) any float dtype
    pre_ptr,  # (B, C, LIMIT) or dummy
    post_ptr,  # (B, C, LIMIT) or dummy
    d_ptr,  # (C,) fp32 or dummy
    spec_ptr,  # (C, 2, N1, N2) fp32 filter spectrum / N
    dft1_ptr,
    dft2_ptr,
    tw_ptr,
    y_ptr,  # (B, C, LIMIT) out
    C,
    ROWS,
    COLS,
    STRIDE,
    LIMIT,
    N1: tl.constexpr,
    N2: tl.constexpr,
    TWIDDLE: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    HAS_D: tl.constexpr,
):
    """One program per (b, c) row: y = post * (k * (pre * u) + D * (pre * u)); u, gates and y cross memory once."""
    row = tl.program_id(0).to(tl.int64)
    c = row % C
    offs, mask = _grid_offsets(ROWS, COLS, STRIDE, LIMIT, N1, N2)
    x = _load_signal(u_ptr + row * LIMIT, offs, mask)  # (N1, N2)
    if HAS_PRE:
        x = x * _load_signal(pre_ptr + row * LIMIT, offs, mask)
    f1r, f1i = _load_complex(dft1_ptr, N1, N1)
    f2r, f2i = _load_complex(dft2_ptr, N2, N2)
    twr, twi = _load_complex(tw_ptr, N1, N2)
    kr, ki = _load_complex(spec_ptr + c * 2 * N1 * N2, N1, N2)
    xr, xi = _fft_real(x, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE)
    zr, zi = _cmul(xr, xi, kr, ki)
    y = _ifft_real(zr, zi, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE)
    if HAS_D:
        y = y + tl.load(d_ptr + c) * x
    if HAS_POST:
        y = y * _load_signal(post_ptr + row * LIMIT, offs, mask)
    tl.store(y_ptr + row * LIMIT + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def conv_bwd_kernel(
    grad_y_ptr,  # (B, C, LIMIT)
    u_ptr,
    pre_ptr,
    post_ptr,
    d_ptr,  # (C,) fp32 or dummy
    spec_ptr,  # (C, 2, N1, N2) fp32 filter spectrum / N
    dft1_ptr,
    dft2_ptr,
    tw_ptr,
    grad_u_ptr,  # (B, C, LIMIT) out
    grad_pre_ptr,  # (B, C, LIMIT) out or dummy
    grad_post_ptr,  # (B, C, LIMIT) out or dummy
    grad_k_ptr,  # (C, N1, N2) fp32 out: circular cross-correlation, lag 0 at [0, 0]
    grad_d_ptr,  # (C,) fp32 out
    B,
    C,
    ROWS,
    COLS,
    STRIDE,
    LIMIT,
    inv_n,
    N1: tl.constexpr,
    N2: tl.constexpr,
    TWIDDLE: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    HAS_D: tl.constexpr,
):
    """One program per channel, looping over the batch; every gradient of the forward, intermediates recomputed.

    With x = pre * u, s = k * x + D x, y = post * s and h = post * dy:
    d post = dy * s, d x = corr(h, k) + D h (spectrum H conj(K)), d u = pre * d x, d pre = u * d x,
    d D = sum h x, d k[lag] = sum_b sum_t h[t] x[t - lag] (spectrum sum_b H conj(X)).
    """
    c = tl.program_id(0).to(tl.int64)
    offs, mask = _grid_offsets(ROWS, COLS, STRIDE, LIMIT, N1, N2)
    f1r, f1i = _load_complex(dft1_ptr, N1, N1)
    f2r, f2i = _load_complex(dft2_ptr, N2, N2)
    twr, twi = _load_complex(tw_ptr, N1, N2)
    kr, ki = _load_complex(spec_ptr + c * 2 * N1 * N2, N1, N2)
    d = tl.load(d_ptr + c) if HAS_D else 0.0
    acc_r = tl.zeros((N1, N2), dtype=tl.float32)  # sum_b H conj(X), layout [k1, k2]
    acc_i = tl.zeros((N1, N2), dtype=tl.float32)
    acc_d = tl.zeros((N1, N2), dtype=tl.float32)  # sum_b h x
    for b in range(B):
        row = b * C + c
        u = _load_signal(u_ptr + row * LIMIT, offs, mask)  # (N1, N2)
        x = u
        if HAS_PRE:
            x = u * _load_signal(pre_ptr + row * LIMIT, offs, mask)
        h = _load_signal(grad_y_ptr + row * LIMIT, offs, mask)
        xr, xi = _fft_real(x, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE)
        if HAS_POST:
            zr, zi = _cmul(xr, xi, kr, ki)
            s = _ifft_real(zr, zi, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE) + d * x
            tl.store(grad_post_ptr + row * LIMIT + offs, (h * s).to(grad_post_ptr.dtype.element_ty), mask=mask)
            h = h * _load_signal(post_ptr + row * LIMIT, offs, mask)
        hr, hi = _fft_real(h, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE)
        pr, pi = _cmul_conj(hr, hi, xr, xi)
        acc_r += pr
        acc_i += pi
        acc_d += h * x
        zr, zi = _cmul_conj(hr, hi, kr, ki)
        grad_x = _ifft_real(zr, zi, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE) + d * h
        if HAS_PRE:
            grad_u = grad_x * _load_signal(pre_ptr + row * LIMIT, offs, mask)
            tl.store(grad_pre_ptr + row * LIMIT + offs, (grad_x * u).to(grad_pre_ptr.dtype.element_ty), mask=mask)
        else:
            grad_u = grad_x
        tl.store(grad_u_ptr + row * LIMIT + offs, grad_u.to(grad_u_ptr.dtype.element_ty), mask=mask)
    grad_k = _ifft_real(acc_r, acc_i, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE) * inv_n
    grid = tl.arange(0, N1)[:, None] * N2 + tl.arange(0, N2)[None, :]  # (N1, N2)
    tl.store(grad_k_ptr + c * N1 * N2 + grid, grad_k)
    tl.store(grad_d_ptr + c, tl.sum(tl.sum(acc_d, axis=1), axis=0))
