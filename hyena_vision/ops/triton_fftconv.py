"""Triton backend of :mod:`hyena_vision.ops.fftconv`: fused FFT long convolution, forward and backward.

``fftconv.py`` validates the arguments and calls :func:`fftconv` / :func:`fftconv2d` here. Both go through the custom
ops ``hyena_vision::fftconv`` and ``hyena_vision::fftconv_backward`` (``torch.library.custom_op`` with fake
implementations and a registered autograd formula), so ``torch.compile`` keeps them as single graph nodes.

Per call: one small kernel computes the filter's spectrum (once per channel, shared by the batch); the forward op
returns it beside y and autograd saves it (8 C N bytes, 25 MB at C = 768, N = 4096), so the backward reuses it instead
of recomputing it from k. Then each forward program takes a batch tile of one channel (TILE consecutive rows, see
batch_tile: up to MAX_BATCH_TILE while the grid keeps WAVES programs per SM) and runs, two rows at a time packed as one
complex signal (the filter is real, so the real and imaginary parts of the result are the two rows' outputs), gate ->
FFT -> multiply -> inverse FFT -> gate with every intermediate in registers (see ``_triton_kernels``; the skip term D x
is in the spectrum, that of k + D delta), so u, the gates and y cross memory once and the DFT factors are loaded once
per tile (the twiddles and the channel's spectrum are re-read from cache where used, see conv_fwd_kernel); where the
signal fills only the first half of the grid's rows (in 2D also of its columns), the first and last stages skip the zero
padding and the discarded outputs (_half_grid). The backward recomputes the input's spectrum instead of storing it, in
two kernels: the cross spectrum sum_b H conj(X), grad_D and, from the same spectra, the per-row gradients (u, gates),
one program per (channel, batch slice) (see batch_slices: enough slices that every SM has a program; paired_batch_slices
keeps them even) looping over the slice's rows in packed pairs, the spectra passed between transforms through a
per-program slot in L1 / L2 (see _triton_kernels.conv_bwd_filter_kernel); and grad_k, the inverse of the cross spectrum,
one program per channel. Without MERGED_BACKWARD the per-row gradients take a kernel of their own, in batch tiles as the
forward, which transforms x and h a second time. The slices' partial sums, (S, C, ...) fp32, are added on the host over
S in a fixed order: no atomics, so the backward is deterministic. Grids follow the device's SM count (DEFAULT_SMS for
CPU tensors).

2D grids above one program's (MAX_FFT_POINTS, sides up to MAX_FFT_SIDE; 64 x 64 images need 128 x 128) run in the
same kernels as the spectrum's four parity classes (k1 % 2, k2 % 2), each an (Nh / 2, Nw / 2) grid holding the image
(plan_2d makes the grid at least twice the image): a class's spectrum is the small grid's DFT of the image times a
twiddle, and the outputs are the sum of the classes' twiddled inverses (see _triton_kernels._class_sum), kept in a
per-program fp32 work slot. The filter's spectrum and grad_k's inverse run there through torch.fft (once per call on
(C, Nh, Nw)).

1D grids above MAX_FFT_POINTS up to MAX_FUSED_L2_POINTS (causal 2048 < L <= 16K) take the fused-L2 variant: the same
fusion (one row at a time in the forward, (channel, batch slice) work items with partial sums in the backward) in
persistent programs (FUSED_L2_PROGRAMS_PER_SM per SM), but the FFT runs as column DFTs, row FFTs and inverse column DFTs
through a small per-program fp32 scratch, written and re-read right away (see _triton_kernels), so u, the gates and y
cross HBM once; where the signal fills only the first half of each column, the column passes skip the zero padding and
the discarded outputs (HALF_P). Longer grids take a three-pass scheme (column FFTs, row FFTs with the spectrum multiply,
inverse column FFTs with the post-gate) through an fp32 scratch in HBM, processed in chunks of at most SCRATCH_BYTES;
it too transforms batch rows in packed pairs (one complex scratch row per pair: half the scratch traffic and row FFTs
per row) and skips the zero padding in its column passes (HALF_P, see _half_columns); its backward combines the same
passes with elementwise torch ops. `variant` names the path of a plan. Intermediates are fp32 (inputs in fp16/bf16/fp32;
outputs in the inputs' dtypes); the DFT products run on tensor cores as three-product splits (bf16x3 for half-precision
signals, tf32x3 for fp32: see HALF_PRECISION, FP32_PRECISION). The fused kernels read u, the gates and grad_y in place
through their batch and channel strides (HyenaOperator's channel slices are not copied); so does the multi-pass scheme
where u and the gates share their strides (else it copies them, see _shared_strides). Outputs are contiguous.
"""

import contextlib
import dataclasses
import math

import torch

from . import _triton_kernels as kernels

__all__ = [
    "supports",
    "supports_shape",
    "fftconv",
    "fftconv2d",
    "plan_1d",
    "plan_2d",
    "variant",
    "MAX_FFT_POINTS",
    "MAX_FUSED_L2_POINTS",
]

