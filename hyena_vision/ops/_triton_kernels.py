"""Triton kernels of the FFT long convolution: an in-register four-step FFT on an (N1, N2) grid of fp32 tiles.

A length-N signal (N = N1 * N2) is laid on the grid row-major, ``x[n1, n2] = x[N2 * n1 + n2]``. Its spectrum is

    X[k1, k2] = sum_{n2} F2[n2, k2] * T[k1, n2] * sum_{n1} F1[k1, n1] * x[n1, n2]       (frequency k1 + N1 * k2)

with DFT matrices F1 (N1, N1), F2 (N2, N2) and twiddles T[k1, n2] = exp(-2 pi i k1 n2 / N): two complex matrix
products done with ``tl.dot`` and one elementwise multiply. The inverse runs the same steps backwards with conjugates
and returns the signal in natural order, so spectra never leave the kernel in any other layout than [k1, k2].
Without twiddles the same code is the 2D DFT of an (N1, N2) image (``F1 @ x @ F2``), which is how fftconv2d runs;
grids twice as large on each side run as four such DFTs, one per parity class of the spectrum (PARITY, _class_sum).
The sides of square grids from RADIX2_SIDE up (32 x 32, 64 x 64), and sides of 2 RADIX2_SIDE on any grid (the 64-point
side of 32 x 64), split their DFT into a radix-2 step over two half-length DFTs (see _dft), so the DFT factors, the K
side of every tl.dot, are 16 / 32 points: ptxas (sm_90) keeps the operand panels of the products in registers, and the
halved K spills far less there. Such a spectrum is stored in an interleaved order along that axis (see _frequency);
the twiddles' rows and the multi-pass outer twiddles follow it. Other sides (16 x 32, the 32-point side of 32 x 64)
keep dense factors. On 32 x 64 the radix-2 form spilled 292-832 bytes until the stacked products (_dft_direct).
Where the signal occupies only the first half of a grid's rows (the zero padding of a linear convolution), and in 2D
of its columns, the fused-register kernels run the first stage on that half only (F1[:, :N1 / 2] @ x, or with a
radix-2 step the same block of its half-length factor for the even and for the odd rows) and compute only the
outputs written in the last stage (F1[:N1 / 2, :] @ c): half of each of those products (HALF_ROWS, HALF_COLS, see
_fused_factors).

Complex values are carried as (real, imaginary) pairs of fp32 tiles; half-precision inputs are widened on load. Every
``tl.dot`` goes through ``_dot``, whose PRECISION (a constexpr of each kernel) picks a tensor-core split.
Spectra of filters are stored pre-scaled by 1/N, so the inverse transform here is unnormalised. The skip term D x is
the filter's lag 0 (the host puts D there, see triton_fftconv._circular_filter): the spectra hold it and no kernel
takes D; the backward kernels sum grad_D = sum h x themselves.

Program layout of the fused-register kernels: the forward runs one program per batch tile of one channel (TILE
consecutive rows, channel-major, the DFT factors loaded once per tile), and so does the backward's per-row gradients
kernel where it runs (see conv_bwd_kernel); the backward's filter kernel runs one per (channel, batch slice), writing
the cross spectrum and grad_D as the slice's partial sums for a fixed-order host reduction (and by default the per-row
gradients too), and one more small kernel inverts the summed cross spectrum into grad_k. All transform a tile's rows in
pairs, two real signals as one complex one, z = x_b + i x_(b+1): the filter is real, so its convolution maps real to
real, and the inverse of Z K has y_b as its real part and y_(b+1) as its imaginary part. A real row alone costs two
thirds of a complex transform (a real first stage, only the real part of the last), a packed pair one complex transform
for two rows: two thirds of the DFT products per row, half the spectral products. An odd last row of a tile or slice is
paired with zeros. The rows of a pair share the transform's rounding error: a row much smaller than its partner gets a
larger relative error than it would alone.
"""

import os

import triton
import triton.language as tl

INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")  # see _dot
RADIX2_SIDE = tl.constexpr(32)
STACK_ROWS = tl.constexpr(32)  # see _dft_direct


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """fp32 a @ b with fp32 accumulation, by PRECISION:
    "bf16x3": each operand split into bf16 hi + lo, three tensor-core products hi*hi + hi*lo + lo*hi (relative error
    of a convolution about 1e-5, 4e-5 on gradients); "tf32x3": the same split in tf32 (Triton's own tf32x3: below
    1e-6, at half bf16's tensor-core rate). A single bf16 product was measured at 1.5e-2 (forward) and 2e-2
    (gradients) here: too coarse even for bf16 outputs; fp32 FMA products ("ieee") run 15x below tensor cores.
    """
    acc = tl.zeros((a.shape[0], b.shape[1]), dtype=tl.float32)
    if INTERPRETED:  # it ignores input_precision and multiplies bf16 tiles as raw integers: emulate the split in fp32
        return _split_dot_emulated(a, b, acc, PRECISION)
    if PRECISION == "bf16x3":
        a_hi = a.to(tl.bfloat16)
        b_hi = b.to(tl.bfloat16)
        a_lo = (a - a_hi.to(tl.float32)).to(tl.bfloat16)
        b_lo = (b - b_hi.to(tl.float32)).to(tl.bfloat16)
        return tl.dot(a_hi, b_hi, tl.dot(a_lo, b_hi, tl.dot(a_hi, b_lo, acc)))
    else:
        return tl.dot(a, b, acc, input_precision="tf32x3")


@triton.jit
def _split_dot_emulated(a, b, acc, PRECISION: tl.constexpr):
    """The interpreter's stand-in for _dot: the same three products of hi / lo parts, each part rounded to bf16 or tf32
    in fp32 by bit operations (to nearest, ties away from zero), the products exact in fp32 as on tensor cores."""
    a_hi = _round_mantissa(a, PRECISION)
    b_hi = _round_mantissa(b, PRECISION)
    a_lo = _round_mantissa(a - a_hi, PRECISION)
    b_lo = _round_mantissa(b - b_hi, PRECISION)
    small = tl.dot(a_lo, b_hi, tl.dot(a_hi, b_lo, acc, input_precision="ieee"), input_precision="ieee")
    return tl.dot(a_hi, b_hi, small, input_precision="ieee")


@triton.jit
def _round_mantissa(x, PRECISION: tl.constexpr):
    """x rounded to bf16 (7 mantissa bits) or tf32 (10), kept as fp32."""
    bits = x.to(tl.int32, bitcast=True)  # sign and magnitude: adding half an ulp rounds the magnitude
    if PRECISION == "bf16x3":
        bits = (bits + 0x8000) & -0x10000
    else:
        bits = (bits + 0x1000) & -0x2000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _load_complex(ptr, R: tl.constexpr, S: tl.constexpr):
    """(real, imag) tiles of an fp32 (2, R, S) row-major tensor."""
    offs = tl.arange(0, R)[:, None] * S + tl.arange(0, S)[None, :]  # (R, S)
    return tl.load(ptr + offs), tl.load(ptr + R * S + offs)


@triton.jit
def _load_block(ptr, R: tl.constexpr, S: tl.constexpr, M: tl.constexpr):
    """(real, imag) tiles of the top-left (R, S) block of an fp32 (2, M, M) row-major tensor."""
    offs = tl.arange(0, R)[:, None] * M + tl.arange(0, S)[None, :]  # (R, S)
    return tl.load(ptr + offs), tl.load(ptr + M * M + offs)


@triton.jit
def _load_row(src, offs, PLANE):
    """(real, imag) at offs of a complex tensor whose planes are PLANE elements apart."""
    return tl.load(src + offs), tl.load(src + PLANE + offs)


@triton.jit
def _store_row(dst, offs, zr, zi, PLANE):
    tl.store(dst + offs, zr)
    tl.store(dst + PLANE + offs, zi)


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
def _load_gated(u_row, pre_row, offs, mask, HAS_PRE: tl.constexpr):
    """x = pre * u (or u) at offs, fp32."""
    x = _load_signal(u_row, offs, mask)
    if HAS_PRE:
        x = x * _load_signal(pre_row, offs, mask)
    return x


@triton.jit
def _store_output(y, post_row, y_row, offs, mask, HAS_POST: tl.constexpr):
    """y_row[offs] = post * y (or y), in y_row's dtype."""
    if HAS_POST:
        y = y * _load_signal(post_row, offs, mask)
    tl.store(y_row + offs, y.to(y_row.dtype.element_ty), mask=mask)


@triton.jit
def _load_four_step(dft1_ptr, dft2_ptr, tw_ptr, N1: tl.constexpr, N2: tl.constexpr):
    """The in-register four-step FFT's constants on an (N1, N2) grid: the DFT factors F_M1, F_M2 of its sides (see
    _dft: M = N, or N / 2 with a radix-2 step, see the module docstring) and the twiddles, rows in the first stage's
    layout."""
    M1: tl.constexpr = N1 // 2 if N1 >= RADIX2_SIDE * (1 if N1 == N2 else 2) else N1
    M2: tl.constexpr = N2 // 2 if N2 >= RADIX2_SIDE * (1 if N2 == N1 else 2) else N2
    f1r, f1i = _load_complex(dft1_ptr, M1, M1)
    f2r, f2i = _load_complex(dft2_ptr, M2, M2)
    twr, twi = _load_complex(tw_ptr, N1, N2)
    return f1r, f1i, f2r, f2i, twr, twi


@triton.jit
def _mm(x, f, AXIS0: tl.constexpr, PRECISION: tl.constexpr):
    """f @ x (AXIS0: the DFT factor f acts along x's first axis) or x @ f (along its second)."""
    if AXIS0:
        y = _dot(f, x, PRECISION)
    else:
        y = _dot(x, f, PRECISION)
    return y


@triton.jit
def _dft_direct(xr, xi, fr, fi, REAL: tl.constexpr, INVERSE: tl.constexpr, AXIS0: tl.constexpr, PRECISION, STACK=True):
    """One dense DFT-factor product along an axis of length M (F's side); arguments as in _dft.

    Two of its forms run as fewer, larger tl.dots. The forward's x @ F on tiles of STACK_ROWS rows or more (unless
    STACK is off) stacks the real and imaginary parts as one tile of twice the rows: tl.dots whose results feed further
    tl.dots get every warp along the rows (TTGIR: warpsPerCTA [8, 1], 128 rows of sm_90's wgmma tiles), so the warps of
    an 8-warp kernel computed and held each 64-row product twice (32-row ones up to four times). The real part of an
    inverse is one product over twice the contraction, [fr fi] @ [xr; xi] along the first axis. ptxas (sm_90, 8 warps,
    spill stores in bytes): the fused-register forward at 64 x 64 from 20 (2D: 24) to none, its backward from 128 (24)
    to none, grad_k's whole-column inverse of the multi-pass scheme from 28 to none; and the radix-2 step on the
    64-point side of 32 x 64 grids from 292 / 452 / 832 (forward / backward / filter spectrum) to none. Stacking the
    inverses' x @ F too spilled in the multi-pass inverse column FFT (28 to 224 bytes); stacked, the row passes'
    transposed-tile forward (_load_spectrum, STACK off) spilled 8 bytes in the fused-L2 backward and 16 in the 16 x 32
    row FFT.
    """
    if STACK and not (AXIS0 or REAL or INVERSE) and xr.shape[0] >= STACK_ROWS:
        x = _interleave(xr, xi, True)  # (2 R, K): rows xr[0], xi[0], xr[1], ...
        ar, ai = _deinterleave(_dot(x, fr, PRECISION), True)  # xr @ fr, xi @ fr: (R, M) each
        br, bi = _deinterleave(_dot(x, fi, PRECISION), True)  # xr @ fi, xi @ fi
        yr, yi = ar - bi, br + ai
    elif INVERSE and REAL:  # Re(conj(F) x) = [fr fi] @ [xr; xi] (along the first axis), the parts interleaved
        yr = _mm(_interleave(xr, xi, AXIS0), _interleave(fr, fi, not AXIS0), AXIS0, PRECISION)
        yi = yr
    elif INVERSE:  # x times conj(F)
        yr = _mm(xr, fr, AXIS0, PRECISION) + _mm(xi, fi, AXIS0, PRECISION)
        yi = _mm(xi, fr, AXIS0, PRECISION) - _mm(xr, fi, AXIS0, PRECISION)
    elif REAL:
        yr = _mm(xr, fr, AXIS0, PRECISION)
        yi = _mm(xr, fi, AXIS0, PRECISION)
    else:
        yr = _mm(xr, fr, AXIS0, PRECISION) - _mm(xi, fi, AXIS0, PRECISION)
        yi = _mm(xr, fi, AXIS0, PRECISION) + _mm(xi, fr, AXIS0, PRECISION)
    return yr, yi