RADIX2_SIDE = kernels.RADIX2_SIDE.value  # sides that take a radix-2 step: see _factor
MIN_SIDE = 16  # tl.dot needs every tile side >= 16, so the FFT grid is at least 16 x 16
MAX_FFT_POINTS = 1 << 12  # largest grid (N1 * N2) one program holds; longer 1D signals take the fused-L2 variant
# Longest side of a grid one program holds: its complex DFT factor sits in registers beside the grid (a 64-point side
# takes a radix-2 step over a 32-point factor, see _factor).
# A 2D grid of MAX_FFT_POINTS with a long side (16 x 256 for an 8 x 128 image) would need a 512 KB matrix: out of
# registers and shared memory, so such images are refused.
MAX_FFT_SIDE = 64
# Warps of a fused-register program. Measured on an H200 (B = 64, C = 768, bf16, gated): 4 warps ran 1.4x / 1.5x
# (forward / forward+backward) faster than 8 at L = 1K (a 32 x 64 grid) and 1.3x / 1.2x at L = 2K (64 x 64). ptxas
# (sm_90) reports spills at 4 warps on grids above 2048 points (64 x 64) in the kernels of WIDE_GRID_KERNELS (the
# filter's spectrum 288 bytes, its gradient 664, the per-row backward 24), which keep 8 warps there.
FUSED_WARPS = 4
WIDE_GRID_WARPS = 8
WIDE_GRID_KERNELS = ("filter_spectrum_kernel", "conv_bwd_kernel", "filter_gradient_kernel")
# Programs per SM the fused-register per-row kernels' registers are capped for (ptxas .maxnreg, see _launch_options);
# None: ptxas chooses (2 programs of 4 warps per SM at L = 1K and 2K). Capped for more they spill (ptxas, sm_90,
# bf16, gated, 4 warps: for 3, 168 registers, the forward 56 bytes at L = 1K, 192 at 2K, the merged backward 128 at
# 1K); bench_fftconv.py --sweep times 3 against the default: whether more programs in flight are worth the spills.
FUSED_PROGRAMS_PER_SM = None
# The fused-register backward's per-row gradients computed by the cross spectrum's kernel from the spectra it forms
# anyway (3 transforms a packed pair ungated, 4 gated) instead of by a kernel of their own (4 and 6 in all): see
# _triton_kernels.conv_bwd_filter_kernel (ROW_GRADIENTS). Not timed on a GPU: bench_fftconv.py --sweep times both.
MERGED_BACKWARD = True
MAX_FUSED_L2_POINTS = 1 << 15  # largest 1D grid of the fused-L2 variant (causal L <= 16K); longer: multi-pass scheme
# Fused-L2 grid: P = N / FUSED_L2_ROW columns clamped to [FUSED_L2_MIN_COLUMN, FUSED_L2_MAX_COLUMN] (the K side of the
# column DFT's tl.dot), Q = N / P rows. Chosen from ptxas (sm_90) reports: tl.dot keeps its operand panels (K = the
# DFT factor's side) in registers, so columns P > 32 spill; 32 x 32 row grids take radix-2 steps (16-point factors).
FUSED_L2_ROW = 1 << 9
FUSED_L2_MIN_COLUMN = MIN_SIDE
FUSED_L2_MAX_COLUMN = 2 * MIN_SIDE
FUSED_L2_TILE = 1 << 11  # fused-L2: elements of a (P, BQ) column tile
# Fused-L2 programs: warps each (ptxas, sm_90: 16 warps, 128 registers a thread, spill far more) and persistent
# programs per SM (one: at 8 warps and up to 248 registers a thread, one program fills an SM's register file), their
# registers capped for that many (_launch_options): uncapped, ptxas traded 88 bytes of spills for an occupancy of two
# that the grid never uses (the forward at L = 4K, bf16, gated: 128 registers; capped, 182 and no spills)
FUSED_L2_WARPS = 8
FUSED_L2_PROGRAMS_PER_SM = 1
MAX_ROW_POINTS = 1 << 10  # multi-pass: longest row FFT (Q), in registers like the fused kernel (64 x 64 spilled more)
MAX_DIRECT_COLUMN = 64  # multi-pass: columns up to this length (P) are one DFT-matrix product on a block of columns
MIN_FOUR_STEP_COLUMN = MIN_SIDE * MIN_SIDE  # longer columns take the in-register four-step, one column per program
MAX_FOUR_STEP_COLUMN = 1 << 12  # multi-pass: longest column (64 x 64); above N = 4M the rows outgrow MAX_ROW_POINTS
COLUMN_BLOCK = 32  # columns per program in the direct column passes
SCRATCH_BYTES = 1 << 30  # multi-pass: rows are processed in chunks whose complex fp32 scratch fits in this
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Grid sizing from the device's SM count (DEFAULT_SMS, an H100 SXM / H200, for CPU tensors: the interpreter and the
# ahead-of-time compile): the fused-register forward takes batch tiles of up to MAX_BATCH_TILE rows while its grid
# keeps at least WAVES programs per SM; the backwards split each channel's batch into slices until every SM has work.
DEFAULT_SMS = 132
REGISTER_FILE = 1 << 16  # 32-bit registers per SM (sm_80, sm_90)
# Registers of a thread under a cap at most (ptxas allows 255): capped at 255, the fused-L2 forward on 32 x 32 rows in
# fp32 and the 64 x 64 parity forward spilled 4 and 16 bytes (sm_90), capped at 248 none
MAX_REGISTERS = 248
MAX_BATCH_TILE = 8
WAVES = 2
# Precision of the kernels' DFT products (tl.dot, see _triton_kernels._dot), all on tensor cores: a bf16 hi / lo split
# with three products for half-precision signals (about 1e-5 relative error, far below what fp16 / bf16 outputs
# carry), tf32x3 for fp32 signals, the filter's spectrum and the multi-pass scheme (below 1e-6 on GPUs; the bf16 split
# gives 4e-5 on fp32 gradients, above the 1e-5 fp32 results must meet).
HALF_PRECISION = "bf16x3"
FP32_PRECISION = "tf32x3"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where a signal and its filter sit on the (n1, n2) FFT grid.

    Fused plans (n1 * n2 <= MAX_FFT_POINTS) hold the whole grid in one program; 1D fused-L2 and multi-pass plans
    split N into P = n1 columns and Q = n2 rows of the (P, Q) view; 2D parity plans hold one (n1, n2) parity class
    of a (2 n1, 2 n2) grid at a time (see _triton_kernels._class_sum).
    """

    n1: int
    n2: int
    fft_shape: tuple[int, ...]  # (N,) for 1D, (Nh, Nw) for 2D; n1 * n2 == prod(fft_shape), a quarter of it in parity
    lag0: tuple[int, ...]  # index of lag 0 in k along each filter axis
    rows: int  # fused kernels: the signal occupies rows < rows, columns < cols, offsets row * stride + col < limit
    cols: int
    stride: int
    limit: int
    twiddle: bool  # True: 1D four-step FFT; False: 2D DFT of the grid
    direct: bool = False  # fused-L2 / multi-pass: column DFTs as one matrix product (see MAX_DIRECT_COLUMN)
    fused_l2: bool = False  # the fused-L2 variant
    parity: bool = False  # 2D: the (Nh, Nw) grid's four parity classes, each an (n1, n2) = (Nh / 2, Nw / 2) grid


def _pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def plan_1d(length: int, klen: int, causal: bool) -> Plan:
    """FFT grid for u (B, C, length) and k (C, klen): N >= length + (reach of k) - 1 so nothing wraps around."""
    lag0 = 0 if causal else (klen - 1) // 2
    n = max(MIN_SIDE * MIN_SIDE, _pow2_at_least(length + klen - 1 - lag0))
    if n <= MAX_FFT_POINTS:
        n1, n2 = _split(n)
        return Plan(n1, n2, (n,), (lag0,), n1, n2, n2, length, twiddle=True)
    if n <= MAX_FUSED_L2_POINTS:
        columns = min(FUSED_L2_MAX_COLUMN, max(FUSED_L2_MIN_COLUMN, n // FUSED_L2_ROW))
        rows = n // columns
        return Plan(columns, rows, (n,), (lag0,), columns, rows, rows, length, True, direct=True, fused_l2=True)
    columns = n // MAX_ROW_POINTS  # multi-pass: N = P * Q, P = columns, Q = MAX_ROW_POINTS (longer only past 4M)
    if columns <= MAX_DIRECT_COLUMN:
        columns = max(columns, 1)
        return Plan(columns, n // columns, (n,), (lag0,), columns, n // columns, n // columns, length, True, True)
    columns = min(max(columns, MIN_FOUR_STEP_COLUMN), MAX_FOUR_STEP_COLUMN)
    if _split(columns) == (32, 64):  # its dense 64-point factor spilled (ptxas, sm_90): 64 x 64 and half-length rows
        columns *= 2
    return Plan(columns, n // columns, (n,), (lag0,), columns, n // columns, n // columns, length, twiddle=True)


def plan_2d(height: int, width: int, kh: int, kw: int) -> Plan:
    """FFT grid for u (B, C, height, width) and centred k (C, kh, kw): one program's grid or, where that is too large,
    the parity classes of a grid at least twice the image on each side (the image fills one class's grid; with full
    filters, (2 height - 1, 2 width - 1), that is the smallest grid anyway)."""
    nh = max(MIN_SIDE, _pow2_at_least(height + (kh + 1) // 2 - 1))
    nw = max(MIN_SIDE, _pow2_at_least(width + (kw + 1) // 2 - 1))
    lag0, geometry = ((kh - 1) // 2, (kw - 1) // 2), (height, width, width, height * width)
    plan = Plan(nh, nw, (nh, nw), lag0, *geometry, twiddle=False)
    if _fits_one_program(plan):
        return plan
    nh, nw = max(nh, 2 * _pow2_at_least(height)), max(nw, 2 * _pow2_at_least(width))
    parity = Plan(nh // 2, nw // 2, (nh, nw), lag0, *geometry, twiddle=False, parity=True)
    return parity if _fits_one_program(parity) else plan


def _plan(u: torch.Tensor, k: torch.Tensor, causal: bool) -> Plan:
    """The plan of u and k; int() specialises symbolic sizes (fake tensors under torch.compile's dynamic shapes),
    since the plan, like the kernels' constexprs, depends on their values."""
    if u.ndim == 4:
        return plan_2d(*(int(n) for n in (u.shape[2], u.shape[3], k.shape[1], k.shape[2])))
    return plan_1d(int(u.shape[2]), int(k.shape[1]), causal)


def _fits_one_program(plan: Plan) -> bool:
    """Whether a 2D grid (or parity class) fits one program (its points and the sides of its DFT matrices)."""
    sides = sorted((plan.n1, plan.n2))
    return plan.n1 * plan.n2 <= MAX_FFT_POINTS and MIN_SIDE <= sides[0] and sides[1] <= MAX_FFT_SIDE


def supports_shape(shape: tuple[int, ...]) -> bool:
    """Whether the kernels take u of this shape (B, C, L) or (B, C, H, W), 2D with any centred filter."""
    if len(shape) == 4:
        return _fits_one_program(plan_2d(shape[2], shape[3], 2 * shape[2] - 1, 2 * shape[3] - 1))
    return len(shape) == 3


def supports(u: torch.Tensor) -> bool:
    """Whether backend='auto' should use Triton for u: CUDA tensors of a kernel dtype and a supported shape."""
    return u.is_cuda and u.dtype in KERNEL_DTYPES and supports_shape(tuple(u.shape))


# DFT matrices and twiddles, per device. They are built on the device itself by torch ops (float64 angles), never
# copied from the host: a host-to-device copy is not allowed inside CUDA-graph capture. Under capture nothing is
# added to the cache (the graph records the few small kernels that build a missing one, and a tensor made during
# capture holds no values until the graph replays, so it must not serve later eager calls); outside capture each is
# built once per device, and capture uses what eager calls (the usual warm-up) have cached.
_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _cached(key: tuple, device: torch.device, build) -> torch.Tensor:
    """build(device) for key, built once per device outside CUDA-graph capture (see above)."""
    full_key = (*key, device)
    if full_key in _CONSTANTS:
        return _CONSTANTS[full_key]
    constant = build(device)
    if not _capturing(device):
        _CONSTANTS[full_key] = constant
    return constant


def _dft_matrix(n: int, device: torch.device, padded: int = 0) -> torch.Tensor:
    """(2, m, m) fp32, m = max(n, padded): real and imaginary parts of exp(-2 pi i j k / n) (float64-accurate) for
    j, k < n, zero elsewhere."""

    def build(device: torch.device) -> torch.Tensor:
        j = torch.arange(n, dtype=torch.int64, device=device)
        angle = (j[:, None] * j[None, :] % n).double() * (-2 * math.pi / n)  # (n, n)
        size = max(n, padded)
        matrix = torch.zeros(2, size, size, dtype=torch.float64, device=device)
        matrix[:, :n, :n] = torch.stack((angle.cos(), angle.sin()))
        return matrix.float()

    return _cached(("dft", n, padded), device, build)


def _factor(n: int, other: int) -> int:
    """Side of the DFT factor for a side of n points of an (n, other) grid: n / 2 (a radix-2 step, see
    _triton_kernels._dft) on square grids from RADIX2_SIDE up (32 x 32, 64 x 64) and for sides from 2 RADIX2_SIDE
    (the 64-point side of 32 x 64), else n."""
    return n // 2 if n >= RADIX2_SIDE * (1 if n == other else 2) else n


def _frequencies(n: int, other: int, device: torch.device) -> torch.Tensor:
    """(n,) the frequency each position of a length-n spectrum axis of an (n, other) grid holds in the kernels'
    layout (_triton_kernels._frequency): natural, or interleaved (position 2 k + j holds k + n / 2 j) after a radix-2
    step."""
    position = torch.arange(n, device=device)
    half = _factor(n, other)
    return position if half == n else position // 2 + half * (position % 2)


def _twiddles(n1: int, n2: int, twiddle: bool, device: torch.device) -> torch.Tensor:
    """(2, n1, n2) fp32: exp(-2 pi i k1 n2 / (n1 n2)), row k1 at its position in the first stage's output (see
    _frequencies), or 1 where the grid is a 2D image (no twiddles)."""

    def build(device: torch.device) -> torch.Tensor:
        k1 = _frequencies(n1, n2, device)[:, None]
        exponent = k1 * torch.arange(n2, device=device)[None, :] % (n1 * n2) if twiddle else k1.new_zeros(n1, n2)
        angle = exponent.double() * (-2 * math.pi / (n1 * n2))  # (n1, n2)
        return torch.stack((angle.cos(), angle.sin())).float()

    return _cached(("twiddles", n1, n2, twiddle, _factor(n1, n2)), device, build)  # the layout is in the key


def _grid_constants(n1: int, n2: int, twiddle: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The DFT factors of both sides of an (n1, n2) grid (see _factor) and its twiddles."""
    dft1, dft2 = _dft_matrix(_factor(n1, n2), device), _dft_matrix(_factor(n2, n1), device)
    return dft1, dft2, _twiddles(n1, n2, twiddle, device)


def _constants(plan: Plan, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _grid_constants(plan.n1, plan.n2, plan.twiddle, device)


def _launch_options(warps: int, programs_per_sm: int | None = None) -> dict[str, int]:
    """num_warps of a launch and, where ``programs_per_sm`` is given, maxnreg: the registers a thread may hold when
    that many programs of ``warps`` warps share an SM's REGISTER_FILE, in steps of 8 (the allocation unit), at most
    MAX_REGISTERS. Elsewhere ptxas chooses: with a cap of 248 (or 255) on every launch, three that compile without
    spills uncapped spilled 4-52 bytes (sm_90)."""
    if programs_per_sm is None:
        return {"num_warps": warps}
    cap = REGISTER_FILE // (32 * warps * programs_per_sm) // 8 * 8
    return {"num_warps": warps, "maxnreg": min(MAX_REGISTERS, cap)}


def _num_warps(points: int) -> int:
    """Warps for a multi-pass column or row program holding ~a dozen fp32 tiles of `points` elements: 8 from 1024
    points up (ptxas, sm_90: at 16 warps a thread may hold 128 registers, at 8 the register file's 255, and 64 x 64
    grids spill more at 16). Not timed on a GPU; the fused-register kernels, which were, take _fused_warps."""
    return max(4, min(8, points // 128))


def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of u's device (DEFAULT_SMS for CPU tensors)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else DEFAULT_SMS


def batch_tile(batch: int, channels: int, sms: int) -> int:
    """Rows per program of the fused-register forward (its TILE): the largest power of two up to MAX_BATCH_TILE (and
    no larger than needed to cover the batch) whose grid, channels * ceil(batch / TILE) programs, still gives every
    one of ``sms`` SMs WAVES programs; at least 2 (1 for a batch of 1): the kernel transforms rows in pairs, and a
    row alone costs a pair's transforms, so single-row tiles would only double the work of smaller grids."""
    tile = min(2, batch)
    while tile < min(MAX_BATCH_TILE, batch) and channels * -(-batch // (2 * tile)) >= WAVES * sms:
        tile *= 2
    return tile


def batch_slices(batch: int, channels: int, programs: int) -> tuple[int, int]:
    """(S, rows per slice): each channel's batch in S = ceil(batch / rows) slices of consecutive rows, one backward
    program (or work item) per (channel, slice), with the most rows per slice that still give channels * S >=
    ``programs`` (the SM count); one row per slice where the batch is too small for that. The last may be shorter."""
    wanted = max(1, min(batch, -(-programs // max(channels, 1))))  # slices per channel
    rows = max(1, batch if wanted == 1 else (batch - 1) // (wanted - 1))  # most rows with ceil(batch / rows) >= wanted
    return max(1, -(-batch // rows)), rows


def paired_batch_slices(batch: int, channels: int, programs: int) -> tuple[int, int]:
    """batch_slices for the fused-register backward, which transforms rows in pairs: an even number of rows per slice
    wherever there are several slices, so no pair straddles two programs and only the last slice may hold a row alone
    (an odd row count is rounded down, giving more slices; one row per slice becomes two, as a row alone costs a
    pair's transforms)."""
    slices, rows = batch_slices(batch, channels, programs)
    if slices > 1 and rows % 2:
        rows = rows - 1 if rows > 1 else 2
    return -(-batch // rows), rows


def _split(n: int) -> tuple[int, int]:
    """n = n1 * n2 with n1 <= n2 as close as possible (powers of two)."""
    n1 = 1 << (n.bit_length() - 1) // 2
    return n1, n // n1


def variant(plan: Plan) -> str:
    """The kernels that run a plan: "fused-register", "fused-L2" or "multi-pass"."""
    if plan.fused_l2:
        return "fused-L2"
    return "fused-register" if plan.n1 * plan.n2 <= MAX_FFT_POINTS else "multi-pass"


def _checked_variant(plan: Plan, u: torch.Tensor) -> str:
    """variant(plan), refusing 2D grids too large for one program or, in parity classes, for four."""
    if not plan.twiddle and not _fits_one_program(plan):
        raise NotImplementedError(
            f"backend='triton' handles 2D FFT grids up to {MAX_FFT_POINTS} points and sides up to {MAX_FFT_SIDE}, "
            f"or twice those sides where the image fills at most half of each; u of shape {tuple(u.shape)} needs "
            f"{plan.fft_shape} (use backend='torch')"
        )
    return variant(plan)


def _circular_filter(k: torch.Tensor, D: torch.Tensor | None, plan: Plan) -> torch.Tensor:
    """k + D delta: k (C, *kshape) placed on the FFT grid with lag 0 at the origin and negative lags wrapped, plus the
    skip term D (C,) at lag 0: (C, *fft_shape) fp32.

    Every variant's filter spectrum is that of this grid, so D x comes with k * x (and in the backward D h with
    corr(h, k)) and no kernel takes D (grad_D, sum h x, is summed beside the cross spectrum). A skip term of its own
    re-read u and pre where the output was stored (from L1 / L2 in the fused kernels, from HBM in the multi-pass
    scheme's last pass) and cost registers: 212 against 202 in the fused-register forward at L = 1K (ptxas, sm_90, 4
    warps, bf16, gated), 68 bytes of spills in the 2D parity forward at 64 x 64. Through the FFT, D x takes the
    transforms' rounding relative to y (about 1e-7 in fp32)."""
    channels = k.shape[0]
    grid = k.new_zeros((channels, *plan.fft_shape), dtype=torch.float32)  # (C, N) or (C, Nh, Nw)
    grid[(slice(None), *(slice(0, size) for size in k.shape[1:]))] = k
    axes = tuple(range(1, grid.ndim))
    grid = torch.roll(grid, shifts=tuple(-lag for lag in plan.lag0), dims=axes).contiguous()
    if D is not None:
        grid.view(channels, -1)[:, 0] += D.float()
    return grid


def _filter_from_grid(grid: torch.Tensor, plan: Plan, kshape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of _circular_filter: (C, n1, n2) or (C, *fft_shape) -> (C, *kshape)."""
    grid = grid.reshape(grid.shape[0], *plan.fft_shape)  # (C, N) or (C, Nh, Nw)
    grid = torch.roll(grid, shifts=plan.lag0, dims=tuple(range(1, grid.ndim)))
    return grid[(slice(None), *(slice(0, size) for size in kshape))]


def _filter_gradients(grad_k_grid, grad_d, k, D, plan):
    """Gradients of k and D in their own shapes and dtypes (for an absent D an empty tensor of k's dtype, matching the
    fake implementation), from grad_k_grid (C, n1, n2) or (C, N) and grad_d (C,) fp32."""
    grad_k = _filter_from_grid(grad_k_grid, plan, tuple(k.shape[1:])).to(k.dtype).contiguous()
    return grad_k, grad_d.to(D.dtype) if D is not None else k.new_empty(0)


def _register_sizes(plan: Plan) -> dict:
    """Compile-time sizes of the fused-register kernels (one (N1, N2) grid per program)."""
    return {"N1": plan.n1, "N2": plan.n2, "TWIDDLE": plan.twiddle}


def _parity_work(plan: Plan, programs: int, planes: int, like: torch.Tensor) -> torch.Tensor:
    """Work slots of the fused-register forward (2 planes: a complex sum) and per-row backward (4: two) in parity
    plans, (programs, planes, n1, n2) fp32: each program's running sums over the classes (see
    _triton_kernels._class_sum); else a placeholder (never read)."""
    if not plan.parity:
        return like
    return torch.empty((programs, planes, plan.n1, plan.n2), dtype=torch.float32, device=like.device)


def _fused_warps(plan: Plan, kernel: str, gated: bool = False) -> int:
    """num_warps of the fused-register kernel named ``kernel`` on the plan's grid (see FUSED_WARPS). Also 8 on 64 x 64
    grids (ptxas, sm_90, spill stores at 4 warps, none at 8; not timed): every kernel of parity plans (the forward 60
    bytes, the cross spectrum's kernel 156), and with gates (``gated``: its extra inverse for grad_post) the cross
    spectrum's kernel that computes the per-row gradients (MERGED_BACKWARD: 48 bytes; 2D at 8 warps spilled 116)."""
    merged_gated = kernel == "conv_bwd_filter_kernel" and MERGED_BACKWARD and gated
    wide = kernel in WIDE_GRID_KERNELS or plan.parity or merged_gated
    return WIDE_GRID_WARPS if plan.n1 * plan.n2 > 2048 and wide else FUSED_WARPS


def _signal_geometry(plan: Plan) -> tuple[int, int, int, int]:
    """Where a signal row's samples lie on the (N1, N2) grid: rows, cols, row stride, samples per row."""
    return plan.rows, plan.cols, plan.stride, plan.limit


def _spectrum_shape(plan: Plan, channels: int) -> tuple[int, ...]:
    """Shape of a filter's spectrum (or cross spectrum) in the fused kernels' layout: (C, 2, n1, n2), in parity
    classes (C, 4, 2, n1, n2)."""
    return (channels, *((4,) if plan.parity else ()), 2, plan.n1, plan.n2)


def _parity_classes(spectrum: torch.Tensor, plan: Plan) -> torch.Tensor:
    """(C, Nh, Nw) complex -> (C, 4, 2, n1, n2) fp32: class 2 s + t holds frequencies (2 a + s, 2 b + t) at the
    positions of (a, b) in the kernels' layout (see _frequencies)."""
    channels = spectrum.shape[0]
    classes = spectrum.reshape(channels, plan.n1, 2, plan.n2, 2).permute(0, 2, 4, 1, 3)  # (C, s, t, a, b)
    rows, cols = _frequencies(plan.n1, plan.n2, spectrum.device), _frequencies(plan.n2, plan.n1, spectrum.device)
    classes = classes[:, :, :, rows][..., cols].reshape(channels, 4, plan.n1, plan.n2)  # positions
    return torch.stack((classes.real, classes.imag), dim=2).float().contiguous()


def _from_parity_classes(classes: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Inverse of _parity_classes: (C, 4, 2, n1, n2) fp32 -> (C, Nh, Nw) complex."""
    channels = classes.shape[0]
    rows = torch.argsort(_frequencies(plan.n1, plan.n2, classes.device))  # frequency -> position
    cols = torch.argsort(_frequencies(plan.n2, plan.n1, classes.device))
    spectrum = torch.complex(classes[:, :, 0], classes[:, :, 1])[:, :, rows][..., cols]  # (C, 4, a, b)
    spectrum = spectrum.reshape(channels, 2, 2, plan.n1, plan.n2).permute(0, 3, 1, 4, 2)  # (C, a, s, b, t)
    return spectrum.reshape(channels, *plan.fft_shape)


def _filter_spectrum(k: torch.Tensor, D: torch.Tensor | None, plan: Plan) -> torch.Tensor:
    """Spectrum of k + D delta (see _circular_filter) divided by N, in the kernels' [k1, k2] layout (_spectrum_shape):
    a kernel on one program's grid, torch.fft in parity classes (once per call on (C, Nh, Nw): no batch)."""
    if plan.parity:
        grid = _circular_filter(k, D, plan)  # (C, Nh, Nw)
        return _parity_classes(torch.fft.fft2(grid) / grid[0].numel(), plan)
    dft1, dft2, twiddles = _constants(plan, k.device)
    spectrum = torch.empty(_spectrum_shape(plan, k.shape[0]), dtype=torch.float32, device=k.device)
    kernels.filter_spectrum_kernel[(k.shape[0],)](
        _circular_filter(k, D, plan).view(k.shape[0], plan.n1, plan.n2),
        dft1,
        dft2,
        twiddles,
        spectrum,
        1.0 / (plan.n1 * plan.n2),
        **_register_sizes(plan),
        PRECISION=FP32_PRECISION,
        num_warps=_fused_warps(plan, "filter_spectrum_kernel"),
    )
    return spectrum


def _in_place(*tensors: torch.Tensor | None) -> tuple[list[torch.Tensor], list[int]]:
    """Pointers and (batch, channel) strides for the fused kernels, which read each (b, c) row of u (B, C, *S), the
    gates and grad_y in place: a view whose rows are contiguous (HyenaOperator's channel slices of one projection) is
    not copied; other layouts are. An absent tensor is a placeholder pointer (never read) with zero strides."""
    pointers, strides = [], []
    for t in tensors:
        if t is None:
            pointers.append(tensors[0])
            strides += [0, 0]
            continue
        if t.numel() and not t[0, 0].is_contiguous():
            t = t.contiguous()
        pointers.append(t)
        strides += [t.stride(0), t.stride(1)]
    return pointers, strides


def _flags(pre_gate: torch.Tensor | None, post_gate: torch.Tensor | None) -> dict[str, bool]:
    """The kernels' HAS_* constexprs: which gates are present."""
    return {"HAS_PRE": pre_gate is not None, "HAS_POST": post_gate is not None}


def _precision(*signals: torch.Tensor | None) -> str:
    """HALF_PRECISION when every signal (u, gates, grad_y) is fp16 / bf16, else FP32_PRECISION."""
    half = all(t.dtype in (torch.float16, torch.bfloat16) for t in signals if t is not None)
    return HALF_PRECISION if half else FP32_PRECISION


def _contiguous(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """t made contiguous, or a placeholder pointer (never read) when the optional tensor is absent."""
    return like if t is None else t.contiguous()


# Multi-pass scheme (1D grids above MAX_FUSED_L2_POINTS): plan.n1 = P and plan.n2 = Q are the outer factors of N, each
# transformed in registers on its own (P1, P2) / (Q1, Q2) grid; see _triton_kernels for the passes. Signals are
# (nb, cc, L) views of (B, C, L) tensors with contiguous rows (a chunk, see _row_chunks), transformed in packed pairs
# of batch rows: a chunk's scratch holds ceil(nb / 2) * cc complex (P, Q) rows.


def _inner_constants(n: int, device: torch.device) -> tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor]:
    n1, n2 = _split(n)
    return n1, n2, *_grid_constants(n1, n2, True, device)


def _pairs(signal: torch.Tensor) -> int:
    """Packed pairs of a signal (nb, cc, L): scratch rows of the multi-pass scheme."""
    return -(-signal.shape[0] // 2) * signal.shape[1]


def _half_columns(plan: Plan, limit: int) -> bool:
    """HALF_P of the fused-L2 and multi-pass column passes: samples (or outputs) n = Q p + q < limit fill only the first
    half of each column of the (P, Q) view and the half of the column's first-side DFT factor (the direct DFT matrix,
    or on the (P1, P2) four-step grid the factor of P1, see _factor) still meets tl.dot's MIN_SIDE (fused-L2: P = 32,
    N = 16K and 32K; multi-pass: P = 64 direct, 64 x 64 four-step)."""
    p1, p2 = (plan.n1, 1) if plan.direct else _split(plan.n1)
    return 2 * limit <= plan.n1 * plan.n2 and _factor(p1, p2) // 2 >= MIN_SIDE


def _column_pass(kernel_pair: tuple, plan: Plan, signal: torch.Tensor, head: tuple, middle: tuple, tail: tuple, flags):
    """Launches pass 1 or 3 over the packed pairs of ``signal`` (nb, cc, limit): the DFT-matrix kernel for short
    columns (``plan.direct``) or the in-register four-step FFT kernel. Both take ``*head``, their column constants,
    the pairs' geometry (nb, cc, limit, ``*middle``: strides), the column sizes, then ``*tail``; ``flags`` are the
    HAS_* and HALF_P constexprs."""
    direct_kernel, fft_kernel = kernel_pair
    device = head[0].device
    geometry = (*signal.shape, *middle)
    flags = {**flags, "PRECISION": FP32_PRECISION}
    if plan.direct:
        padded = max(MIN_SIDE, plan.n1)
        matrix = _dft_matrix(plan.n1, device, padded)
        launch = (*head, matrix, *geometry, plan.n1, plan.n2, *tail)
        direct_kernel[(_pairs(signal), plan.n2 // COLUMN_BLOCK)](
            *launch, PP=padded, BQ=COLUMN_BLOCK, num_warps=4, **flags
        )
        return
    p1, p2, dft1, dft2, twiddles = _inner_constants(plan.n1, device)
    sizes = {"P1": p1, "P2": p2, "LONE": signal.shape[0] == 1, "num_warps": _num_warps(plan.n1)}
    fft_kernel[(_pairs(signal) * plan.n2,)](*head, dft1, dft2, twiddles, *geometry, plan.n2, *tail, **sizes, **flags)


def _column_fft(signal: torch.Tensor, pre_gate: torch.Tensor | None, scratch: torch.Tensor, plan: Plan) -> None:
    """Pass 1 on the pairs of signal (nb, cc, limit) [times pre_gate, of the same strides] into scratch (pairs, 2, P,
    Q)."""
    head = (signal, signal if pre_gate is None else pre_gate, scratch)
    pair = (kernels.column_dft_kernel, kernels.column_fft_kernel)
    flags = {"HAS_PRE": pre_gate is not None, "HALF_P": _half_columns(plan, signal.shape[2])}
    _column_pass(pair, plan, signal, head, signal.stride()[:2], (), flags)


def _row_pass(scratch, spectrum, plan, *, scale, forward, multiply, conj, inverse) -> None:
    """Pass 2, in place on scratch (pairs, 2, P, Q); pair j multiplies by spectrum[j % channels] (spectrum: (channels,
    2, P, Q), the chunk's channels)."""
    q1, q2, dft1, dft2, twiddles = _inner_constants(plan.n2, scratch.device)
    kernels.row_fft_kernel[(scratch.shape[0], plan.n1)](
        scratch,
        scratch if spectrum is None else spectrum,
        dft1,
        dft2,
        twiddles,
        1 if spectrum is None else spectrum.shape[0],
        plan.n1,
        scale,
        Q1=q1,
        Q2=q2,
        FORWARD=forward,
        MULTIPLY=multiply,
        CONJ=conj,
        INVERSE=inverse,
        PRECISION=FP32_PRECISION,
        num_warps=_num_warps(plan.n2),
    )


def _column_ifft(scratch, out, plan, *, scale, post_gate=None) -> None:
    """Pass 3: out (nb, cc, limit) = post_gate * scale * inverse of scratch (post_gate optional)."""
    gate = out if post_gate is None else post_gate
    head = (scratch, gate, out)
    pair = (kernels.column_idft_kernel, kernels.column_ifft_kernel)
    strides = (*gate.stride()[:2], *out.stride()[:2])
    flags = {"HAS_POST": post_gate is not None}
    if not plan.direct:  # the direct inverse computes every row (see column_idft_kernel)
        flags["HALF_P"] = _half_columns(plan, out.shape[2])
    _column_pass(pair, plan, out, head, strides, (scale,), flags)


def _multipass_spectrum(k: torch.Tensor, D: torch.Tensor | None, plan: Plan) -> torch.Tensor:
    """Spectrum of k + D delta (see _circular_filter) divided by N, (C, 2, P, Q) fp32, in the multi-pass layout (each
    channel a pair of its own)."""
    spectrum = torch.empty((k.shape[0], 2, plan.n1, plan.n2), dtype=torch.float32, device=k.device)
    _column_fft(_circular_filter(k, D, plan).view(1, k.shape[0], -1), None, spectrum, plan)
    scale = 1.0 / (plan.n1 * plan.n2)
    _row_pass(spectrum, None, plan, scale=scale, forward=True, multiply=False, conj=False, inverse=False)
    return spectrum


def _row_chunks(batch: int, channels: int, plan: Plan) -> list[tuple[slice, slice]]:
    """(batch rows, channels) of the chunks whose multi-pass scratch (a complex (P, Q) row per packed pair) fits in
    SCRATCH_BYTES: an even number of whole batch rows, or one pair of batch rows and a block of channels, so that a
    chunk's per-channel partial sums are a plain (deterministic) sum over its batch axis."""
    step = max(1, SCRATCH_BYTES // (8 * plan.n1 * plan.n2))  # pairs per chunk
    if step >= channels:
        rows = 2 * (step // channels)
        return [(slice(b, min(b + rows, batch)), slice(0, channels)) for b in range(0, batch, rows)]
    return [
        (slice(b, min(b + 2, batch)), slice(c, min(c + step, channels)))
        for b in range(0, batch, 2)
        for c in range(0, channels, step)
    ]


def _scratch(signal: torch.Tensor, plan: Plan) -> torch.Tensor:
    return torch.empty((_pairs(signal), 2, plan.n1, plan.n2), dtype=torch.float32, device=signal.device)


def _piece(t: torch.Tensor | None, *index: slice) -> torch.Tensor | None:
    return None if t is None else t[index]


def _multipass_conv(u, pre_gate, spectrum, post_gate, out, plan):
    """out = post_gate * (k * (pre_gate * u) + D * pre_gate * u) for a chunk (nb, cc, L), given the spectrum of k + D
    delta of the chunk's channels."""
    scratch = _scratch(u, plan)  # (pairs, 2, P, Q)
    _column_fft(u, pre_gate, scratch, plan)
    _row_pass(scratch, spectrum, plan, scale=1.0, forward=True, multiply=True, conj=False, inverse=True)
    _column_ifft(scratch, out, plan, scale=1.0, post_gate=post_gate)


def _conv_of_spectra(spectra, spectrum, out, plan, *, conj):
    """out = k * x + D x for a chunk whose spectra of x (_multipass_spectra, overwritten) the backward already has; the
    filter's spectrum conjugated for correlation."""
    _row_pass(spectra, spectrum, plan, scale=1.0, forward=False, multiply=True, conj=conj, inverse=True)
    _column_ifft(spectra, out, plan, scale=1.0)


def _multipass_spectra(u, pre_gate, plan) -> torch.Tensor:
    """Unscaled spectra (pairs, 2, P, Q) of the packed pairs of pre_gate * u for a chunk."""
    scratch = _scratch(u, plan)
    _column_fft(u, pre_gate, scratch, plan)
    _row_pass(scratch, None, plan, scale=1.0, forward=True, multiply=False, conj=False, inverse=False)
    return scratch


def _shared_strides(*signals: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """The signals (B, C, L) the multi-pass kernels read through one pair of batch and channel strides: as they are
    where they share their strides and have contiguous rows (HyenaOperator's channel slices of one projection: read in
    place), else contiguous copies. Absent ones stay None."""
    present = [t for t in signals if t is not None]
    if all(t.stride() == present[0].stride() and t.stride(-1) == 1 for t in present):
        return signals
    return tuple(None if t is None else t.contiguous() for t in signals)


def _multipass_forward(u, spectrum, pre_gate, post_gate, plan):
    u, pre_gate, post_gate = _shared_strides(u, pre_gate, post_gate)
    y = torch.empty_like(u, memory_format=torch.contiguous_format)
    for rows, chans in _row_chunks(u.shape[0], u.shape[1], plan):
        pieces = (u[rows, chans], _piece(pre_gate, rows, chans), spectrum[chans])
        _multipass_conv(*pieces, _piece(post_gate, rows, chans), y[rows, chans], plan)
    return y


def _multipass_backward(grad_y, u, k, spectrum, D, pre_gate, post_gate, plan):
    """Same gradients as conv_bwd_kernel, from the three passes plus elementwise torch ops, chunk by chunk."""
    u, pre_gate = _shared_strides(u, pre_gate)  # grad_y and post_gate only enter torch ops
    channels = u.shape[1]
    cross_spectrum = torch.zeros((channels, 2, plan.n1, plan.n2), dtype=torch.float32, device=u.device)
    grad_d = torch.zeros(channels, dtype=torch.float32, device=u.device)
    grad_u, grad_pre, grad_post = _empty_or_like(u, u), _empty_or_like(pre_gate, u), _empty_or_like(post_gate, u)
    for rows, chans in _row_chunks(u.shape[0], channels, plan):
        u_piece, pre_piece, g_piece = u[rows, chans], _piece(pre_gate, rows, chans), grad_y[rows, chans].float()
        x = u_piece.float() if pre_piece is None else u_piece.float() * pre_piece  # (nb, cc, L)
        h, k_spectrum = g_piece, spectrum[chans]
        if post_gate is not None:
            h = g_piece * post_gate[rows, chans]
        # spectra of packed pairs: the real part of the inverse of sum H conj(X) is the sum of both rows'
        # cross-correlations (see conv_bwd_filter_kernel), all the last column pass keeps of a lone row
        x_spectra = _multipass_spectra(u_piece, pre_piece, plan)  # (pairs, 2, P, Q)
        h_spectra = _multipass_spectra(h, None, plan)
        xr, xi, hr, hi = x_spectra[:, 0], x_spectra[:, 1], h_spectra[:, 0], h_spectra[:, 1]
        cross = torch.stack((hr * xr + hi * xi, hi * xr - hr * xi), dim=1)  # (pairs, 2, P, Q), pairs (pair, channel)
        cross_spectrum[chans] += cross.view(-1, x.shape[1], *cross.shape[1:]).sum(0)
        grad_d[chans] += (h * x).sum(-1).sum(0)
        # the convolutions below start from these spectra (overwritten) instead of transforming x and h again
        if post_gate is not None:
            conv = torch.empty_like(x)  # k * x + D x
            _conv_of_spectra(x_spectra, k_spectrum, conv, plan, conj=False)
            grad_post[rows, chans] = g_piece * conv
        grad_x = torch.empty_like(x)  # corr(h, k) + D h
        _conv_of_spectra(h_spectra, k_spectrum, grad_x, plan, conj=True)
        grad_u[rows, chans] = grad_x if pre_piece is None else grad_x * pre_piece
        if pre_gate is not None:
            grad_pre[rows, chans] = grad_x * u_piece
    _row_pass(cross_spectrum, None, plan, scale=1.0, forward=False, multiply=False, conj=False, inverse=True)
    grad_k_grid = torch.empty((1, channels, plan.n1 * plan.n2), dtype=torch.float32, device=u.device)
    _column_ifft(cross_spectrum, grad_k_grid, plan, scale=1.0 / (plan.n1 * plan.n2))
    grad_k, grad_d = _filter_gradients(grad_k_grid[0], grad_d, k, D, plan)
    return grad_u, grad_k, grad_d, grad_pre, grad_post


_OP_SCHEMA = "(Tensor u, Tensor k, Tensor? D, Tensor? pre_gate, Tensor? post_gate, bool causal) -> (Tensor, Tensor)"
_BACKWARD_SCHEMA = (
    "(Tensor grad_y, Tensor u, Tensor k, Tensor spectrum, Tensor? D, Tensor? pre_gate, Tensor? post_gate,"
    " bool causal) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)


def _device_of(u: torch.Tensor) -> contextlib.AbstractContextManager:
    """Makes u's GPU the current one, so kernels launch where the tensors are (no-op for CPU tensors)."""
    return torch.cuda.device(u.device) if u.is_cuda else contextlib.nullcontext()


def _fused_launch(spectrum, signals: tuple, plan: Plan) -> tuple[tuple, dict]:
    """What both fused-register kernels take, for ``signals`` (u, pre_gate, post_gate[, grad_y]): (the operands
    after the inputs: the filter spectrum, which holds the skip term (see _filter_spectrum), and the DFT constants;
    the constexprs)."""
    u, pre_gate, post_gate = signals[:3]
    operands = (spectrum, *_constants(plan, u.device))
    meta = {**_register_sizes(plan), **_flags(pre_gate, post_gate), "PRECISION": _precision(*signals)}
    return operands, {**meta, "PARITY": plan.parity}


def _half_grid(plan: Plan) -> dict[str, bool]:
    """The fused-register kernels' HALF_ROWS / HALF_COLS: whether they transform only the first half of the grid's
    rows / columns, where the signals (zero padding after them) and the outputs written occupy only that half (grad_k,
    which fills the grid, is inverted in full) and the half of the side's DFT factor (see _factor) still meets
    tl.dot's MIN_SIDE: sides of 32 or more points with a dense factor, of 64 with a radix-2 step (whose even and odd
    samples both fill only their first half). ptxas (sm_90, 8 warps, bf16x3; before the fence in
    _triton_kernels._conv_pair) on 2D 64 x 64 grids (radix-2 on both sides), spill stores in bytes, forward / per-row
    backward: 84 / 92 with neither half, 88 / 56 with the rows', 216 / 208 with both (220 / 224 with the columns'
    alone); with dense factors none at 32 x 64 with both halves, 108 / 116 at 64 x 32 with only the rows', none with
    both. So columns on radix-2 sides skipped nothing until the stacked products (_triton_kernels._dft_direct), with
    which both halves spill none there (254 / 254 registers at 64 x 64, 172 / 176 at 32 x 64)."""
    occupied = min(plan.rows, -(-plan.limit // plan.stride))  # grid rows holding samples
    rows = occupied <= plan.n1 // 2 and _factor(plan.n1, plan.n2) // 2 >= MIN_SIDE
    cols = plan.cols <= plan.n2 // 2 and _factor(plan.n2, plan.n1) // 2 >= MIN_SIDE
    return {"HALF_ROWS": rows, "HALF_COLS": cols}


def _fused_forward(u, spectrum, pre_gate, post_gate, plan):
    batch, channels = u.shape[:2]
    operands, meta = _fused_launch(spectrum, (u, pre_gate, post_gate), plan)
    tile = batch_tile(batch, channels, _sm_count(u.device))
    y = torch.empty_like(u, memory_format=torch.contiguous_format)
    inputs, strides = _in_place(u, pre_gate, post_gate)
    geometry = (batch, channels, tile, *_signal_geometry(plan), *strides)
    grid = (channels * -(-batch // tile),)  # channel-major batch tiles
    options = _launch_options(_fused_warps(plan, "conv_fwd_kernel"), FUSED_PROGRAMS_PER_SM)
    work = _parity_work(plan, grid[0], 2, u)
    kernels.conv_fwd_kernel[grid](*inputs, *operands, work, y, *geometry, **meta, **_half_grid(plan), **options)
    return y


# Fused-L2 variant (1D grids above MAX_FFT_POINTS up to MAX_FUSED_L2_POINTS): plan.n1 = P short columns (one direct
# DFT-matrix product each), plan.n2 = Q rows transformed by the in-register four-step on (Q1, Q2). Real sizes:
# N = 8K: P = 16, Q = 512 (16 x 32); 16K: P = 32, Q = 512; 32K: P = 32, Q = 1024 (32 x 32); FUSED_L2_WARPS each.


def _fused_l2_setup(plan: Plan, device: torch.device) -> tuple[list[torch.Tensor], dict[str, int]]:
    """DFT constants (P, Q1, Q2 grids) and the compile-time sizes of the fused-L2 kernels."""
    q1, q2, dftq1, dftq2, twiddles = _inner_constants(plan.n2, device)
    sizes = {
        "P": plan.n1,
        "Q1": q1,
        "Q2": q2,
        "BQ": min(FUSED_L2_TILE // plan.n1, plan.n2),
        "HALF_P": _half_columns(plan, plan.limit),
    }
    sizes.update(_launch_options(FUSED_L2_WARPS, FUSED_L2_PROGRAMS_PER_SM))
    return [_dft_matrix(plan.n1, device), dftq1, dftq2, twiddles], sizes


def _programs(work: int, sms: int) -> int:
    """Persistent fused-L2 programs: FUSED_L2_PROGRAMS_PER_SM per SM (a larger grid would only queue a partial second
    wave), fewer where there is less work. Capping them so that all scratch fit in L2 was measured slower on an H200
    (B = 64, C = 768, bf16: at L = 16K, 87 forward and 33 backward programs took 79 and 508 ms forward and
    forward+backward, one per SM 55 and 169 ms)."""
    return max(1, min(work, sms * FUSED_L2_PROGRAMS_PER_SM))


def _fused_l2_scratch(programs: int, planes: int, plan: Plan, device: torch.device) -> torch.Tensor:
    """(programs, planes, P / 2 + 1, Q) fp32: complex column spectra, the rows fp <= P / 2 a real signal needs."""
    return torch.empty((programs, planes, plan.n1 // 2 + 1, plan.n2), dtype=torch.float32, device=device)


def _fused_l2_launch(spectrum, signals: tuple, plan: Plan, programs: int, planes: int):
    """What both fused-L2 kernels take, for ``signals`` (u, pre_gate, post_gate[, grad_y]) and ``programs``
    persistent programs: (the operands after the inputs (filter spectrum, DFT constants, scratch of ``planes`` planes
    per program), the constexprs and launch options)."""
    u, pre_gate, post_gate = signals[:3]
    constants, sizes = _fused_l2_setup(plan, u.device)
    scratch = _fused_l2_scratch(programs, planes, plan, u.device)
    operands = (spectrum, *constants, scratch)
    return operands, {**sizes, **_flags(pre_gate, post_gate), "PRECISION": _precision(*signals)}


def _fused_l2_forward(u, spectrum, pre_gate, post_gate, plan):
    batch, channels, length = u.shape
    programs = _programs(batch * channels, _sm_count(u.device))
    operands, meta = _fused_l2_launch(spectrum, (u, pre_gate, post_gate), plan, programs, 4)
    y = torch.empty_like(u, memory_format=torch.contiguous_format)
    inputs, strides = _in_place(u, pre_gate, post_gate)
    kernels.conv_fwd_l2_kernel[(programs,)](*inputs, *operands, y, batch, channels, length, *strides, **meta)
    return y


def _fused_l2_backward(grad_y, u, k, spectrum, D, pre_gate, post_gate, plan):
    batch, channels, length = u.shape
    points, sms = plan.n1 * plan.n2, _sm_count(u.device)
    slices, rows = batch_slices(batch, channels, _programs(batch * channels, sms))
    programs = _programs(channels * slices, sms)
    operands, meta = _fused_l2_launch(spectrum, (u, pre_gate, post_gate, grad_y), plan, programs, 10)
    (grad_u, grad_pre, grad_post), outputs = _gradient_buffers(u, pre_gate, post_gate, slices, (points,))
    (u, pre, post, grad_y), strides = _in_place(u, pre_gate, post_gate, grad_y)
    geometry = (batch, channels, slices, rows, length, *strides)
    kernels.conv_bwd_l2_kernel[(programs,)](grad_y, u, pre, post, *operands, *outputs, *geometry, **meta)
    grad_k, grad_d = _filter_gradients(*_slice_sums(outputs[3:]), k, D, plan)
    return grad_u, grad_k, grad_d, grad_pre, grad_post


@torch.library.custom_op("hyena_vision::fftconv", mutates_args=(), schema=_OP_SCHEMA)
def _fftconv_op(u, k, D, pre_gate, post_gate, causal):
    """(y, spectrum): y = post * (k * (pre * u) + D * (pre * u)), 1D when u is (B, C, L), 2D when u is (B, C, H, W);
    spectrum = the filter's spectrum / N (C, 2, n1, n2) fp32 in the variant's layout, which the backward reuses."""
    plan = _plan(u, k, causal)
    variant_name = _checked_variant(plan, u)
    forward = {"fused-register": _fused_forward, "fused-L2": _fused_l2_forward, "multi-pass": _multipass_forward}[
        variant_name
    ]
    with _device_of(u):
        if variant_name == "fused-register":
            spectrum = _filter_spectrum(k, D, plan)
        else:
            spectrum = _multipass_spectrum(k, D, plan)
        return forward(u, spectrum, pre_gate, post_gate, plan), spectrum


@_fftconv_op.register_fake
def _(u, k, D, pre_gate, post_gate, causal):
    plan = _plan(u, k, causal)
    spectrum = k.new_empty(_spectrum_shape(plan, k.shape[0]), dtype=torch.float32)
    return torch.empty_like(u, memory_format=torch.contiguous_format), spectrum


def _empty_or_like(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Gradient buffer for an optional input: t's shape and dtype, or an empty tensor when t is absent."""
    return like.new_empty(0) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)


def _gradient_buffers(u, pre_gate, post_gate, slices: int, grad_k_shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    """The fused backward kernels' outputs: ((grad_u, grad_pre, grad_post), the five buffers the kernel writes:
    grad_u, grad_pre, grad_post (u as a never-written dummy for an absent gate), and the per-batch-slice partial sums
    grad_k (slices, C, *grad_k_shape), grad_d (slices, C))."""
    grads = (_empty_or_like(u, u), _empty_or_like(pre_gate, u), _empty_or_like(post_gate, u))
    grad_k_parts = torch.empty((slices, u.shape[1], *grad_k_shape), dtype=torch.float32, device=u.device)
    grad_d_parts = torch.empty((slices, u.shape[1]), dtype=torch.float32, device=u.device)
    dummy = (grads[1] if pre_gate is not None else u, grads[2] if post_gate is not None else u)
    return grads, (grads[0], *dummy, grad_k_parts, grad_d_parts)


def _slice_sums(parts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The batch slices' partial sums (S, C, ...) added over S: a fixed-order reduction (no atomics), so the backward
    is deterministic."""
    return tuple(part.sum(0) for part in parts)


def _fused_backward(grad_y, u, k, spectrum, D, pre_gate, post_gate, plan):
    """The cross spectrum sum_b H conj(X) and grad_D per batch slice, with MERGED_BACKWARD the per-row gradients too,
    from the same spectra (else those in batch tiles, as the forward, by a kernel of their own); the inverse of the
    slices' summed cross spectrum, grad_k (see _triton_kernels)."""
    batch, channels = u.shape[:2]
    merged = MERGED_BACKWARD
    operands, meta = _fused_launch(spectrum, (u, pre_gate, post_gate, grad_y), plan)
    sms = _sm_count(u.device)
    slices, rows = paired_batch_slices(batch, channels, sms)
    # the per-slice "grad_k" buffer holds the filter kernel's work space: X (scratch), the cross spectra (out) and,
    # merged in parity plans, the classes' sums of d x and s
    classes = 4 if plan.parity else 1
    work_shape = (1 + classes + (2 if merged and plan.parity else 0), 2, plan.n1, plan.n2)
    (grad_u, grad_pre, grad_post), outputs = _gradient_buffers(u, pre_gate, post_gate, slices, work_shape)
    (u, pre, post, grad_y), strides = _in_place(u, pre_gate, post_gate, grad_y)
    signals, half = (grad_y, u, pre, post), _half_grid(plan)
    if not merged:  # the per-row gradients in batch tiles, as the forward
        tile = batch_tile(batch, channels, sms)
        geometry = (batch, channels, tile, *_signal_geometry(plan), *strides)
        grid = (channels * -(-batch // tile),)  # channel-major batch tiles
        options = _launch_options(_fused_warps(plan, "conv_bwd_kernel"), FUSED_PROGRAMS_PER_SM)
        work = _parity_work(plan, grid[0], 4, u)
        launch = (*signals, *operands, work, *outputs[:3], *geometry)
        kernels.conv_bwd_kernel[grid](*launch, **meta, **half, **options)
    constants = operands[1:]
    geometry = (batch, rows, *_signal_geometry(plan), *strides)
    warps = _fused_warps(plan, "conv_bwd_filter_kernel", gated=post_gate is not None)
    options = _launch_options(warps, FUSED_PROGRAMS_PER_SM if merged else None)  # merged: the per-row kernel
    kernels.conv_bwd_filter_kernel[(channels, slices)](
        *signals,
        *constants,
        *outputs[3:],
        operands[0],  # the spectrum and the per-row gradients' buffers: read and written with ROW_GRADIENTS
        *outputs[:3],
        *geometry,
        **meta,
        **half,
        ROW_GRADIENTS=merged,
        **options,
    )
    cross, grad_d = _slice_sums((outputs[3][:, :, 1 : 1 + classes], outputs[4]))  # (C, classes, 2, n1, n2), (C,)
    if plan.parity:  # as filter_gradient_kernel: the real part of the normalised inverse, here on (C, Nh, Nw)
        grad_k_grid = torch.fft.ifft2(_from_parity_classes(cross, plan)).real
    else:
        grad_k_grid = torch.empty((channels, plan.n1, plan.n2), dtype=torch.float32, device=u.device)
        warps = _fused_warps(plan, "filter_gradient_kernel")
        scale, sizes = 1.0 / (plan.n1 * plan.n2), {name: meta[name] for name in ("N1", "N2", "TWIDDLE", "PRECISION")}
        kernels.filter_gradient_kernel[(channels,)](cross, *constants, grad_k_grid, scale, **sizes, num_warps=warps)
    grad_k, grad_d = _filter_gradients(grad_k_grid, grad_d, k, D, plan)
    return grad_u, grad_k, grad_d, grad_pre, grad_post


@torch.library.custom_op("hyena_vision::fftconv_backward", mutates_args=(), schema=_BACKWARD_SCHEMA)
def _fftconv_backward_op(grad_y, u, k, spectrum, D, pre_gate, post_gate, causal):
    """Gradients (u, k, D, pre_gate, post_gate) of _fftconv_op, given the filter spectrum it returned; empty tensors
    stand for absent inputs."""
    plan = _plan(u, k, causal)
    backward = {"fused-register": _fused_backward, "fused-L2": _fused_l2_backward, "multi-pass": _multipass_backward}[
        _checked_variant(plan, u)
    ]
    with _device_of(u):
        return backward(grad_y, u, k, spectrum, D, pre_gate, post_gate, plan)


@_fftconv_backward_op.register_fake
def _(grad_y, u, k, spectrum, D, pre_gate, post_gate, causal):
    return (
        torch.empty_like(u, memory_format=torch.contiguous_format),
        torch.empty_like(k, memory_format=torch.contiguous_format),
        _empty_or_like(D, k),  # D's dtype, or an empty tensor of k's dtype (as the real op returns)
        _empty_or_like(pre_gate, u),
        _empty_or_like(post_gate, u),
    )


def _setup_context(ctx, inputs, output):
    u, k, D, pre_gate, post_gate, causal = inputs
    spectrum = output[1]
    ctx.mark_non_differentiable(spectrum)
    ctx.set_materialize_grads(False)  # no zero-filled gradient for the spectrum
    ctx.save_for_backward(u, k, spectrum, D, pre_gate, post_gate)
    ctx.causal = causal


def _backward(ctx, grad_y, _grad_spectrum):
    u, k, spectrum, D, pre_gate, post_gate = ctx.saved_tensors
    grad_u, grad_k, grad_d, grad_pre, grad_post = _fftconv_backward_op(
        grad_y, u, k, spectrum, D, pre_gate, post_gate, ctx.causal
    )
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
    return _fftconv_op(u, k, D, pre_gate, post_gate, causal)[0]


def fftconv2d(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """2D long convolution (arguments validated by fftconv.fftconv2d); differentiable, torch.compile-able."""
    _check_dtypes(("u", "k", "D"), (u, k, D))
    return _fftconv_op(u, k, D, None, None, False)[0]