@triton.jit
def _deinterleave(x, AXIS0: tl.constexpr):
    """(even, odd) entries of x along its first (AXIS0) or second axis."""
    if AXIS0:
        x = tl.permute(tl.reshape(x, (x.shape[0] // 2, 2, x.shape[1])), (0, 2, 1))
    else:
        x = tl.reshape(x, (x.shape[0], x.shape[1] // 2, 2))
    return tl.split(x)


@triton.jit
def _interleave(a, b, AXIS0: tl.constexpr):
    """The inverse of _deinterleave: a at the even entries, b at the odd ones."""
    if AXIS0:
        x = tl.reshape(tl.permute(tl.join(a, b), (0, 2, 1)), (2 * a.shape[0], a.shape[1]))
    else:
        x = tl.reshape(tl.join(a, b), (a.shape[0], 2 * a.shape[1]))
    return x


@triton.jit
def _dft(xr, xi, fr, fi, REAL: tl.constexpr, INVERSE: tl.constexpr, AXIS0: tl.constexpr, PRECISION, STACK=True):
    """DFT (INVERSE: unnormalised inverse) of the complex tile xr + i xi along its first (AXIS0) or second axis, of
    length N = M or 2 M for the DFT factor F_M = fr + i fi. REAL: the forward's input is real (xi unused), the
    inverse returns only the real part (twice).

    N = 2 M takes one radix-2 step, so 64-point sides need only 32-point factors (the tl.dot operand panels, K = M
    wide, are what fills the registers): X[k + M j] = E[k] + (-1)^j W_N^k O[k] with E, O the M-point DFTs of the
    even and odd samples. Its spectrum is stored interleaved: entry 2 k + j holds frequency k + M j (see _frequency);
    the inverse takes that order and returns natural order. F may be a block of F_M: (M, M / 2)
    for a forward input of half length, whose other half is zero, and (M / 2, M) for an inverse that returns only the
    first half of its outputs (both along the first axis; transposed along the second; see _half_blocks).
    """
    N: tl.constexpr = xr.shape[0] if AXIS0 else xr.shape[1]
    if N == (fr.shape[1] if AXIS0 else fr.shape[0]):  # F's contraction side (F may be a block, see _half_blocks)
        yr, yi = _dft_direct(xr, xi, fr, fi, REAL, INVERSE, AXIS0, PRECISION, STACK)
    else:
        # M: F's output side in the forward (whose input may hold only the signal's first half, taken by a block of
        # F, see _half_blocks), its contraction side in the inverse (whose block computes only the first outputs)
        M: tl.constexpr = fr.shape[1] if AXIS0 == INVERSE else fr.shape[0]
        k = tl.arange(0, M)
        if AXIS0:
            wr, wi = _unit_root(k[:, None], 2 * M)  # W_2M^k, (M, 1)
        else:
            wr, wi = _unit_root(k[None, :], 2 * M)  # (1, M)
        if INVERSE:  # x[2 m + r] = sum_k W_M^(-m k) W_N^(-r k) (Z[k] + (-1)^r Z[k + M])
            lo_r, hi_r = _deinterleave(xr, AXIS0)
            lo_i, hi_i = _deinterleave(xi, AXIS0)
            er, ei = _dft_direct(lo_r + hi_r, lo_i + hi_i, fr, fi, REAL, True, AXIS0, PRECISION)
            odd_r, odd_i = _cmul_conj(lo_r - hi_r, lo_i - hi_i, wr, wi)
            odd_r, odd_i = _dft_direct(odd_r, odd_i, fr, fi, REAL, True, AXIS0, PRECISION)
            yr = _interleave(er, odd_r, AXIS0)
            yi = _interleave(ei, odd_i, AXIS0)
        else:
            even_r, odd_r = _deinterleave(xr, AXIS0)
            if REAL:
                er, ei = _dft_direct(even_r, even_r, fr, fi, True, False, AXIS0, PRECISION)
                odd_r, odd_i = _dft_direct(odd_r, odd_r, fr, fi, True, False, AXIS0, PRECISION)
            else:
                even_i, odd_i = _deinterleave(xi, AXIS0)
                er, ei = _dft_direct(even_r, even_i, fr, fi, False, False, AXIS0, PRECISION, STACK)
                odd_r, odd_i = _dft_direct(odd_r, odd_i, fr, fi, False, False, AXIS0, PRECISION, STACK)
            odd_r, odd_i = _cmul(odd_r, odd_i, wr, wi)
            yr = _interleave(er + odd_r, er - odd_r, AXIS0)
            yi = _interleave(ei + odd_i, ei - odd_i, AXIS0)
    return yr, yi


@triton.jit
def _frequency(position, N: tl.constexpr, M: tl.constexpr):
    """Frequency held at a position of a length-N axis of a spectrum from _dft with an M-point factor (interleaved
    where N = 2 M)."""
    if N > M:
        position = position // 2 + M * (position % 2)
    return position


@triton.jit
def _fft_real(x, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE: tl.constexpr, PRECISION: tl.constexpr):
    """Spectrum (real, imag), layout [k1, k2] (interleaved per _dft), of the real (N1, N2) tile x."""
    ar, ai = _dft(x, x, f1r, f1i, True, False, True, PRECISION)  # (N1, N2), indexed [k1, n2]
    if TWIDDLE:
        ar, ai = _cmul(ar, ai, twr, twi)
    return _dft(ar, ai, f2r, f2i, False, False, False, PRECISION)  # (N1, N2), indexed [k1, k2]


@triton.jit
def _ifft_real(zr, zi, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE: tl.constexpr, PRECISION: tl.constexpr):
    """Real part of the unnormalised inverse of the spectrum (zr, zi), as an (N1, N2) tile in natural order."""
    cr, ci = _dft(zr, zi, f2r, f2i, False, True, False, PRECISION)  # (N1, N2), indexed [k1, n2]
    if TWIDDLE:
        cr, ci = _cmul_conj(cr, ci, twr, twi)
    return _dft(cr, ci, f1r, f1i, True, True, True, PRECISION)[0]  # (N1, N2), indexed [n1, n2]


@triton.jit
def _fft_complex(xr, xi, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE: tl.constexpr, PRECISION: tl.constexpr):
    """Spectrum (layout [k1, k2], interleaved per _dft) of the complex (N1, N2) tile xr + i xi in natural order (two
    real rows packed as one complex signal in the fused-register kernels, see conv_fwd_kernel); TWIDDLE as in
    _fft_real."""
    ar, ai = _dft(xr, xi, f1r, f1i, False, False, True, PRECISION)  # (N1, N2), indexed [k1, n2]
    if TWIDDLE:
        ar, ai = _cmul(ar, ai, twr, twi)
    return _dft(ar, ai, f2r, f2i, False, False, False, PRECISION)


@triton.jit
def _ifft_complex(zr, zi, f1r, f1i, f2r, f2i, twr, twi, TWIDDLE: tl.constexpr, PRECISION: tl.constexpr):
    """Unnormalised inverse (natural order) of the spectrum (zr, zi) in layout [k1, k2], both parts (for packed rows:
    the two rows' outputs)."""
    cr, ci = _dft(zr, zi, f2r, f2i, False, True, False, PRECISION)  # (N1, N2), indexed [k1, n2]
    if TWIDDLE:
        cr, ci = _cmul_conj(cr, ci, twr, twi)
    return _dft(cr, ci, f1r, f1i, False, True, True, PRECISION)  # (N1, N2), indexed [n1, n2]


@triton.jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _cmul_conj(ar, ai, br, bi):
    """a * conj(b)."""
    return ar * br + ai * bi, ai * br - ar * bi


@triton.jit
def _input_rows(u_ptr, pre_ptr, post_ptr, b, c, SUB, SUC, SPB, SPC, SQB, SQC):
    """Pointers to row (b, c) of u, pre and post, read in place through their strides (views such as channel slices
    need no copy; only each row must be contiguous)."""
    return u_ptr + b * SUB + c * SUC, pre_ptr + b * SPB + c * SPC, post_ptr + b * SQB + c * SQC


@triton.jit
def filter_spectrum_kernel(
    k_ptr,  # (C, N1, N2) fp32 filter (with the skip term D at lag 0), lag 0 at [0, 0], negative lags wrapped
    dft1_ptr,  # (2, N1, N1) fp32
    dft2_ptr,  # (2, N2, N2) fp32
    tw_ptr,  # (2, N1, N2) fp32
    spec_ptr,  # (C, 2, N1, N2) fp32 out
    scale,
    N1: tl.constexpr,
    N2: tl.constexpr,
    TWIDDLE: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
):
    """One program per channel: the filter's spectrum times ``scale`` (1/N), shared by every batch element."""
    c = tl.program_id(0).to(tl.int64)
    f1r, f1i, f2r, f2i, twr, twi = _load_four_step(dft1_ptr, dft2_ptr, tw_ptr, N1, N2)
    offs = tl.arange(0, N1)[:, None] * N2 + tl.arange(0, N2)[None, :]  # (N1, N2)
    kr, ki = _fft_real(tl.load(k_ptr + c * N1 * N2 + offs), f1r, f1i, f2r, f2i, twr, twi, TWIDDLE, PRECISION)
    tl.store(spec_ptr + c * 2 * N1 * N2 + offs, kr * scale)
    tl.store(spec_ptr + c * 2 * N1 * N2 + N1 * N2 + offs, ki * scale)


@triton.jit
def _half_blocks(ptr, fr, fi, HALF: tl.constexpr):
    """The first and the last stage's factor of a side whose DFT factor F_M = fr + i fi (M, M) is stored at ptr, as
    (F @ x) multiplies it: with HALF (the signal and the outputs written occupy only the side's first half, zero
    padding after them) F_M[:, :M / 2], which takes the half-length input, and F_M[:M / 2, :], which computes only the
    first half of the outputs (half of each of those products, see _dft); else F_M twice. As x @ F the roles swap
    (F_M is symmetric)."""
    M: tl.constexpr = fr.shape[0]
    if HALF:
        ar, ai = _load_block(ptr, M, M // 2, M)
        zr, zi = _load_block(ptr, M // 2, M, M)
    else:
        ar, ai, zr, zi = fr, fi, fr, fi
    return ar, ai, zr, zi


@triton.jit
def _fused_factors(
    dft1_ptr,
    dft2_ptr,
    tw_ptr,
    N1: tl.constexpr,
    N2: tl.constexpr,
    HALF_ROWS: tl.constexpr,
    HALF_COLS: tl.constexpr,
):
    """DFT factors of the fused-register kernels, per side the first stage's and the last stage's, as real and
    imaginary parts: (a1, z1) of the N1 side, (a2, z2) of the N2 side. A side whose signal and written outputs occupy
    only its first half (HALF_ROWS: rows < N1 / 2; HALF_COLS: columns < N2 / 2, 2D images) has the zero padding
    skipped with blocks of its factor F_M (M = N with a dense factor, N / 2 with a radix-2 step, whose even and odd
    samples each fill only their first half too; see _half_blocks)."""
    f1r, f1i, f2r, f2i, _, _ = _load_four_step(dft1_ptr, dft2_ptr, tw_ptr, N1, N2)  # twiddles re-read per use
    a1r, a1i, z1r, z1i = _half_blocks(dft1_ptr, f1r, f1i, HALF_ROWS)  # F @ x along the first axis
    z2r, z2i, a2r, a2i = _half_blocks(dft2_ptr, f2r, f2i, HALF_COLS)  # x @ F along the second
    return a1r, a1i, z1r, z1i, a2r, a2i, z2r, z2i


@triton.jit
def _spectrum_of_pair(xr, xi, a1r, a1i, a2r, a2i, tw_ptr, N1: tl.constexpr, N2: tl.constexpr, TWIDDLE, PRECISION, REAL):
    """Spectrum (N1, N2) of the packed pair xr + i xi (REAL: of the real row xr alone, xi unused) given the first
    stages' factors a1, a2 (see _fused_factors); the twiddles are read here (L1 / L2), not held across the loop."""
    ar, ai = _dft(xr, xi, a1r, a1i, REAL, False, True, PRECISION)  # (N1, S), indexed [k1, n2]
    if TWIDDLE and a2r.shape[0] < N2:
        return _twiddled_radix2_step(ar, ai, a2r, a2i, tw_ptr, N1, N2, False, PRECISION)
    if TWIDDLE:
        ar, ai = _cmul(ar, ai, *_load_complex(tw_ptr, N1, N2))
    return _dft(ar, ai, a2r, a2i, False, False, False, PRECISION)  # (N1, N2), indexed [k1, k2]


@triton.jit
def _inverse_of_pair(zr, zi, z1r, z1i, z2r, z2i, tw_ptr, N1: tl.constexpr, N2: tl.constexpr, TWIDDLE, PRECISION, REAL):
    """Unnormalised inverse of the spectrum (zr, zi) given the last stages' factors z1, z2 (see _fused_factors), both
    parts (REAL: only the real part, twice), on the (R, S) tile of the outputs written; twiddles as in
    _spectrum_of_pair."""
    if TWIDDLE and z2r.shape[0] < N2:
        cr, ci = _twiddled_radix2_step(zr, zi, z2r, z2i, tw_ptr, N1, N2, True, PRECISION)
    else:
        cr, ci = _dft(zr, zi, z2r, z2i, False, True, False, PRECISION)  # (N1, S), indexed [k1, n2]
        if TWIDDLE:
            cr, ci = _cmul_conj(cr, ci, *_load_complex(tw_ptr, N1, N2))
    return _dft(cr, ci, z1r, z1i, REAL, True, True, PRECISION)  # (R, S), indexed [n1, n2]


@triton.jit
def _twiddled_radix2_step(
    xr, xi, fr, fi, tw_ptr, N1: tl.constexpr, N2: tl.constexpr, INVERSE: tl.constexpr, PRECISION: tl.constexpr
):
    """The four-step's second stage along the rows of the (N1, N2) tile as a radix-2 step over the factor F_(N2 / 2)
    = fr + i fi, with the twiddles T (N1, N2) applied on the way in (x T, then the DFT) or, INVERSE, on the way out
    (the inverse DFT, then times conj(T)): as _dft with a _cmul before it (_cmul_conj after it), but each half of T
    is read where its half of the samples (the even columns, the odd ones) is used, so only half of T is live at a
    time. ptxas (sm_90, 8 warps, bf16x3, gated) at 64 x 64, spill stores in bytes (forward / per-row backward / cross
    spectrum): 172 / 268 / 40 with T read whole before the step, 20 / 128 / 0 so (before _dft_direct's stacked
    products, with which none spills)."""
    M: tl.constexpr = N2 // 2
    tw_even = tw_ptr + tl.arange(0, N1)[:, None] * N2 + 2 * tl.arange(0, M)[None, :]  # (N1, M): T's even columns
    if INVERSE:  # even and odd output samples from Z[k] +- Z[k + M] (see _dft)
        wr, wi = _unit_root(tl.arange(0, M)[None, :], N2)  # W_N2^k, (1, M)
        lo_r, hi_r = _deinterleave(xr, False)  # (N1, M) each
        lo_i, hi_i = _deinterleave(xi, False)
        er, ei = _dft_direct(lo_r + hi_r, lo_i + hi_i, fr, fi, False, True, False, PRECISION)
        er, ei = _cmul_conj(er, ei, tl.load(tw_even), tl.load(tw_even + N1 * N2))
        odd_r, odd_i = _cmul_conj(lo_r - hi_r, lo_i - hi_i, wr, wi)
        odd_r, odd_i = _dft_direct(odd_r, odd_i, fr, fi, False, True, False, PRECISION)
        odd_r, odd_i = _cmul_conj(odd_r, odd_i, tl.load(tw_even + 1), tl.load(tw_even + N1 * N2 + 1))
        yr, yi = _interleave(er, odd_r, False), _interleave(ei, odd_i, False)
    else:
        even_r, odd_r = _deinterleave(xr, False)  # (N1, M) each
        even_i, odd_i = _deinterleave(xi, False)
        er, ei = _cmul(even_r, even_i, tl.load(tw_even), tl.load(tw_even + N1 * N2))
        er, ei = _dft_direct(er, ei, fr, fi, False, False, False, PRECISION)
        odd_r, odd_i = _cmul(odd_r, odd_i, tl.load(tw_even + 1), tl.load(tw_even + N1 * N2 + 1))
        odd_r, odd_i = _dft_direct(odd_r, odd_i, fr, fi, False, False, False, PRECISION)
        odd_r, odd_i = _cmul(odd_r, odd_i, *_unit_root(tl.arange(0, M)[None, :], N2))  # W_N2^k
        yr, yi = _interleave(er + odd_r, er - odd_r, False), _interleave(ei + odd_i, ei - odd_i, False)
    return yr, yi


@triton.jit
def _conv_pair(
    xr,
    xi,
    spec,
    a1r,
    a1i,
    z1r,
    z1i,
    a2r,
    a2i,
    z2r,
    z2i,
    tw_ptr,
    N1: tl.constexpr,
    N2: tl.constexpr,
    TWIDDLE: tl.constexpr,
    CONJ: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Both rows' k * x (CONJ: the correlation, spectrum X conj(K)) for the packed pair xr + i xi, given the factors of
    _fused_factors. The channel's spectrum and the twiddles are read where used (from L1 / L2 after the first pair):
    held across the loop they lengthen the transforms' live ranges and ptxas (sm_90) spills more (the spectrum held:
    2,704 bytes of spill loads against 2,288 at 64 x 64 with dense 64-point factors; the twiddles: 604 against 448).
    Loading the DFT factors per use as well spilled far more (1,116 bytes of stores against 456 at 64 x 64, 8 against
    none at 32 x 32): they stay held. The barrier between the spectral product and the inverse keeps ptxas from
    overlapping the two transforms: at 64 x 64 (bf16x3, gated, half rows) it cut the spill stores of the forward from
    396 to 172 bytes and of the per-row backward from 564 to 268 (2D: 88 to 24 and 56 to 24)."""
    xr, xi = _spectrum_of_pair(xr, xi, a1r, a1i, a2r, a2i, tw_ptr, N1, N2, TWIDDLE, PRECISION, False)  # (N1, N2)
    kr, ki = _load_complex(spec, N1, N2)
    if CONJ:
        zr, zi = _cmul_conj(xr, xi, kr, ki)
    else:
        zr, zi = _cmul(xr, xi, kr, ki)
    tl.debug_barrier()  # a fence: the inverse does not start before the product is formed (spills, see above)
    return _inverse_of_pair(zr, zi, z1r, z1i, z2r, z2i, tw_ptr, N1, N2, TWIDDLE, PRECISION, False)


@triton.jit
def _parity_twiddle(xr, xi, cls, N1: tl.constexpr, N2: tl.constexpr, CONJ: tl.constexpr):
    """x (R, S) times W^(s n1 + t n2) (CONJ: its conjugate), W_(2 N1) along the rows and W_(2 N2) along the columns,
    for the parity class cls = 2 s + t of a (2 N1, 2 N2) grid (see _class_sum). The roots are formed as one (R, S)
    tile: applied as a row factor and then a column factor they spilled more (ptxas, sm_90: 92 bytes against 32 in
    the forward at 64 x 64, in an earlier form of the class loop)."""
    rows_r, rows_i = _unit_root((cls // 2) * tl.arange(0, xr.shape[0])[:, None], 2 * N1)  # (R, 1)
    cols_r, cols_i = _unit_root((cls % 2) * tl.arange(0, xr.shape[1])[None, :], 2 * N2)  # (1, S)
    wr, wi = _cmul(rows_r, rows_i, cols_r, cols_i)  # (R, S)
    if CONJ:
        xr, xi = _cmul_conj(xr, xi, wr, wi)
    else:
        xr, xi = _cmul(xr, xi, wr, wi)
    return xr, xi


@triton.jit
def _class_input(row, gate_row, next_row, gate_next, offs, mask, second, HAS_GATE: tl.constexpr, cls, N1, N2, PARITY):
    """The packed pair x = gate * row + i gate_next * next_row (masks mask, second; HAS_GATE), (R, S) each, and,
    PARITY, times the twiddle of parity class cls (see _class_sum)."""
    xr = _load_gated(row, gate_row, offs, mask, HAS_GATE)
    xi = _load_gated(next_row, gate_next, offs, second, HAS_GATE)
    if PARITY:
        xr, xi = _parity_twiddle(xr, xi, cls, N1, N2, False)
    return xr, xi


@triton.jit
def _class_sum(yr, yi, work, cls, N1: tl.constexpr, N2: tl.constexpr, PARITY: tl.constexpr):
    """The outputs (R, S) of a convolution from the pair's parity classes up to cls: y itself, or, PARITY, the sum
    over the classes so far of each class's twiddled inverse y, kept between calls in the work slot ((2, N1, N2) fp32,
    L1 / L2), not in registers.

    PARITY: a (2 N1, 2 N2) grid too large for one program (2D images up to N1 x N2) runs as the spectrum's four parity
    classes (k1 % 2, k2 % 2) = (s, t), cls = 2 s + t. Each is the (N1, N2) DFT of the signal times W^(s n1 + t n2)
    (W_(2 N1) and W_(2 N2) along the two axes; _class_input), since the signal is zero outside its first (N1, N2)
    quadrant; the outputs there are the sum over the classes of each class's inverse times W^-(s n1 + t n2). The class
    spectra sit one after another ((4, 2, N1, N2) per channel); the barrier orders the slot's accesses between
    threads. The callers run the classes as steps of their loop over pairs, not as an inner loop: ptxas (sm_90, 8
    warps, bf16x3) spilled 32-44 bytes with an inner loop over the classes even with no twiddles and no sum (the
    transforms' 255 registers at 64 x 64 leave no room), none as steps."""
    if PARITY:
        yr, yi = _parity_twiddle(yr, yi, cls, N1, N2, True)
        slot = tl.arange(0, yr.shape[0])[:, None] * N2 + tl.arange(0, yr.shape[1])[None, :]  # (R, S)
        earlier = cls > 0  # the classes before this one have their sum in the slot
        yr += tl.load(work + slot, mask=earlier, other=0.0)
        yi += tl.load(work + N1 * N2 + slot, mask=earlier, other=0.0)
        _store_row(work, slot, yr, yi, N1 * N2)
        tl.debug_barrier()  # the sum is written before the next class reads it
    return yr, yi


@triton.jit
def conv_fwd_kernel(
    u_ptr,  # (B, C, LIMIT) any float dtype, rows contiguous (strides SUB, SUC)
    pre_ptr,  # (B, C, LIMIT) or dummy
    post_ptr,  # (B, C, LIMIT) or dummy
    spec_ptr,  # (C, CLASSES, 2, N1, N2) fp32 spectrum / N of the filter with the skip term D at lag 0 (CLASSES: 4
    # with PARITY, else 1)
    dft1_ptr,
    dft2_ptr,
    tw_ptr,
    work_ptr,  # PARITY: (programs, 2, N1, N2) fp32, each program's running sum over the classes (see _class_sum)
    y_ptr,  # (B, C, LIMIT) out
    B,
    C,
    TILE,  # batch tile: rows per program (a runtime value: one compiled kernel serves every tile)
    ROWS,
    COLS,
    STRIDE,
    LIMIT,
    SUB,  # batch and channel strides (elements) of u, pre, post: rows are read in place
    SUC,
    SPB,
    SPC,
    SQB,
    SQC,
    N1: tl.constexpr,
    N2: tl.constexpr,
    TWIDDLE: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
    HALF_ROWS: tl.constexpr,  # the signal and its outputs occupy only rows < N1 / 2 (zero padding, see _fused_factors)
    HALF_COLS: tl.constexpr,  # and / or only columns < N2 / 2 (2D)
    PARITY: tl.constexpr,  # a 2D (2 N1, 2 N2) grid in four parity classes of (N1, N2) (see _class_sum)
):
    """One program per batch tile of one channel (rows b0 .. b0 + TILE - 1 of channel c; rows past B skipped): y = post
    * (k * (pre * u) + D * (pre * u)), D in the spectrum; u, gates and y cross memory once. The DFT factors are loaded
    once per program and reused by its TILE rows, transformed in packed pairs (rows b, b + 1 as the real and imaginary
    parts of one complex signal, see the module docstring; the host makes TILE even, see batch_tile).

    Registers (ptxas, sm_90, 8 warps; bf16x3 with gates and D; spill stores / loads in bytes): none at any size (190
    registers at 32 x 64, 222 at 64 x 64; in 2D without gates, half rows and columns, 172 and 254). At 64 x 64 that
    took, from 456 / 460 (84 / 84), the half rows on radix-2 sides (_fused_factors), the fence before the inverse
    (_conv_pair), the twiddles read per half (_twiddled_radix2_step) and, for the last 20 / 28 (24 / 24) bytes, the
    stacked products of _dft_direct.
    Tried and dropped: running the transforms on transposed tiles (first DFT along the second axis, as _load_spectrum
    does) spilled more (572 / 592 at 64 x 64, 160 / 152 in 2D, 656 / 656 at 32 x 64 with a dense 64-point factor
    against none), and so did 16 warps (1,940 / 2,140 at 64 x 64).

    Programs run channel-major (consecutive programs share c), so a filter spectrum is read from L2 by its batch.
    """
    tiles = tl.cdiv(B, TILE)
    pid = tl.program_id(0).to(tl.int64)
    c = pid // tiles
    b0 = (pid % tiles) * TILE
    R: tl.constexpr = N1 // 2 if HALF_ROWS else N1  # grid rows and columns the signal and the outputs occupy
    S: tl.constexpr = N2 // 2 if HALF_COLS else N2
    offs, mask = _grid_offsets(ROWS, COLS, STRIDE, LIMIT, R, S)  # (R, S)
    factors = _fused_factors(dft1_ptr, dft2_ptr, tw_ptr, N1, N2, HALF_ROWS, HALF_COLS)
    CLASSES: tl.constexpr = 4 if PARITY else 1
    spec = spec_ptr + c * CLASSES * 2 * N1 * N2
    work = work_ptr + pid * 2 * N1 * N2
    end = tl.minimum(b0 + TILE, B)
    # rows b and b + 1 as one complex signal, one step per parity class (see _class_sum); num_stages=1: no software
    # pipelining of the next pair's loads (it doubles shared memory and adds spills)
    for step in tl.range(0, tl.cdiv(end - b0, 2) * CLASSES, num_stages=1):
        b = b0 + 2 * (step // CLASSES)
        cls = step % CLASSES
        done = cls == CLASSES - 1  # the outputs are complete (a branch: masked stores spilled 40 bytes, see _class_sum)
        second = mask & (b + 1 < end)  # an odd last row is paired with zeros
        u_row, pre_row, post_row = _input_rows(u_ptr, pre_ptr, post_ptr, b, c, SUB, SUC, SPB, SPC, SQB, SQC)
        u_next, pre_next, post_next = _input_rows(u_ptr, pre_ptr, post_ptr, b + 1, c, SUB, SUC, SPB, SPC, SQB, SQC)
        xr, xi = _class_input(u_row, pre_row, u_next, pre_next, offs, mask, second, HAS_PRE, cls, N1, N2, PARITY)
        yr, yi = _conv_pair(xr, xi, spec + cls * 2 * N1 * N2, *factors, tw_ptr, N1, N2, TWIDDLE, False, PRECISION)
        yr, yi = _class_sum(yr, yi, work, cls, N1, N2, PARITY)  # (R, S) each: the two rows' outputs
        if done:  # the outputs are contiguous
            _store_output(yr, post_row, y_ptr + (b * C + c) * LIMIT, offs, mask, HAS_POST)
            _store_output(yi, post_next, y_ptr + ((b + 1) * C + c) * LIMIT, offs, second, HAS_POST)


@triton.jit
def _store_grad_post(s, grad_y_row, grad_post_row, offs, mask):
    """grad_post = dy * s for one row, given s = k * x + D x."""
    grad_post = _load_signal(grad_y_row, offs, mask) * s
    tl.store(grad_post_row + offs, grad_post.to(grad_post_row.dtype.element_ty), mask=mask)


@triton.jit
def _store_grad_input(
    grad_x,
    u_row,
    pre_row,
    grad_u_ptr,
    grad_pre_ptr,
    out,
    offs,
    mask,
    HAS_PRE: tl.constexpr,
):
    """grad_u = pre * d x and grad_pre = u * d x for one row (output offset out), given d x = corr(h, k) + D h."""
    if HAS_PRE:
        grad_u = grad_x * _load_signal(pre_row, offs, mask)
        grad_pre = grad_x * _load_signal(u_row, offs, mask)
        tl.store(grad_pre_ptr + out + offs, grad_pre.to(grad_pre_ptr.dtype.element_ty), mask=mask)
    else:
        grad_u = grad_x
    tl.store(grad_u_ptr + out + offs, grad_u.to(grad_u_ptr.dtype.element_ty), mask=mask)


@triton.jit
def conv_bwd_kernel(
    grad_y_ptr,  # (B, C, LIMIT), rows contiguous (strides SGB, SGC)
    u_ptr,
    pre_ptr,
    post_ptr,
    spec_ptr,  # (C, CLASSES, 2, N1, N2) fp32 filter spectrum / N with D, as in conv_fwd_kernel
    dft1_ptr,
    dft2_ptr,
    tw_ptr,
    work_ptr,  # PARITY: (programs, 4, N1, N2) fp32, the running sums of d x and (HAS_POST) of s (see _class_sum)
    grad_u_ptr,  # (B, C, LIMIT) out
    grad_pre_ptr,  # (B, C, LIMIT) out or dummy
    grad_post_ptr,  # (B, C, LIMIT) out or dummy
    B,
    C,
    TILE,  # batch tile: rows per program, as in conv_fwd_kernel
    ROWS,
    COLS,
    STRIDE,
    LIMIT,
    SUB,  # batch and channel strides (elements) of u, pre, post: rows are read in place
    SUC,
    SPB,
    SPC,
    SQB,
    SQC,
    SGB,  # batch and channel strides of grad_y
    SGC,
    N1: tl.constexpr,
    N2: tl.constexpr,
    TWIDDLE: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
    HALF_ROWS: tl.constexpr,  # as in conv_fwd_kernel: the gradients occupy the signals' rows and columns
    HALF_COLS: tl.constexpr,
    PARITY: tl.constexpr,  # as in conv_fwd_kernel
):
    """The backward's per-row gradients, one program per batch tile of one channel (as conv_fwd_kernel), rows in
    packed pairs, intermediates recomputed; grad_k and grad_D come from conv_bwd_filter_kernel, which computes the
    per-row gradients itself where the host merges them (MERGED_BACKWARD), so this kernel runs only without that
    setting (a bench_fftconv --sweep row).

    With x = pre * u, s = k * x + D x, y = post * s and h = post * dy:
    d post = dy * s, d x = corr(h, k) + D h, d u = pre * d x, d pre = u * d x. With K the spectrum of k + D delta, s
    and d x are the inverses of X K and H conj(K); packed as in conv_fwd_kernel, X = X_b + i X_(b+1) and H likewise,
    of both rows. As in the forward, HALF_ROWS / HALF_COLS skip the zero padding and the outputs never written.

    Each pair runs two of the forward's transform chains one after the other, holding no spectrum across them. The
    single backward kernel this replaces also accumulated sum_b H conj(X), holding X and the accumulator through H's
    transforms, and spilled (ptxas, sm_90, 8 warps, bf16x3, gated; stores / loads in bytes) 856 / 784 at 32 x 32,
    1,264 / 1,188 at 32 x 64, 3,532 / 4,276 at 64 x 64 and 2,788 / 3,224 in 2D at 64 x 64; this one spills none at any
    size (173 registers at 32 x 32, 209 at 32 x 64, 226 at 64 x 64; 176 and 254 in 2D), at 64 x 64 down from 788 /
    1,108 (92 / 92) as in conv_fwd_kernel (the last 128 / 176, 24 / 24, by the stacked products).
    """
    tiles = tl.cdiv(B, TILE)
    pid = tl.program_id(0).to(tl.int64)
    c = pid // tiles
    b0 = (pid % tiles) * TILE
    R: tl.constexpr = N1 // 2 if HALF_ROWS else N1
    S: tl.constexpr = N2 // 2 if HALF_COLS else N2
    offs, mask = _grid_offsets(ROWS, COLS, STRIDE, LIMIT, R, S)  # (R, S)
    factors = _fused_factors(dft1_ptr, dft2_ptr, tw_ptr, N1, N2, HALF_ROWS, HALF_COLS)
    CLASSES: tl.constexpr = 4 if PARITY else 1
    spec = spec_ptr + c * CLASSES * 2 * N1 * N2
    work = work_ptr + pid * 4 * N1 * N2
    end = tl.minimum(b0 + TILE, B)
    # rows b and b + 1 packed, a step per parity class, no pipelining, as in conv_fwd_kernel
    for step in tl.range(0, tl.cdiv(end - b0, 2) * CLASSES, num_stages=1):
        b = b0 + 2 * (step // CLASSES)
        cls = step % CLASSES
        done = cls == CLASSES - 1  # the gradients are complete (a branch, as in conv_fwd_kernel)
        second = mask & (b + 1 < end)  # an odd last row is paired with zeros
        u_row, pre_row, post_row = _input_rows(u_ptr, pre_ptr, post_ptr, b, c, SUB, SUC, SPB, SPC, SQB, SQC)
        u_next, pre_next, post_next = _input_rows(u_ptr, pre_ptr, post_ptr, b + 1, c, SUB, SUC, SPB, SPC, SQB, SQC)
        grad_y_row = grad_y_ptr + b * SGB + c * SGC
        grad_y_next = grad_y_row + SGB
        if HAS_POST:  # its parity sums in the slot's second half
            xr, xi = _class_input(u_row, pre_row, u_next, pre_next, offs, mask, second, HAS_PRE, cls, N1, N2, PARITY)
            sr, si = _conv_pair(xr, xi, spec + cls * 2 * N1 * N2, *factors, tw_ptr, N1, N2, TWIDDLE, False, PRECISION)
            sr, si = _class_sum(sr, si, work + 2 * N1 * N2, cls, N1, N2, PARITY)
            if done:
                _store_grad_post(sr, grad_y_row, grad_post_ptr + (b * C + c) * LIMIT, offs, mask)
                _store_grad_post(si, grad_y_next, grad_post_ptr + ((b + 1) * C + c) * LIMIT, offs, second)
        pair = (grad_y_row, post_row, grad_y_next, post_next, offs, mask, second, HAS_POST)  # h = post * dy
        hr, hi = _class_input(*pair, cls, N1, N2, PARITY)
        gr, gi = _conv_pair(hr, hi, spec + cls * 2 * N1 * N2, *factors, tw_ptr, N1, N2, TWIDDLE, True, PRECISION)
        gr, gi = _class_sum(gr, gi, work, cls, N1, N2, PARITY)
        if done:
            out = (b * C + c) * LIMIT
            _store_grad_input(gr, u_row, pre_row, grad_u_ptr, grad_pre_ptr, out, offs, mask, HAS_PRE)
            out = ((b + 1) * C + c) * LIMIT
            _store_grad_input(gi, u_next, pre_next, grad_u_ptr, grad_pre_ptr, out, offs, second, HAS_PRE)


@triton.jit
def conv_bwd_filter_kernel(
    grad_y_ptr,  # (B, C, LIMIT), rows contiguous (strides SGB, SGC)
    u_ptr,
    pre_ptr,
    post_ptr,
    dft1_ptr,
    dft2_ptr,
    tw_ptr,
    work_ptr,  # (S, C, 1 + CLASSES + SUMS, 2, N1, N2) fp32 per program: X (scratch), sum_b H conj(X) (out), sums
    grad_d_ptr,  # (S, C) fp32 out: per batch slice
    spec_ptr,  # ROW_GRADIENTS: (C, CLASSES, 2, N1, N2) fp32 filter spectrum / N with D, as in conv_fwd_kernel
    grad_u_ptr,  # ROW_GRADIENTS: (B, C, LIMIT) out
    grad_pre_ptr,  # ROW_GRADIENTS: (B, C, LIMIT) out or dummy
    grad_post_ptr,  # ROW_GRADIENTS: (B, C, LIMIT) out or dummy
    B,
    SLICE,  # batch rows per slice (the last slice may hold fewer)
    ROWS,
    COLS,
    STRIDE,
    LIMIT,
    SUB,  # batch and channel strides (elements) of u, pre, post: rows are read in place
    SUC,
    SPB,
    SPC,
    SQB,
    SQC,
    SGB,  # batch and channel strides of grad_y
    SGC,
    N1: tl.constexpr,
    N2: tl.constexpr,
    TWIDDLE: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
    HALF_ROWS: tl.constexpr,  # the signals' rows and columns, as in conv_fwd_kernel (grad_k fills the whole grid)
    HALF_COLS: tl.constexpr,
    PARITY: tl.constexpr,  # as in conv_fwd_kernel: CLASSES = 4 cross spectra, one per parity class (see _class_sum)
    ROW_GRADIENTS: tl.constexpr,  # also the per-row gradients of conv_bwd_kernel, from the same spectra
):
    """The cross spectrum sum_b H conj(X) (for grad_k) and grad_D of the backward (see conv_bwd_kernel), one program
    per (channel, batch slice), looping over the slice's rows in packed pairs: the slice's partial sums, which the host
    adds over the S slices in a fixed order (deterministic, no atomics) before filter_gradient_kernel inverts the
    cross spectrum.

    d D = sum h x, d k[lag] = sum_b sum_t h[t] x[t - lag] (spectrum sum_b H conj(X)). For the packed pairs (the host
    makes SLICE even where there are several slices, see paired_batch_slices) H conj(X) = H_b conj(X_b) + H_(b+1)
    conj(X_(b+1)) + i (H_(b+1) conj(X_b) - H_b conj(X_(b+1))), and the bracket is the spectrum of a real signal (a
    difference of cross-correlations of real rows): its i times a real sequence is imaginary after the inverse, so the
    real part of the accumulator's inverse, all _ifft_real returns, is exactly the sum of both rows' cross-correlations.

    Registers: nothing is held across a pair but the DFT factors. X goes to the program's own slot of work_ptr while
    H is transformed, and the accumulator lives there too (read, added to and rewritten once per pair: L1 / L2
    traffic of 6 complex fp32 tiles a pair); the barriers order those accesses between threads and keep the compiler
    from overlapping the two transforms. Held in registers, X and the accumulator spilled (ptxas, sm_90, 8 warps,
    bf16x3, gated; stores / loads in bytes) 112 / 100 at 32 x 32 (transposed tiles), and with the final inverse in
    this kernel, 452 / 444 at 32 x 64, 692 / 844 at 64 x 64 (268 / 268 in 2D); now none (167 to 218 registers; 80 / 84
    at 64 x 64 before the twiddles were read per half, see _twiddled_radix2_step).

    PARITY: a step per (pair, parity class) (see _class_sum), X and H twiddled per class, into four accumulators (the
    cross spectrum's classes); grad_D once per pair.

    ROW_GRADIENTS: the per-row gradients too, in place of conv_bwd_kernel: d x from H conj(K) and (HAS_POST) s from
    X K, the spectra this kernel computes anyway, so a pair takes 3 transforms ungated (conv_bwd_kernel and this
    kernel: 4) and 4 gated (6), and the inputs are read once. Each inverse starts after a fence, with X in its slot,
    as the transforms of _conv_pair; with PARITY the classes' sums of d x and s take two more slots. ptxas (sm_90,
    spill stores): none (142 / 209 / 254 registers at 32 x 32 / 32 x 64 / 64 x 64 gated bf16, the last at 8 warps:
    48 bytes at 4; 254 / 173 in 2D at 4 warps, 116 bytes at 8; 255 on 64 x 64 parity classes at 8 warps); s's inverse
    placed after d x's spilled 252 bytes.
    """
    c = tl.program_id(0).to(tl.int64)
    C = tl.num_programs(0)
    b0 = tl.program_id(1).to(tl.int64) * SLICE
    part = tl.program_id(1).to(tl.int64) * C + c  # of the (S, C) partial sums
    R: tl.constexpr = N1 // 2 if HALF_ROWS else N1
    S: tl.constexpr = N2 // 2 if HALF_COLS else N2
    offs, mask = _grid_offsets(ROWS, COLS, STRIDE, LIMIT, R, S)  # (R, S)
    grid, _ = _grid_offsets(N1, N2, N2, N1 * N2, N1, N2)  # (N1, N2): the whole grid
    CLASSES: tl.constexpr = 4 if PARITY else 1
    SUMS: tl.constexpr = 2 if PARITY and ROW_GRADIENTS else 0  # the classes' sums of d x and s (see _class_sum)
    work_x = work_ptr + part * (1 + CLASSES + SUMS) * 2 * N1 * N2
    work_acc = work_x + 2 * N1 * N2  # (CLASSES, 2, N1, N2)
    sum_dx = work_acc + CLASSES * 2 * N1 * N2
    a1r, a1i, z1r, z1i, a2r, a2i, z2r, z2i = _fused_factors(dft1_ptr, dft2_ptr, tw_ptr, N1, N2, HALF_ROWS, HALF_COLS)
    spec_c = spec_ptr + c * CLASSES * 2 * N1 * N2
    zeros = tl.zeros(grid.shape, dtype=tl.float32)
    for j in tl.range(0, CLASSES):
        _store_row(work_acc + j * 2 * N1 * N2, grid, zeros, zeros, N1 * N2)
    acc_d = 0.0  # sum_b sum_t h x over the slice
    end = tl.minimum(b0 + SLICE, B)
    # rows b and b + 1 packed, a step per parity class, no pipelining, as in conv_fwd_kernel
    for step in tl.range(0, tl.cdiv(end - b0, 2) * CLASSES, num_stages=1):
        b = b0 + 2 * (step // CLASSES)
        cls = step % CLASSES
        done = cls == CLASSES - 1  # the per-row gradients are complete (a branch, as in conv_fwd_kernel)
        spec = spec_c + cls * 2 * N1 * N2
        second = mask & (b + 1 < end)  # an odd last row is paired with zeros
        u_row, pre_row, post_row = _input_rows(u_ptr, pre_ptr, post_ptr, b, c, SUB, SUC, SPB, SPC, SQB, SQC)
        u_next, pre_next, post_next = _input_rows(u_ptr, pre_ptr, post_ptr, b + 1, c, SUB, SUC, SPB, SPC, SQB, SQC)
        grad_y_row = grad_y_ptr + b * SGB + c * SGC
        grad_y_next = grad_y_row + SGB
        xr, xi = _class_input(u_row, pre_row, u_next, pre_next, offs, mask, second, HAS_PRE, cls, N1, N2, PARITY)
        xr, xi = _spectrum_of_pair(xr, xi, a1r, a1i, a2r, a2i, tw_ptr, N1, N2, TWIDDLE, PRECISION, False)
        _store_row(work_x, grid, xr, xi, N1 * N2)  # not held through H's transforms (registers)
        tl.debug_barrier()  # a fence: nothing of X's transform is deferred into H's (and all threads see X)
        if ROW_GRADIENTS and HAS_POST:  # s = k * x + D x (spectrum X K), grad_post = dy * s
            sr, si = _cmul(xr, xi, *_load_complex(spec, N1, N2))
            sr, si = _inverse_of_pair(sr, si, z1r, z1i, z2r, z2i, tw_ptr, N1, N2, TWIDDLE, PRECISION, False)
            sr, si = _class_sum(sr, si, sum_dx + 2 * N1 * N2, cls, N1, N2, PARITY)
            if done:
                _store_grad_post(sr, grad_y_row, grad_post_ptr + (b * C + c) * LIMIT, offs, mask)
                _store_grad_post(si, grad_y_next, grad_post_ptr + ((b + 1) * C + c) * LIMIT, offs, second)
            tl.debug_barrier()  # a fence: s's inverse is done before H's transform starts
        if cls == 0:  # h read here and again below (L1): held through to the twiddle, 64 x 64 parity spilled 4-8 B
            hr = _load_gated(grad_y_row, post_row, offs, mask, HAS_POST)  # post * dy
            hi = _load_gated(grad_y_next, post_next, offs, second, HAS_POST)
            acc_d += tl.sum(tl.sum(hr * _load_gated(u_row, pre_row, offs, mask, HAS_PRE), axis=1), axis=0)
            acc_d += tl.sum(tl.sum(hi * _load_gated(u_next, pre_next, offs, second, HAS_PRE), axis=1), axis=0)
        pair = (grad_y_row, post_row, grad_y_next, post_next, offs, mask, second, HAS_POST)  # h = post * dy
        hr, hi = _class_input(*pair, cls, N1, N2, PARITY)
        hr, hi = _spectrum_of_pair(hr, hi, a1r, a1i, a2r, a2i, tw_ptr, N1, N2, TWIDDLE, PRECISION, False)
        pr, pi = _cmul_conj(hr, hi, *_load_row(work_x, grid, N1 * N2))
        acc = work_acc + cls * 2 * N1 * N2
        ar, ai = _load_row(acc, grid, N1 * N2)
        _store_row(acc, grid, ar + pr, ai + pi, N1 * N2)
        if ROW_GRADIENTS:  # d x = corr(h, k) + D h (spectrum H conj(K)), grad_u = pre * d x, grad_pre = u * d x
            gr, gi = _cmul_conj(hr, hi, *_load_complex(spec, N1, N2))
            tl.debug_barrier()  # a fence: the inverse does not overlap H's transform (as in _conv_pair)
            gr, gi = _inverse_of_pair(gr, gi, z1r, z1i, z2r, z2i, tw_ptr, N1, N2, TWIDDLE, PRECISION, False)
            gr, gi = _class_sum(gr, gi, sum_dx, cls, N1, N2, PARITY)
            if done:
                rows = (u_row, pre_row, grad_u_ptr, grad_pre_ptr, (b * C + c) * LIMIT)
                _store_grad_input(gr, *rows, offs, mask, HAS_PRE)
                rows = (u_next, pre_next, grad_u_ptr, grad_pre_ptr, ((b + 1) * C + c) * LIMIT)
                _store_grad_input(gi, *rows, offs, second, HAS_PRE)
        tl.debug_barrier()  # the accumulator's update is complete before the next pair reads it or X is rewritten
    tl.store(grad_d_ptr + part, acc_d)


@triton.jit
def filter_gradient_kernel(
    cross_ptr,  # (C, 2, N1, N2) fp32: sum_b H conj(X) (conv_bwd_filter_kernel's slices added)
    dft1_ptr,
    dft2_ptr,
    tw_ptr,
    grad_k_ptr,  # (C, N1, N2) fp32 out: circular cross-correlation, lag 0 at [0, 0]
    scale,
    N1: tl.constexpr,
    N2: tl.constexpr,
    TWIDDLE: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
):
    """One program per channel: grad_k = scale (1 / N) * Re(inverse of the cross spectrum). Its own kernel: as the
    last step of conv_bwd_filter_kernel this inverse spilled there (ptxas, sm_90, 8 warps, bf16x3, gated; stores /
    loads) 452 / 444 bytes at 32 x 64 and 692 / 844 at 64 x 64 (268 / 268 in 2D), against none / 72 / none without
    it; and the slices' spectra are added first, so it runs once per channel. Here the twiddles and F1 are loaded
    after the first stage: loaded up front (as _ifft_real's callers do) they spilled 312 / 312 at 32 x 64 and 292 / 316
    at 64 x 64; after it, none on square grids. While the 64-point side of 32 x 64 took a dense factor, that grid
    spilled 88 / 88 in natural order (4 warps: 316 / 316; 16 warps: 1,112 / 1,116) and ran on the transposed tile;
    with its radix-2 step it spills none either way and takes natural order (243 registers, 255 transposed)."""
    c = tl.program_id(0).to(tl.int64)
    M1: tl.constexpr = N1 // 2 if N1 >= RADIX2_SIDE * (1 if N1 == N2 else 2) else N1  # as in _load_four_step
    M2: tl.constexpr = N2 // 2 if N2 >= RADIX2_SIDE * (1 if N2 == N1 else 2) else N2
    offs = tl.arange(0, N1)[:, None] * N2 + tl.arange(0, N2)[None, :]  # (N1, N2)
    zr, zi = _load_row(cross_ptr + c * 2 * N1 * N2, offs, N1 * N2)
    cr, ci = _dft(zr, zi, *_load_complex(dft2_ptr, M2, M2), False, True, False, PRECISION)  # indexed [k1, n2]
    tl.debug_barrier()  # a fence: the twiddles and F1 are loaded after the first stage, not held through it
    if TWIDDLE:
        cr, ci = _cmul_conj(cr, ci, *_load_row(tw_ptr, offs, N1 * N2))
    grad_k = _dft(cr, ci, *_load_complex(dft1_ptr, M1, M1), True, True, True, PRECISION)[0]  # indexed [n1, n2]
    tl.store(grad_k_ptr + c * N1 * N2 + offs, grad_k * scale)


# Multi-pass scheme for grids too large for one program: N = P * Q, sample n = Q * p + q, frequency f = fp + P * fq.
#   X[fp + P fq] = sum_q W_Q^(q fq) * W_N^(q fp) * sum_p W_P^(p fp) x[Q p + q]
# Pass 1 (one program per (packed pair, q), columns fastest: _pair_and_column): length-P FFT of column q, times the
# twiddle W_N^(q fp), into a complex scratch. Pass 2 (one program per (packed pair, column-spectrum row s)): length-Q
# FFT of a scratch row, multiply by the filter spectrum, inverse length-Q FFT, in place. Pass 3 (per (packed pair, q),
# as pass 1): conjugate twiddle, inverse length-P FFT, post-gate. Each length-P / length-Q FFT is the
# in-register four-step above on a (P1, P2) / (Q1, Q2) grid; scratch rows are indexed by the P-FFT's output tile
# position s = a * P2 + b (frequency fp = k1 + P1 * k2 for the frequencies k1, k2 at positions a, b: see _frequency,
# _outer_twiddle), scratch columns by q.
# Rows are transformed in packed pairs as in the fused-register kernels: batch rows b, b + 1 of a channel as the real
# and imaginary parts of one complex signal (an odd last row with zeros), so a pair needs one complex scratch row
# (half the scratch traffic of a real row each) and one row pass. The signals are (NB, CC, LIMIT) views with
# contiguous rows (batch and channel strides SB, SC; the output's SYB, SYC); packed pair j holds batch rows
# 2 (j // CC), 2 (j // CC) + 1 of channel j % CC. Where the signal fills only the first half of each column (samples
# n < N / 2, the causal zero padding: HALF_P), pass 1 reads only those P / 2 rows and pass 3 computes only them.


@triton.jit
def _load_spectrum(src, PLANE, f1r, f1i, f2r, f2i, tw_ptr, Q1: tl.constexpr, Q2: tl.constexpr, PRECISION: tl.constexpr):
    """_fft_complex of the complex (Q1, Q2) tile at src (natural order, planes PLANE apart), run on the transposed
    tile so that its first DFT acts along the second axis; twiddles (Q1, Q2) read from tw_ptr here, not held.

    Why (ptxas, sm_90, 8 warps, 32 x 32 rows): these chains of products share one mma layout with every warp along
    the rows (TTGIR: warpsPerCTA [8, 1]), so each warp holds whole the 16-row halves of a radix-2 step along the first
    axis. As a transform's first stage, that step spilled: 188 bytes in row_fft_kernel's forward, 172 in its inverse
    run on the transposed tile, none in the plain inverse (233 registers); the forward here needs 128 registers and
    no spills. Its first stage keeps four products per DFT (STACK off, see _dft_direct): stacked, it spilled 8 bytes
    in conv_bwd_l2_kernel and 16 in the 16 x 32 row FFT.
    """
    grid = tl.trans(tl.arange(0, Q1)[:, None] * Q2 + tl.arange(0, Q2)[None, :])  # (Q2, Q1), indexed [n2, n1]
    zr, zi = _load_row(src, grid, PLANE)
    zr, zi = _dft(zr, zi, f1r, f1i, False, False, False, PRECISION, False)  # indexed [n2, k1], not stacked
    zr, zi = _cmul(zr, zi, *_load_row(tw_ptr, grid, Q1 * Q2))
    zr, zi = _dft(zr, zi, f2r, f2i, False, False, True, PRECISION)  # indexed [k2, k1]
    return tl.trans(zr), tl.trans(zi)  # indexed [k1, k2]


@triton.jit
def _ifft_reading_twiddles(
    zr, zi, f1r, f1i, f2r, f2i, tw_ptr, Q1: tl.constexpr, Q2: tl.constexpr, PRECISION: tl.constexpr
):
    """_ifft_complex with the (Q1, Q2) twiddles read from tw_ptr where used (L1 / L2) rather than held across the
    transforms before it (measured in row_fft_kernel and conv_bwd_l2_kernel)."""
    twr, twi = _load_row(tw_ptr, tl.arange(0, Q1)[:, None] * Q2 + tl.arange(0, Q2)[None, :], Q1 * Q2)
    return _ifft_complex(zr, zi, f1r, f1i, f2r, f2i, twr, twi, True, PRECISION)


@triton.jit
def _unit_root(exponent, N):
    """(cos, sin) of -2 pi exponent / N, the integer exponent reduced to (-N/2, N/2] first for accurate angles."""
    reduced = exponent % N
    reduced = tl.where(reduced > N // 2, reduced - N, reduced)
    angle = reduced.to(tl.float32) * (-6.283185307179586 / N)
    return tl.cos(angle), tl.sin(angle)


@triton.jit
def _outer_twiddle(q, P1: tl.constexpr, P2: tl.constexpr, N):
    """(cos, sin) of -2 pi q fp / N on the P-FFT's output tile, where tile [a, b] holds fp = k1 + P1 * k2 for the
    frequencies k1, k2 of positions a, b (see _frequency)."""
    M1: tl.constexpr = P1 // 2 if P1 >= RADIX2_SIDE * (1 if P1 == P2 else 2) else P1
    M2: tl.constexpr = P2 // 2 if P2 >= RADIX2_SIDE * (1 if P2 == P1 else 2) else P2
    k1 = _frequency(tl.arange(0, P1), P1, M1)[:, None]
    k2 = _frequency(tl.arange(0, P2), P2, M2)[None, :]
    return _unit_root(q * (k1 + P1 * k2), N)  # (P1, P2); int32: q fp < N


@triton.jit
def _pair_rows(j, NB, CC, SB, SC):
    """Packed pair j of an (NB, CC, ...) view: its first row's offset (batch 2 (j // CC), channel j % CC, for strides
    SB, SC), its channel, and whether its second row exists."""
    b = 2 * (j // CC)
    c = j % CC
    return b * SB + c * SC, c, b + 1 < NB


@triton.jit
def _pair_and_column(Q):
    """(packed pair j, column q) of a four-step column program, on a 1D grid of pairs * Q programs with columns
    fastest. A column's samples lie Q apart, one to a 32-byte sector: programs that run together then read adjacent
    columns of the same rows and share each sector through L2. With pairs fastest (the former (pairs, Q) grid) a
    sector's next sample was wanted only after every pair's program for that column had run, through a chunk's worth
    of other sectors (16 MB at N = 128K). q is int32 (N < 2^31): int64 offset tiles take twice the registers."""
    program = tl.program_id(0)
    return (program // Q).to(tl.int64), program % Q


@triton.jit
def column_fft_kernel(
    u_ptr,  # (NB, CC, LIMIT) real signal view, rows contiguous
    pre_ptr,  # the same layout, or dummy
    scratch_ptr,  # (ceil(NB / 2) * CC, 2, P, Q) fp32 out
    dftp1_ptr,
    dftp2_ptr,
    twp_ptr,
    NB,
    CC,
    LIMIT,
    SB,
    SC,
    Q,
    P1: tl.constexpr,
    P2: tl.constexpr,
    HAS_PRE: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
    HALF_P: tl.constexpr,  # samples occupy only p < P / 2: grid rows < P1 / 2 (see _fused_factors)
    LONE: tl.constexpr,  # NB == 1 (the filter, grad_k, a batch of one): every row alone, real transforms
):
    """Pass 1: scratch[j, :, s, q] = W_N^(q fp) * FFT_P(x_b + i x_(b+1))[fp] for column q of the (P, Q) view, x = pre
    * u of the packed pair j's rows."""
    j, q = _pair_and_column(Q)
    n_points = P1 * P2 * Q
    start, _, second = _pair_rows(j, NB, CC, SB, SC)
    R: tl.constexpr = P1 // 2 if HALF_P else P1
    offs = (tl.arange(0, R)[:, None] * P2 + tl.arange(0, P2)[None, :]) * Q + q  # (R, P2): samples Q p + q
    mask = offs < LIMIT
    xr = _load_gated(u_ptr + start, pre_ptr + start, offs, mask, HAS_PRE)
    xi = _load_gated(u_ptr + start + SB, pre_ptr + start + SB, offs, mask & second, HAS_PRE)
    a1r, a1i, _, _, a2r, a2i, _, _ = _fused_factors(dftp1_ptr, dftp2_ptr, twp_ptr, P1, P2, HALF_P, False)
    xr, xi = _spectrum_of_pair(xr, xi, a1r, a1i, a2r, a2i, twp_ptr, P1, P2, True, PRECISION, LONE)  # (P1, P2)
    xr, xi = _cmul(xr, xi, *_outer_twiddle(q, P1, P2, n_points))
    grid = tl.arange(0, P1)[:, None] * P2 + tl.arange(0, P2)[None, :]  # (P1, P2): s
    _store_row(scratch_ptr + j * 2 * n_points, grid * Q + q, xr, xi, n_points)


@triton.jit
def row_fft_kernel(
    scratch_ptr,  # (rows, 2, P, Q) fp32, updated in place
    spec_ptr,  # (C, 2, P, Q) fp32 filter spectrum / N, or dummy
    dftq1_ptr,
    dftq2_ptr,
    twq_ptr,
    C,
    P,
    scale,
    Q1: tl.constexpr,
    Q2: tl.constexpr,
    FORWARD: tl.constexpr,
    MULTIPLY: tl.constexpr,
    CONJ: tl.constexpr,
    INVERSE: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
):
    """Pass 2 on scratch row s of packed pair j (channel j % C): [forward length-Q FFT] [times spectrum (conjugated)]
    [inverse FFT], times scale.

    The forward runs on the transposed tile (_load_spectrum) and the inverse reads its twiddles where used: on 32 x 32
    rows (8 warps) ptxas (sm_90) spilled 188 bytes (forward only) and 40 (forward, multiply, inverse) with
    _fft_complex and the twiddles held; 0 and 4 with the transposed forward alone; none now (128 and 255 registers).
    """
    j = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1).to(tl.int64)
    n_points = P * Q1 * Q2
    offs = tl.arange(0, Q1)[:, None] * Q2 + tl.arange(0, Q2)[None, :]  # (Q1, Q2)
    base = scratch_ptr + j * 2 * n_points + s * Q1 * Q2
    f1r, f1i, f2r, f2i, _, _ = _load_four_step(dftq1_ptr, dftq2_ptr, twq_ptr, Q1, Q2)
    if FORWARD:
        zr, zi = _load_spectrum(base, n_points, f1r, f1i, f2r, f2i, twq_ptr, Q1, Q2, PRECISION)
    else:
        zr, zi = _load_row(base, offs, n_points)
    if MULTIPLY:
        spec = spec_ptr + (j % C) * 2 * n_points + s * Q1 * Q2
        kr, ki = _load_row(spec, offs, n_points)
        if CONJ:
            zr, zi = _cmul_conj(zr, zi, kr, ki)
        else:
            zr, zi = _cmul(zr, zi, kr, ki)
    if INVERSE:
        zr, zi = _ifft_reading_twiddles(zr, zi, f1r, f1i, f2r, f2i, twq_ptr, Q1, Q2, PRECISION)
    _store_row(base, offs, zr * scale, zi * scale, n_points)


@triton.jit
def _store_pair(yr, yi, post_ptr, y_ptr, start, out, second, SB, SYB, offs, mask, HAS_POST: tl.constexpr):
    """Pass 3's epilogue for a packed pair: _store_output of its first row's output yr (post-gate row at start, output
    row at out) and of its second row's yi (one batch stride further), the second where it exists."""
    _store_output(yr, post_ptr + start, y_ptr + out, offs, mask, HAS_POST)
    _store_output(yi, post_ptr + start + SB, y_ptr + out + SYB, offs, mask & second, HAS_POST)


@triton.jit
def column_ifft_kernel(
    scratch_ptr,  # (ceil(NB / 2) * CC, 2, P, Q) fp32
    post_ptr,  # (NB, CC, LIMIT) view (strides SB, SC) or dummy
    y_ptr,  # (NB, CC, LIMIT) view out (strides SYB, SYC)
    dftp1_ptr,
    dftp2_ptr,
    twp_ptr,
    NB,
    CC,
    LIMIT,
    SB,
    SC,
    SYB,
    SYC,
    Q,
    scale,
    P1: tl.constexpr,
    P2: tl.constexpr,
    HAS_POST: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
    HALF_P: tl.constexpr,  # only outputs p < P / 2 are written: grid rows < P1 / 2
    LONE: tl.constexpr,  # as in column_fft_kernel: the real part only
):
    """Pass 3: y[b + r, c, Q p + q] = post * scale * IFFT_P(conj twiddle * scratch[j, :, :, q])[p], the real part for
    the pair's first row (r = 0), the imaginary part for its second (r = 1)."""
    j, q = _pair_and_column(Q)
    n_points = P1 * P2 * Q
    start, _, second = _pair_rows(j, NB, CC, SB, SC)
    out = _pair_rows(j, NB, CC, SYB, SYC)[0]
    grid = tl.arange(0, P1)[:, None] * P2 + tl.arange(0, P2)[None, :]  # (P1, P2): s
    zr, zi = _load_row(scratch_ptr + j * 2 * n_points, grid * Q + q, n_points)
    zr, zi = _cmul_conj(zr, zi, *_outer_twiddle(q, P1, P2, n_points))
    _, _, z1r, z1i, _, _, z2r, z2i = _fused_factors(dftp1_ptr, dftp2_ptr, twp_ptr, P1, P2, HALF_P, False)
    yr, yi = _inverse_of_pair(zr, zi, z1r, z1i, z2r, z2i, twp_ptr, P1, P2, True, PRECISION, LONE)  # (R, P2): p
    R: tl.constexpr = P1 // 2 if HALF_P else P1
    offs = (tl.arange(0, R)[:, None] * P2 + tl.arange(0, P2)[None, :]) * Q + q
    rows = (post_ptr, y_ptr, start, out, second, SB, SYB)
    _store_pair(yr * scale, yi * scale, *rows, offs, offs < LIMIT, HAS_POST)


# Short columns (P <= 64): pass 1 and pass 3 as one DFT-matrix product on a (PP, BQ) tile of BQ adjacent columns
# (coalesced loads), PP = P padded up to tl.dot's minimum with zero rows / columns. Scratch rows are then fp itself.
# With HALF_P (P = PP), pass 1 takes the block F_P[:, :P / 2] of the rows the signal fills.


@triton.jit
def _column_block(Q, LIMIT, P, R: tl.constexpr, BQ: tl.constexpr):
    """Indices of the (R, BQ) tile of rows p < R of columns q0 .. q0 + BQ - 1 of the (P, Q) view: p, q, offsets,
    masks (rows p < P; samples too)."""
    p = tl.arange(0, R)[:, None]
    q = tl.program_id(1) * BQ + tl.arange(0, BQ)[None, :]  # int32 (N < 2^31), as in _pair_and_column
    offs = p * Q + q  # (R, BQ)
    return p, q, offs, p < P, (p < P) & (offs < LIMIT)


@triton.jit
def _direct_twiddle(p, q, N):
    return _unit_root(q * p, N)  # (PP, BQ)


@triton.jit
def column_dft_kernel(
    u_ptr,  # (NB, CC, LIMIT) real signal view, rows contiguous
    pre_ptr,  # the same layout, or dummy
    scratch_ptr,  # (ceil(NB / 2) * CC, 2, P, Q) fp32 out
    dftp_ptr,  # (2, PP, PP) fp32, DFT of size P padded with zeros
    NB,
    CC,
    LIMIT,
    SB,
    SC,
    P,
    Q,
    PP: tl.constexpr,
    BQ: tl.constexpr,
    HAS_PRE: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
    HALF_P: tl.constexpr,
):
    """Pass 1 for short columns: scratch[j, :, fp, q] = W_N^(q fp) * sum_p F_P[fp, p] * z[Q p + q] for the packed pair
    z = x_b + i x_(b+1), x = pre * u."""
    j = tl.program_id(0).to(tl.int64)
    n_points = P * Q
    start, _, second = _pair_rows(j, NB, CC, SB, SC)
    R: tl.constexpr = PP // 2 if HALF_P else PP
    _, _, offs, _, mask = _column_block(Q, LIMIT, P, R, BQ)  # (R, BQ)
    xr = _load_gated(u_ptr + start, pre_ptr + start, offs, mask, HAS_PRE)
    xi = _load_gated(u_ptr + start + SB, pre_ptr + start + SB, offs, mask & second, HAS_PRE)
    fr, fi = _load_block(dftp_ptr, PP, R, PP)
    xr, xi = _dft_direct(xr, xi, fr, fi, False, False, True, PRECISION)  # (PP, BQ), indexed [fp, q]
    p, q, offs, rows_ok, _ = _column_block(Q, LIMIT, P, PP, BQ)
    xr, xi = _cmul(xr, xi, *_direct_twiddle(p, q, n_points))
    tl.store(scratch_ptr + j * 2 * n_points + offs, xr, mask=rows_ok)
    tl.store(scratch_ptr + j * 2 * n_points + n_points + offs, xi, mask=rows_ok)


@triton.jit
def column_idft_kernel(
    scratch_ptr,  # (ceil(NB / 2) * CC, 2, P, Q) fp32
    post_ptr,  # (NB, CC, LIMIT) view (strides SB, SC) or dummy
    y_ptr,  # (NB, CC, LIMIT) view out (strides SYB, SYC)
    dftp_ptr,  # (2, PP, PP) fp32
    NB,
    CC,
    LIMIT,
    SB,
    SC,
    SYB,
    SYC,
    P,
    Q,
    scale,
    PP: tl.constexpr,
    BQ: tl.constexpr,
    HAS_POST: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
):
    """Pass 3 for short columns: the pair's rows from scale * conj(F_P) @ (conj twiddle * scratch) (real part: first
    row, imaginary part: second), times post. All P rows are computed (no HALF_P: the (P / 2, P)
    block as tl.dot's first operand spilled 840-916 bytes, ptxas sm_90, P = 64, 4 warps; the whole product none)."""
    j = tl.program_id(0).to(tl.int64)
    n_points = P * Q
    start, _, second = _pair_rows(j, NB, CC, SB, SC)
    out = _pair_rows(j, NB, CC, SYB, SYC)[0]
    p, q, offs, rows_ok, mask = _column_block(Q, LIMIT, P, PP, BQ)
    zr = tl.load(scratch_ptr + j * 2 * n_points + offs, mask=rows_ok, other=0.0)  # (PP, BQ), indexed [fp, q]
    zi = tl.load(scratch_ptr + j * 2 * n_points + n_points + offs, mask=rows_ok, other=0.0)
    zr, zi = _cmul_conj(zr, zi, *_direct_twiddle(p, q, n_points))
    fr, fi = _load_complex(dftp_ptr, PP, PP)
    yr, yi = _dft_direct(zr, zi, fr, fi, False, True, True, PRECISION)  # (PP, BQ), indexed [p, q]
    rows = (post_ptr, y_ptr, start, out, second, SB, SYB)
    _store_pair(yr * scale, yi * scale, *rows, offs, mask, HAS_POST)


# Fused-L2 variant (1D grids above MAX_FFT_POINTS, up to MAX_FUSED_L2_POINTS): the multi-pass (P, Q) view with short
# columns (P = 16 or 32, so a column DFT is one (P, P) @ (P, BQ) tl.dot), all three passes in one program per (b, c)
# row. The program writes its row's column DFTs to its own fp32 scratch, transforms, multiplies and inverts each
# scratch row in registers in place, then reads the columns back for the inverse column DFTs and the post-gate.
# Every signal is real, so only the column-spectrum rows fp <= P / 2 are kept (scratch (2, P / 2 + 1, Q)) and
# row-transformed: the spectrum of a real signal is Hermitian, X[N - f] = conj(X[f]), and after the row inverse and
# the conjugate twiddle the missing rows are mirror images, Z[P - fp, q] = conj(Z[fp, q]) (see _column_idft). Where
# the signal fills only the first half of each column (HALF_P, see _half_blocks), the column DFTs read and the
# column inverses compute only those P / 2 rows.
# The scratch is written and re-read by the same program right away and reused for its next row, so most of its
# traffic stays in L2; u, the gates and y cross HBM once each, as in the fused-register kernels. Programs are persistent
# (grid: FUSED_L2_PROGRAMS_PER_SM per SM, see _programs; each loops over its rows, or in the backward over its
# (channel, batch slice) work items).
# Ordering. A pass's scratch stores are read by other threads of the program in the next pass, so each pass ends with
# tl.debug_barrier (bar.sync: the block's global stores before it are visible to the block after it). Each stage
# writes its own scratch region (column DFTs -> region A; row pass reads A, writes B; the last pass reads B), so no
# pass overwrites data another thread may still read: every write-after-read on a region is separated by at least one
# barrier (the next row's pass 1 rewrites A after the barrier that ended the row pass, the next row's pass 2 rewrites B
# after the barrier that ended pass 1) and nothing depends on the barrier holding back loads from after it. The only
# in-place updates are read-modify-writes of one tile by the same tile operation (the backward's accumulator, and its
# pass 2a's X over the row of A it transforms), where a thread stores an element either after loading it itself or
# after receiving it (for X, values computed from every loaded element) through a layout conversion, which
# synchronises. Triton's pipeliner only prefetches within the innermost loops (over column tiles or scratch rows), each
# of which starts after its barrier, so no load moves above one.


@triton.jit
def _column_tile(q0, Q: tl.constexpr, R: tl.constexpr, BQ: tl.constexpr):
    """q (1, BQ) and the offsets p * Q + q (R, BQ) of rows p < R of columns q0 .. q0 + BQ - 1 of the (P, Q) view."""
    q = q0 + tl.arange(0, BQ)[None, :]
    return q, tl.arange(0, R)[:, None] * Q + q


@triton.jit
def _store_column_dft(x, fr, fi, q, dst, Q: tl.constexpr, N: tl.constexpr, HALF: tl.constexpr, PRECISION: tl.constexpr):
    """dst[:, fp, q] = W_N^(q fp) * (F_P @ x)[fp, q] for the real (R, BQ) tile x of rows p < R of columns q (rows
    from R on are zero padding, fr + i fi = F_P[:, :R]) and fp <= P / 2; dst is a (2, P / 2 + 1, Q) fp32 scratch with
    planes HALF apart."""
    p = tl.arange(0, fr.shape[0])[:, None]  # (P, 1): the column spectrum's rows fp
    wr, wi = _unit_root(q * p, N)
    xr, xi = _cmul(_dot(fr, x, PRECISION), _dot(fi, x, PRECISION), wr, wi)  # (P, BQ)
    offs = p * Q + q
    kept = p <= fr.shape[0] // 2  # (P, 1)
    tl.store(dst + offs, xr, mask=kept)
    tl.store(dst + HALF + offs, xi, mask=kept)


@triton.jit
def _column_idft(src, fr, fi, q, Q: tl.constexpr, N: tl.constexpr, HALF: tl.constexpr, PRECISION: tl.constexpr):
    """Real (R, BQ) tile [p, q], p < R, of conj(F_P) @ Z, Z[fp, q] = conj(W_N^(q fp)) * src[:, fp, q]: the
    unnormalised column inverse, for fr + i fi = F_P[:R, :]. src holds rows fp <= P / 2 (planes HALF apart); row
    P - fp is conj(Z[fp, q]) (Hermitian symmetry)."""
    p = tl.arange(0, fr.shape[1])[:, None]  # (P, 1): frequencies fp
    mirrored = p > fr.shape[1] // 2
    source = tl.where(mirrored, fr.shape[1] - p, p)
    offs = source * Q + q  # (P, BQ)
    wr, wi = _unit_root(q * source, N)
    zr, zi = _cmul_conj(tl.load(src + offs), tl.load(src + HALF + offs), wr, wi)
    return _dot(fr, zr, PRECISION) + _dot(fi, tl.where(mirrored, -zi, zi), PRECISION)


@triton.jit
def _row_offsets(fp, Q1: tl.constexpr, Q2: tl.constexpr):
    """Offsets of scratch row fp as a (Q1, Q2) tile (the row FFT's grid)."""
    return fp * Q1 * Q2 + tl.arange(0, Q1)[:, None] * Q2 + tl.arange(0, Q2)[None, :]


@triton.jit
def conv_fwd_l2_kernel(
    u_ptr,  # (B, C, LIMIT) any float dtype, rows contiguous (strides SUB, SUC)
    pre_ptr,  # (B, C, LIMIT) or dummy
    post_ptr,  # (B, C, LIMIT) or dummy
    spec_ptr,  # (C, 2, P, Q) fp32 filter spectrum / N (with the skip term D), multi-pass layout
    dftp_ptr,  # (2, P, P) fp32
    dftq1_ptr,  # (2, Q1, Q1) fp32
    dftq2_ptr,  # (2, Q2, Q2) fp32
    twq_ptr,  # (2, Q1, Q2) fp32
    scratch_ptr,  # (programs, 2, 2, P / 2 + 1, Q) fp32 work space: column DFTs (A), row-pass output (B)
    y_ptr,  # (B, C, LIMIT) out
    B,
    C,
    LIMIT,
    SUB,  # batch and channel strides (elements) of u, pre, post: rows are read in place
    SUC,
    SPB,
    SPC,
    SQB,
    SQC,
    P: tl.constexpr,
    Q1: tl.constexpr,
    Q2: tl.constexpr,
    BQ: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
    HALF_P: tl.constexpr,  # the signal and y occupy rows p < P / 2 of the (P, Q) view (see _half_blocks)
):
    """Persistent programs, each looping over (b, c) rows channel-major: y = post * (k * x + D x), x = pre * u (D x
    from the spectrum)."""
    Q: tl.constexpr = Q1 * Q2
    N: tl.constexpr = P * Q
    HALF: tl.constexpr = (P // 2 + 1) * Q  # scratch plane: column-spectrum rows fp <= P / 2
    work_cols = scratch_ptr + tl.program_id(0).to(tl.int64) * 4 * HALF  # region A
    work_rows = work_cols + 2 * HALF  # region B
    R: tl.constexpr = P // 2 if HALF_P else P  # rows of the (P, Q) view the signal and y occupy
    fr, fi, lr, li = _half_blocks(dftp_ptr, *_load_complex(dftp_ptr, P, P), HALF_P)  # column DFT, inverse
    g1r, g1i, g2r, g2i, twr, twi = _load_four_step(dftq1_ptr, dftq2_ptr, twq_ptr, Q1, Q2)
    for i in range(tl.program_id(0).to(tl.int64), B * C, tl.num_programs(0)):  # int64 row indices
        c = i // B
        b = i % B
        row = b * C + c  # of the (contiguous) output
        u_row, pre_row, post_row = _input_rows(u_ptr, pre_ptr, post_ptr, b, c, SUB, SUC, SPB, SPC, SQB, SQC)
        for q0 in range(0, Q, BQ):  # pass 1: column DFTs of x into the scratch
            q, offs = _column_tile(q0, Q, R, BQ)
            x = _load_gated(u_row, pre_row, offs, offs < LIMIT, HAS_PRE)  # (R, BQ)
            _store_column_dft(x, fr, fi, q, work_cols, Q, N, HALF, PRECISION)
        tl.debug_barrier()
        for fp in range(P // 2 + 1):  # pass 2: row FFT, times the filter spectrum, inverse row FFT
            offs = _row_offsets(fp, Q1, Q2)  # (Q1, Q2)
            zr, zi = _load_row(work_cols, offs, HALF)
            zr, zi = _fft_complex(zr, zi, g1r, g1i, g2r, g2i, twr, twi, True, PRECISION)
            kr, ki = _load_row(spec_ptr + c * 2 * N, offs, N)
            zr, zi = _cmul(zr, zi, kr, ki)
            zr, zi = _ifft_complex(zr, zi, g1r, g1i, g2r, g2i, twr, twi, True, PRECISION)
            _store_row(work_rows, offs, zr, zi, HALF)
        tl.debug_barrier()
        for q0 in range(0, Q, BQ):  # pass 3: inverse column DFTs, post-gate
            q, offs = _column_tile(q0, Q, R, BQ)
            y = _column_idft(work_rows, lr, li, q, Q, N, HALF, PRECISION)  # (R, BQ)
            _store_output(y, post_row, y_ptr + row * LIMIT, offs, offs < LIMIT, HAS_POST)


@triton.jit
def conv_bwd_l2_kernel(
    grad_y_ptr,  # (B, C, LIMIT), rows contiguous (strides SGB, SGC)
    u_ptr,
    pre_ptr,
    post_ptr,
    spec_ptr,  # (C, 2, P, Q) fp32 filter spectrum / N (with the skip term D), multi-pass layout
    dftp_ptr,
    dftq1_ptr,
    dftq2_ptr,
    twq_ptr,
    scratch_ptr,  # (programs, 5, 2, P / 2 + 1, Q) fp32: x, h columns (A); their row-pass outputs (B); sum_b H conj(X)
    grad_u_ptr,  # (B, C, LIMIT) out
    grad_pre_ptr,  # (B, C, LIMIT) out or dummy
    grad_post_ptr,  # (B, C, LIMIT) out or dummy
    grad_k_ptr,  # (S, C, P * Q) fp32 out: per batch slice, circular cross-correlation, natural order
    grad_d_ptr,  # (S, C) fp32 out: per batch slice
    B,
    C,
    SLICES,  # S: batch slices per channel
    SLICE,  # batch rows per slice (the last slice may hold fewer)
    LIMIT,
    SUB,  # batch and channel strides (elements) of u, pre, post: rows are read in place
    SUC,
    SPB,
    SPC,
    SQB,
    SQC,
    SGB,  # batch and channel strides of grad_y
    SGC,
    P: tl.constexpr,
    Q1: tl.constexpr,
    Q2: tl.constexpr,
    BQ: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    PRECISION: tl.constexpr,  # of the DFT products (see _dot)
    HALF_P: tl.constexpr,  # the signals and gradients occupy rows p < P / 2 (grad_k fills the whole view)
):
    """Persistent programs, each looping over (channel, batch slice) work items and, per item, over the slice's
    rows: conv_bwd_kernel's gradients, grad_k and grad_D as per-slice partial sums (added on the host).

    Per row, pass 1 writes the column DFTs of x = pre * u and h = post * dy (region A); pass 2a turns each scratch
    row of x into X, in place, and writes the row inverse of X K (for s, only with a post-gate) to region B; pass 2b
    turns each scratch row of h into H, adds H conj(X) to the channel's accumulator and writes the row inverse of
    H conj(K) (for d x) to region B; pass 3 finishes both inverses and writes the row's gradients. After the slice,
    the accumulator's row inverses go to region A, its column inverses to grad_k.

    Registers (ptxas, sm_90, 8 warps, P = 32 on 32 x 32 rows; fp32 without gates or D / bf16 with both): one pass 2
    holding X through the transforms of H spilled 224 / 60 bytes; split into 2a and 2b, with the inverses' twiddles
    read where used, none (246 / 238 registers; 16 / 20 bytes with the twiddles held; 255 / 232 registers with
    _fft_complex in place of _load_spectrum).
    """
    Q: tl.constexpr = Q1 * Q2
    N: tl.constexpr = P * Q
    HALF: tl.constexpr = (P // 2 + 1) * Q  # scratch plane: column-spectrum rows fp <= P / 2
    work_x = scratch_ptr + tl.program_id(0).to(tl.int64) * 10 * HALF  # region A
    work_h = work_x + 2 * HALF
    rows_x = work_h + 2 * HALF  # region B
    rows_h = rows_x + 2 * HALF
    work_acc = rows_h + 2 * HALF
    R: tl.constexpr = P // 2 if HALF_P else P  # rows of the (P, Q) view the signals and their gradients occupy
    fr, fi, lr, li = _half_blocks(dftp_ptr, *_load_complex(dftp_ptr, P, P), HALF_P)  # column DFT, inverse
    g1r, g1i, g2r, g2i, _, _ = _load_four_step(dftq1_ptr, dftq2_ptr, twq_ptr, Q1, Q2)
    for item in range(tl.program_id(0).to(tl.int64), C * SLICES, tl.num_programs(0)):  # int64 work items
        c = item // SLICES  # consecutive items share a channel (its spectrum is read from L2)
        b0 = item % SLICES * SLICE
        part = item % SLICES * C + c  # of the (S, C) partial sums
        zeros = tl.zeros((Q1, Q2), dtype=tl.float32)
        for fp in range(P // 2 + 1):
            _store_row(work_acc, _row_offsets(fp, Q1, Q2), zeros, zeros, HALF)
        acc_d = tl.zeros((R, BQ), dtype=tl.float32)  # sum_b h x over the slice, summed over column blocks too
        for b in range(b0, tl.minimum(b0 + SLICE, B)):
            row = b * C + c  # of the (contiguous) outputs
            u_row, pre_row, post_row = _input_rows(u_ptr, pre_ptr, post_ptr, b, c, SUB, SUC, SPB, SPC, SQB, SQC)
            grad_y_row = grad_y_ptr + b * SGB + c * SGC
            for q0 in range(0, Q, BQ):  # pass 1: column DFTs of x and h
                q, offs = _column_tile(q0, Q, R, BQ)
                mask = offs < LIMIT
                x = _load_gated(u_row, pre_row, offs, mask, HAS_PRE)  # (R, BQ)
                h = _load_gated(grad_y_row, post_row, offs, mask, HAS_POST)
                acc_d += h * x
                _store_column_dft(x, fr, fi, q, work_x, Q, N, HALF, PRECISION)
                _store_column_dft(h, fr, fi, q, work_h, Q, N, HALF, PRECISION)
            tl.debug_barrier()
            for fp in range(P // 2 + 1):  # pass 2a: X in place of x's column DFTs, row inverse of X K
                offs = _row_offsets(fp, Q1, Q2)  # (Q1, Q2)
                xr, xi = _load_spectrum(work_x + fp * Q, HALF, g1r, g1i, g2r, g2i, twq_ptr, Q1, Q2, PRECISION)
                _store_row(work_x, offs, xr, xi, HALF)
                if HAS_POST:
                    zr, zi = _cmul(xr, xi, *_load_row(spec_ptr + c * 2 * N, offs, N))
                    zr, zi = _ifft_reading_twiddles(zr, zi, g1r, g1i, g2r, g2i, twq_ptr, Q1, Q2, PRECISION)
                    _store_row(rows_x, offs, zr, zi, HALF)
            tl.debug_barrier()
            for fp in range(P // 2 + 1):  # pass 2b: H, cross spectrum, row inverse of H conj(K)
                offs = _row_offsets(fp, Q1, Q2)  # (Q1, Q2)
                hr, hi = _load_spectrum(work_h + fp * Q, HALF, g1r, g1i, g2r, g2i, twq_ptr, Q1, Q2, PRECISION)
                pr, pi = _cmul_conj(hr, hi, *_load_row(work_x, offs, HALF))
                ar, ai = _load_row(work_acc, offs, HALF)
                _store_row(work_acc, offs, ar + pr, ai + pi, HALF)
                zr, zi = _cmul_conj(hr, hi, *_load_row(spec_ptr + c * 2 * N, offs, N))
                zr, zi = _ifft_reading_twiddles(zr, zi, g1r, g1i, g2r, g2i, twq_ptr, Q1, Q2, PRECISION)
                _store_row(rows_h, offs, zr, zi, HALF)
            tl.debug_barrier()
            for q0 in range(0, Q, BQ):  # pass 3: column inverses, gradients of the row (inputs re-read from L2)
                q, offs = _column_tile(q0, Q, R, BQ)
                mask = offs < LIMIT
                if HAS_POST:  # s = k * x + D x
                    s = _column_idft(rows_x, lr, li, q, Q, N, HALF, PRECISION)  # (R, BQ)
                    _store_grad_post(s, grad_y_row, grad_post_ptr + row * LIMIT, offs, mask)
                grad_x = _column_idft(rows_h, lr, li, q, Q, N, HALF, PRECISION)  # corr(h, k) + D h
                _store_grad_input(grad_x, u_row, pre_row, grad_u_ptr, grad_pre_ptr, row * LIMIT, offs, mask, HAS_PRE)
        # grad_k: row inverses of the accumulated cross spectrum into region A (last read by pass 2b, before the
        # barrier that ended it), then column inverses scaled by 1 / N
        for fp in range(P // 2 + 1):
            offs = _row_offsets(fp, Q1, Q2)
            zr, zi = _load_row(work_acc, offs, HALF)
            zr, zi = _ifft_reading_twiddles(zr, zi, g1r, g1i, g2r, g2i, twq_ptr, Q1, Q2, PRECISION)
            _store_row(work_x, offs, zr, zi, HALF)
        tl.debug_barrier()
        for q0 in range(0, Q, BQ):
            q, offs = _column_tile(q0, Q, P, BQ)
            grad_k = _column_idft(work_x, *_load_complex(dftp_ptr, P, P), q, Q, N, HALF, PRECISION) * (1.0 / N)
            tl.store(grad_k_ptr + part * N + offs, grad_k)
        tl.store(grad_d_ptr + part, tl.sum(tl.sum(acc_d, axis=1), axis=0))
        tl.debug_barrier()
