"""Benchmark the FFT long convolution: Triton kernel vs the torch reference (and FlashFFTConv when installed).

Gated causal convolution y = post * (k * (pre * u) + D * (pre * u)) with u, gates (B, C, L), k (C, L) fp32, D (C,).
Times forward and forward+backward with CUDA events after warm-up, reports the speedup over the torch reference and
the fraction of the HBM floor reached (bytes that must cross memory / bandwidth of a device-to-device copy measured in
the same run). Writes a Markdown table and a PNG plot to --out; the Triton rows name the path that ran (fused-register,
fused-L2 or multi-pass, see hyena_vision.ops.triton_fftconv.variant).

Beside the measured columns, each Triton row carries a FLOP and byte model of the path that runs (see `Model`):
FLOP per output point and HBM bytes per element for forward and forward+backward, and the roofline time (the larger
of FLOP / tensor-core peak and bytes / bandwidth) on an H100 and an H200 from their published peaks. It is
arithmetic, not a measurement; it is printed with or without a GPU.

Without a GPU only the torch reference runs (on the CPU, wall-clock timing), which the output states; the Triton rows
then show the model alone.

    python eval/bench_fftconv.py                          # B=64 C=768, L = 256 .. 64K, bf16 and fp32
    python eval/bench_fftconv.py --long                   # adds L = 1M
    python eval/bench_fftconv.py --lengths 256 1024 --batch 2 --channels 8
    python eval/bench_fftconv.py --sizes-2d 32 64 --batch-2d 50 --channels-2d 128   # Hyena-ISO's 2D convolutions
    python eval/bench_fftconv.py --dtypes bf16 --sweep --compile-workers 8   # tuning rows; kernels compiled in parallel
    python eval/bench_fftconv.py --kernel-times   # + device time per kernel of each Triton row's forward+backward

The 2D section (``--sizes-2d``, H = W, 0 to skip) times ``fftconv2d`` with centred (C, 2H-1, 2W-1) kernels and a
skip term, ungated as in Hyena-ISO, torch against Triton (with its FLOP / byte model; the model alone without a GPU),
in its own table. It runs first.

``--sweep`` adds a Triton row for each setting in SWEEP at those of its lengths that were asked for: tuning constants
timed beside their defaults in the same run.

On a GPU each Triton row also gives the relative L2 error of y, grad u and grad k against a float64 torch reference on
the first CHECK_CHANNELS channels: the hardware check of that launch at full size (2D rows: in the main process, on the
row's own inputs). ``--compile-workers N`` runs the 1D rows' checks first in N processes, so that the Triton compiles
(seconds per kernel on one CPU core) run in parallel and the timed phase finds the kernels in Triton's cache. Times are
medians of per-call CUDA events. The Markdown table is rewritten after every row, so a run stopped early keeps what it
measured."""

import argparse
import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import math
import multiprocessing
import os
import pathlib
import statistics
import time
from unittest import mock

import torch

from hyena_vision.engine.bench import add_timing_args
from hyena_vision.engine.figures import save_figure, subplots
from hyena_vision.ops import fftconv, fftconv2d, triton_fftconv

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DEFAULT_LENGTHS = [256 << (2 * i) for i in range(5)]  # 256, 1K, 4K, 16K, 64K
LONG_LENGTH = 1 << 20
FWD_TENSORS = 4  # u, pre, post read; y written
FWD_BWD_TENSORS = FWD_TENSORS + 7  # backward: dy, u, pre, post read; du, dpre, dpost written
# Settings timed beside the default plan by --sweep: (name, the lengths where the setting changes the launch,
# triton_fftconv constants). Settled on an H200 (BENCHMARKS.md, 2026-11-30) and no longer swept: batch tiles of 2 and
# 4 rows (slower than 8), fused-L2 programs capped to fit L2 (slower than one per SM), fused-L2 column tiles of 1024
# (slower), 16-column direct blocks at N = 64K (slower), 256 x 256 four-step columns at N = 64K (1.8x slower forward
# than 64-point direct columns), tf32x3 products for bf16 signals (slower). Open, for the next GPU run: the
# fused-register kernels at 8 warps (the default before that run); on 64 x 64 grids every kernel at 4 warps (faster
# there, but three kernels spill 24-664 bytes at 4, so the default keeps them at 8); the fused-L2 kernels at 4 warps,
# two persistent programs per SM (ptxas: 0-60 bytes of spills); the multi-pass passes at 4 warps (no spills); the
# fused-register per-row kernels' registers capped for 3 programs per SM instead of 2 at L = 1K (168 a thread: the
# forward spills 56 bytes, the merged backward 128), and 2 fused-L2 programs per SM at 8 warps (128 registers: the
# forward, with 16 x 32 rows at L = 4K and 8K, spills none, the backward 104 and 364 bytes): whether more programs in
# flight are worth the spills.
SWEEP = (
    ("8 warps", (1 << 10, 1 << 11), {"FUSED_WARPS": 8}),
    ("every kernel at 4 warps", (1 << 11,), {"WIDE_GRID_KERNELS": ()}),
    ("4 warps, 2 programs per SM", (1 << 12, 1 << 13, 1 << 14), {"FUSED_L2_WARPS": 4, "FUSED_L2_PROGRAMS_PER_SM": 2}),
    ("passes at 4 warps", (1 << 15,), {"_num_warps": lambda points: 4}),
    ("split backward", (1 << 9, 1 << 10, 1 << 11), {"MERGED_BACKWARD": False}),
    ("3 programs per SM", (1 << 10,), {"FUSED_PROGRAMS_PER_SM": 3}),
    ("8 warps, 2 programs per SM", (1 << 12, 1 << 13), {"FUSED_L2_PROGRAMS_PER_SM": 2}),
)
SETTINGS = {"triton": {}} | {f"triton, {name}": values for name, _, values in SWEEP}  # Triton row name: its constants
CHECK_CHANNELS = 8  # channels compared with the float64 reference


# Published dense tensor-core peaks (bf16, tf32) and HBM bandwidth; the H200 has the H100's compute. The kernels' DFT
# products are split into three tensor-core products each (bf16x3 for fp16 / bf16 signals, tf32x3 for fp32, see
# hyena_vision.ops.triton_fftconv), so a DFT FLOP runs at a third of the peak of its format.
TENSOR_CORE_PEAKS = {"bf16x3": 989e12 / 3, "tf32x3": 494e12 / 3}  # DFT FLOP/s
BANDWIDTHS = {"H100": 3.35e12, "H200": 4.8e12}  # bytes/s


def transform_flop(plan, packed: bool = True) -> float:
    """FLOP per FFT-grid point of one real row's transform (forward or inverse) as the kernels run it: DFT factors
    through tl.dot (2 FLOP per multiply-add, padded tiles counted; the sides of square grids from 32 x 32 and 64-point
    sides take a radix-2 step, halving the factor, about 5 FLOP per point per butterfly), 6 per point per twiddle
    multiply. The fused-register kernels and the multi-pass passes transform two real rows as one complex signal, so a
    row costs half a complex transform; packed=False: a row transformed alone (the filter's spectrum, grad_k's inverse):
    a real one (its first stage, or the inverse's last, 2 dots instead of 4), but a complex one on direct multi-pass
    columns (the pair's second row is zero). The zero-padding skip (a causal signal fills half the grid) halves the
    forward's first stage and the inverse's last one where the kernels take it: the fused-register grid's rows
    (_half_grid), the fused-L2 and multi-pass columns (_half_columns; direct multi-pass columns in the forward pass
    only, see column_idft_kernel, so 6 instead of 8 per factor point on average); the filter's spectrum and grad_k's
    inverse run whole. 2D grids have no twiddles; an image on one program's grid fills half of its rows and half of
    its columns (the first stage takes half the rows of half the columns, the second half its contraction); in parity
    classes (a grid too large for one program) each class is a whole complex transform of an (n1, n2) grid with one
    twiddle multiply, the four covering the grid's points (their filter spectrum, by torch.fft, is counted as this
    kernel's)."""

    def grid_flop(n1: int, n2: int, first: float, second: float = 8) -> float:  # FLOP per factor point of each stage
        f1, f2 = triton_fftconv._factor(n1, n2), triton_fftconv._factor(n2, n1)
        return first * f1 + second * f2 + (5 if f1 < n1 else 0) + (5 if f2 < n2 else 0)

    if not plan.twiddle:  # 2D
        if plan.parity:
            return (grid_flop(plan.n1, plan.n2, 8 if packed else 4) + 6) / (2 if packed else 1)
        if not packed:
            return grid_flop(plan.n1, plan.n2, 4)
        half = triton_fftconv._half_grid(plan)
        columns = 2 if half["HALF_COLS"] else 1
        first = (4 if half["HALF_ROWS"] else 8) / columns
        return grid_flop(plan.n1, plan.n2, first, 8 / columns) / 2
    variant = triton_fftconv.variant(plan)
    if variant == "fused-register":  # packed: complex F1 @ x (4 dots) per pair; alone: real F1 @ x (2 dots)
        if not packed:
            return grid_flop(plan.n1, plan.n2, 4) + 6
        first = 4 if triton_fftconv._half_grid(plan)["HALF_ROWS"] else 8  # 1D grids have no column skip
        return (grid_flop(plan.n1, plan.n2, first) + 6) / 2
    row = grid_flop(*triton_fftconv._split(plan.n2), 8) + 6  # complex Q-point four-step per point of a row
    if variant == "fused-L2":  # real columns: only the P / 2 + 1 column-spectrum rows get row transforms
        return (
            (2 if triton_fftconv._half_columns(plan, plan.limit) else 4) * plan.n1
            + 6
            + row * (plan.n1 // 2 + 1) / plan.n1
        )
    half = packed and triton_fftconv._half_columns(plan, plan.limit)
    if plan.direct:  # one (PP, PP) DFT-matrix product per column block, complex also for a lone row
        column = (6 if half else 8) * max(triton_fftconv.MIN_SIDE, plan.n1) + 6
    else:  # four-step columns, a real transform for a lone row (LONE), two twiddle multiplies
        column = grid_flop(*triton_fftconv._split(plan.n1), (4 if half else 8) if packed else 4) + 12
    return (column + row) / (2 if packed else 1)


@dataclasses.dataclass
class Model:
    """FLOP per output point and HBM bytes per element of the Triton path for (B, C, L), gated, causal (C, L) filter.

    Forward: 2 transforms + the spectral products per row, the filter's transform once per channel (shared by B rows);
    backward: 4 transforms per row (x and h forward, d x and the recomputed k * x inverse; the fused-register
    backward's "split backward" sweep setting runs 6, x and h forward twice) and the filter's gradient inverse once
    per channel. The fused-register kernels and the multi-pass scheme pack two rows per complex transform
    (see transform_flop), which also halves the spectral products per row and the multi-pass scratch per row. Bytes:
    gated forward reads u, pre, post and writes y; the backward reads dy, u, pre, post and writes du, dpre, dpost; the
    fused-L2 scratch is assumed to stay in L2 (each program re-reads its own right away; optimistic where all of it is
    larger: the backward's 132 scratches are 88 MiB at L = 16K); the multi-pass scratch (complex fp32, written once and
    read once per pass boundary) crosses HBM, and its backward adds about ten fp32 elementwise passes.
    """

    variant: str
    precision: str  # of the DFT products: a key of TENSOR_CORE_PEAKS
    fwd_flop: float  # per output point
    fwd_bwd_flop: float
    fwd_bytes: float  # per element
    fwd_bwd_bytes: float

    @classmethod
    def of(cls, batch: int, length: int, dtype: torch.dtype) -> "Model":
        element_size = torch.tensor([], dtype=dtype).element_size()
        plan = triton_fftconv.plan_1d(length, length, causal=True)
        variant = triton_fftconv.variant(plan)
        points = plan.n1 * plan.n2 / length  # grid points per output point
        alone = transform_flop(plan, packed=False) * points  # the filter's (per channel)
        # rows per complex transform and spectral product, averaged over the batch (an odd last row is paired with
        # zeros, so B = 1 pays a whole complex transform)
        rows = batch / -(-batch // 2) if variant != "fused-L2" else 1
        transform = transform_flop(plan) * points * (2 / rows if variant != "fused-L2" else 1)
        fwd = 2 * transform + 12 * points / rows + alone / batch
        bwd = 4 * transform + 24 * points / rows + alone / batch
        fwd_bytes, bwd_bytes = 4 * element_size, 7 * element_size
        if variant == "multi-pass":
            scratch = 4 * 8 * points / rows  # per pair: pass 1 writes, pass 2 reads and writes, pass 3 reads
            fwd_bytes += scratch  # pass 3 reads only the scratch and post (the skip term is in the spectrum)
            bwd_bytes += 4 * scratch + 10 * 4
        precision = triton_fftconv.FP32_PRECISION
        if variant != "multi-pass" and dtype != torch.float32:
            precision = triton_fftconv.HALF_PRECISION
        return cls(variant, precision, fwd, fwd + bwd, fwd_bytes, fwd_bytes + bwd_bytes)

    @classmethod
    def of_2d(cls, batch: int, side: int, dtype: torch.dtype) -> "Model":
        """The 2D convolution of Hyena-ISO (u (B, C, side, side), full centred filter, skip, no gates): forward as in
        1D; backward 3 transforms per row (x and h forward, d x's inverse) and 2 spectral products (the cross spectrum,
        d x). Bytes: u read and y written; dy and u read and du written."""
        element_size = torch.tensor([], dtype=dtype).element_size()
        plan = triton_fftconv.plan_2d(side, side, 2 * side - 1, 2 * side - 1)
        points = math.prod(plan.fft_shape) / side**2  # grid points per output point
        rows = batch / -(-batch // 2)  # rows per complex transform, as in 1D
        transform = transform_flop(plan) * points * 2 / rows
        alone = transform_flop(plan, packed=False) * points / batch  # the filter's spectrum (per channel)
        fwd = 2 * transform + 12 * points / rows + alone
        bwd = 3 * transform + 24 * points / rows + alone
        variant = triton_fftconv.variant(plan) + (", parity classes" if plan.parity else "")
        precision = triton_fftconv.FP32_PRECISION if dtype == torch.float32 else triton_fftconv.HALF_PRECISION
        return cls(variant, precision, fwd, fwd + bwd, 2 * element_size, 5 * element_size)

    def roofline_ms(self, device: str, elements: int, backward: bool) -> float:
        flop, nbytes = (self.fwd_bwd_flop, self.fwd_bwd_bytes) if backward else (self.fwd_flop, self.fwd_bytes)
        return max(flop * elements / TENSOR_CORE_PEAKS[self.precision], nbytes * elements / BANDWIDTHS[device]) * 1e3


@dataclasses.dataclass
class Result:
    dtype: str
    length: int
    impl: str
    fwd_ms: float | None  # None: not run (out of memory, unsupported)
    fwd_bwd_ms: float | None
    note: str = ""
    model: Model | None = None  # Triton rows
    errors: dict[str, float] | None = None  # Triton rows on a GPU: relative error of y, grad u, grad k vs float64
    kernels: list[tuple[str, float]] | None = None  # --kernel-times: (kernel, ms) of one forward+backward


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=768)
    parser.add_argument("--lengths", type=int, nargs="+", default=DEFAULT_LENGTHS)
    parser.add_argument("--long", action="store_true", help=f"also L = {LONG_LENGTH}")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    add_timing_args(parser, warmup=3, iters=10)
    parser.add_argument("--sizes-2d", type=int, nargs="+", default=[32, 64], help="2D sides H = W; 0: no 2D section")
    parser.add_argument("--batch-2d", type=int, default=50, help="2D batch (Hyena-ISO trains on 50 images)")
    parser.add_argument("--channels-2d", type=int, default=128, help="2D channels (Hyena-ISO's width)")
    parser.add_argument("--sweep", action="store_true", help="also time the tuning settings in SWEEP")
    parser.add_argument(
        "--kernel-times", action="store_true", help="GPU: device time per kernel of each default Triton row"
    )
    parser.add_argument(
        "--compile-workers", type=int, default=0, help="GPU: check (so compile) Triton rows in N processes first"
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/bench_fftconv"))
    args = parser.parse_args()
    args.sizes_2d = [side for side in args.sizes_2d if side > 0]
    args.lengths += [LONG_LENGTH] * (args.long and LONG_LENGTH not in args.lengths)
    for name in ("batch", "channels", "warmup", "iters", "batch_2d", "channels_2d"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.compile_workers < 0:
        parser.error("--compile-workers must be >= 0")
    if min(args.lengths) < 1:
        parser.error("--lengths must all be >= 1")
    return args


def time_ms(fn, warmup: int, iters: int, device: str) -> float:
    """Median milliseconds per call: CUDA events around each call on the GPU, wall clock on the CPU."""
    for _ in range(warmup):
        fn()
    if device != "cuda":
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - start) * 1e3 / iters
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    torch.cuda.synchronize()
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def copy_bandwidth(device: str, warmup: int, iters: int) -> float:
    """Bytes per ms of a 1 GiB device-to-device copy (read + write counted)."""
    src = torch.empty(1 << 28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), warmup, iters, device)
    return 2 * src.numel() * src.element_size() / ms


def make_inputs(batch, channels, length, dtype, device):
    u, pre, post = (torch.randn(batch, channels, length, device=device, dtype=dtype) for _ in range(3))
    k = torch.randn(channels, length, device=device) / math.sqrt(length)
    D = torch.randn(channels, device=device)
    return u, k, D, pre, post


def conv_with_backend(backend):
    def run(u, k, D, pre, post):
        return fftconv(u, k, D, pre_gate=pre, post_gate=post, backend=backend)

    return run


def flashfftconv_impl(length, dtype, device):
    """FlashFFTConv's gated convolution (D added outside it), or None when the package is missing or unfit."""
    if device != "cuda" or dtype == torch.float32 or importlib.util.find_spec("flashfftconv") is None:
        return None
    from flashfftconv import FlashFFTConv

    conv = FlashFFTConv(2 * length, dtype=dtype).to(device)

    def run(u, k, D, pre, post):
        x = u * pre
        return conv(u, k, pre, post) + D[:, None].to(dtype) * x * post

    return run


def forward_backward(impl, inputs):
    """A closure running impl's forward and backward on leaf copies of inputs, with one random output gradient."""
    leaves = [t.detach().requires_grad_() for t in inputs]
    grad_y = torch.randn_like(inputs[0])  # the output has u's shape

    def step():
        for t in leaves:
            t.grad = None
        impl(*leaves).backward(grad_y)

    return step


def measure(impl, inputs, warmup, iters, device) -> tuple[float, float]:
    fwd_ms = time_ms(lambda: impl(*inputs), warmup, iters, device)
    return fwd_ms, time_ms(forward_backward(impl, inputs), warmup, iters, device)


def kernel_times(fn, device: str, calls: int) -> list[tuple[str, float]]:
    """(name, ms per call) of each CUDA kernel (on the CPU: each op, by self time) over ``calls`` calls of fn, after
    one call outside the profile (compiles, caches), largest first."""
    activity = torch.profiler.ProfilerActivity.CUDA if device == "cuda" else torch.profiler.ProfilerActivity.CPU
    fn()
    with torch.profiler.profile(activities=[activity]) as profile:
        for _ in range(calls):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
    attribute = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    rows = [(event.key, getattr(event, attribute) / 1e3 / calls) for event in profile.key_averages()]
    return sorted((row for row in rows if row[1] > 0), key=lambda row: -row[1])


def run_case(name, impl, inputs, args, device, dtype_name, length) -> Result:
    """Times one implementation; out-of-memory and unsupported sizes become a note in the table, not a crash."""
    try:
        fwd_ms, fwd_bwd_ms = measure(impl, inputs, args.warmup, args.iters, device)
    except (torch.cuda.OutOfMemoryError, NotImplementedError, RuntimeError) as error:
        print(f"{dtype_name} L={length} {name} failed: {type(error).__name__}: {error}", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
        return Result(dtype_name, length, name, None, None, type(error).__name__)
    return Result(dtype_name, length, name, fwd_ms, fwd_bwd_ms)


def plan_constants(values: dict) -> contextlib.AbstractContextManager:
    """triton_fftconv's plan constants (module globals that plan_1d reads at each call) set to values while it lasts."""
    return mock.patch.multiple(triton_fftconv, **values) if values else contextlib.nullcontext()


def triton_plans(length: int, args) -> dict[str, dict]:
    """The Triton rows at this length and the plan constants each sets: the default plan (none), then the SWEEP
    settings asked for."""
    names = ["triton"] + [f"triton, {name}" for name, at, _ in SWEEP if args.sweep and length in at]
    return {name: SETTINGS[name] for name in names}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected).norm() / expected.norm()).item()


def float64_errors(conv, leaves: list[torch.Tensor]) -> dict[str, float]:
    """Relative L2 errors of the Triton y, grad u and grad k of ``conv(*leaves, backend)`` against the same call in
    float64 with the torch backend on the first CHECK_CHANNELS channels (leaves: u (B, C, ...), k, then the rest;
    tensors with u's rank are sliced on their channel axis, the others on their first)."""
    grad_y = torch.randn_like(leaves[0])
    y = conv(*leaves, backend="triton")
    grad_u, grad_k = torch.autograd.grad(y, leaves[:2], grad_y)
    c, rank = CHECK_CHANNELS, leaves[0].ndim
    reference = [(t[:, :c] if t.ndim == rank else t[:c]).detach().double().requires_grad_() for t in leaves]
    y_ref = conv(*reference, backend="torch")
    ref_u, ref_k = torch.autograd.grad(y_ref, reference[:2], grad_y[:, :c].double())
    pairs = {"y": (y[:, :c], y_ref), "du": (grad_u[:, :c], ref_u), "dk": (grad_k[:c], ref_k)}
    return {name: relative_error(actual.detach(), expected.detach()) for name, (actual, expected) in pairs.items()}


def check_triton(batch, channels, dtype_name, length, values: dict, device: str = "cuda") -> dict[str, float]:
    """float64_errors of the gated 1D convolution under the plan constants ``values``, on fresh random inputs of the
    benchmark's full size, so that it also compiles every kernel the timed calls launch."""
    leaves = [t.requires_grad_() for t in make_inputs(batch, channels, length, DTYPES[dtype_name], device)]
    with plan_constants(values):
        return float64_errors(lambda *t, backend: conv_with_backend(backend)(*t), leaves)


def check_triton_2d(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor) -> dict[str, float]:
    """float64_errors of fftconv2d on a 2D row's own inputs (it also compiles the kernels the timed calls launch)."""
    return float64_errors(fftconv2d, [t.detach().requires_grad_() for t in (u, k, D)])


def check_row(batch, channels, dtype_name, length, name, device: str = "cuda") -> dict[str, float] | str:
    """check_triton for the row ``name`` (in a worker process too): the errors, or why it could not run."""
    try:
        return check_triton(batch, channels, dtype_name, length, SETTINGS[name], device)
    except (torch.cuda.OutOfMemoryError, NotImplementedError, RuntimeError) as error:
        return f"{type(error).__name__} (process {os.getpid()}): {str(error)[:200]}"
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()  # a worker lives on for other rows


def check_in_parallel(args, device: str = "cuda") -> dict[tuple, dict[str, float] | str]:
    """check_row of every Triton row in --compile-workers processes; the largest rows alternate with the smallest,
    so that few of the largest hold GPU memory at once."""
    rows = sorted(
        (
            (dtype_name, length, name)
            for dtype_name in args.dtypes
            for length in args.lengths
            for name in triton_plans(length, args)
        ),
        key=lambda row: row[1],
    )
    order = [row for pair in zip(rows[::-1], rows, strict=True) for row in pair][: len(rows)]
    print(f"checking (and compiling) {len(order)} Triton rows in {args.compile_workers} processes", flush=True)
    start = time.perf_counter()
    checks = {}
    spawn = multiprocessing.get_context("spawn")  # CUDA does not survive fork
    with concurrent.futures.ProcessPoolExecutor(args.compile_workers, mp_context=spawn) as pool:
        futures = {pool.submit(check_row, args.batch, args.channels, *row, device): row for row in order}
        for future in concurrent.futures.as_completed(futures):
            checks[futures[future]] = future.result()
            print(f"checked {futures[future]}: {checks[futures[future]]}", flush=True)
    print(f"checked {len(checks)} rows in {time.perf_counter() - start:.0f} s", flush=True)
    return checks


def triton_case(name, inputs, args, device, dtype_name, length, check) -> Result:
    """The Triton row of the plan that plan_1d gives now: its model alone without a GPU; on one, its check (run here
    unless a worker ran it, or ran out of memory beside the others) and, if that passed, its times."""
    model = Model.of(args.batch, length, DTYPES[dtype_name])
    about = f"{model.variant}, {model.precision}"
    if device != "cuda":
        return Result(dtype_name, length, name, None, None, f"{about}, no GPU", model)
    if check is None or (isinstance(check, str) and check.startswith("OutOfMemoryError")):
        check = check_row(args.batch, args.channels, dtype_name, length, name)
    if isinstance(check, str):  # not timed: a kernel that faulted could leave this process's CUDA context broken
        return Result(dtype_name, length, name, None, None, f"{about}, check failed: {check}", model)
    result = run_case(name, conv_with_backend("triton"), inputs, args, device, dtype_name, length)
    result.note = ", ".join(filter(None, (about, result.note)))
    result.model, result.errors = model, check
    if args.kernel_times and name == "triton" and result.fwd_bwd_ms is not None:
        result.kernels = kernel_times(forward_backward(conv_with_backend("triton"), inputs), device, args.iters)
        result.note += "" if result.kernels else ", the profiler recorded no kernels"
    return result


def benchmark(args, device, report) -> list[Result]:
    """Every 1D row; ``report(results)`` after each one."""
    checks = check_in_parallel(args, device) if device == "cuda" and args.compile_workers else {}
    results = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for length in args.lengths:
            plans = triton_plans(length, args)
            others = {"torch": conv_with_backend("torch"), "flashfftconv": flashfftconv_impl(length, dtype, device)}
            names = ["torch", *plans] + ["flashfftconv"] * (others["flashfftconv"] is not None)
            try:
                inputs = make_inputs(args.batch, args.channels, length, dtype, device)
            except torch.cuda.OutOfMemoryError:
                results.extend(Result(dtype_name, length, name, None, None, "OutOfMemoryError") for name in names)
                continue
            for name in names:
                if name in plans:
                    with plan_constants(plans[name]):
                        check = checks.get((dtype_name, length, name))
                        results.append(triton_case(name, inputs, args, device, dtype_name, length, check))
                else:
                    results.append(run_case(name, others[name], inputs, args, device, dtype_name, length))
                print(f"{dtype_name} L={length} {name}: {results[-1]}", flush=True)
                report(results)
            del inputs
    return results


def benchmark_2d(args, device, report) -> list[Result]:
    """Hyena-ISO's 2D convolutions: u (B, C, H, W), centred k (C, 2H-1, 2W-1), skip D, no gates; ``report(results)``
    after each row."""
    results = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for side in args.sizes_2d:
            u = torch.randn(args.batch_2d, args.channels_2d, side, side, device=device, dtype=dtype)
            k = torch.randn(args.channels_2d, 2 * side - 1, 2 * side - 1, device=device) / side
            D = torch.randn(args.channels_2d, device=device)
            model = Model.of_2d(args.batch_2d, side, dtype)
            for backend in ("torch", "triton"):

                def impl(u, k, D, backend=backend):
                    return fftconv2d(u, k, D, backend=backend)

                if backend == "torch":
                    result = run_case(backend, impl, (u, k, D), args, device, dtype_name, side)
                elif device != "cuda":  # the model alone, as in 1D
                    result = Result(dtype_name, side, backend, None, None, f"{model.variant}, no GPU", model)
                else:
                    result = triton_case_2d(impl, (u, k, D), args, device, dtype_name, model)
                results.append(result)
                print(f"2D {dtype_name} {side}x{side} {backend}: {results[-1]}", flush=True)
                report(results)
    return results


def triton_case_2d(impl, inputs, args, device: str, dtype_name: str, model: Model) -> Result:
    """A 2D Triton row (on the GPU; the interpreter in the tests): its float64 check and, if that ran, its times (as
    triton_case in 1D)."""
    side = inputs[0].shape[-1]
    try:
        errors = check_triton_2d(*inputs)
    except (torch.cuda.OutOfMemoryError, NotImplementedError, RuntimeError) as error:
        note = f"{model.variant}, check failed: {type(error).__name__}: {str(error)[:200]}"
        return Result(dtype_name, side, "triton", None, None, note, model)
    result = run_case("triton", impl, inputs, args, device, dtype_name, side)
    result.note, result.model, result.errors = ", ".join(filter(None, (model.variant, result.note))), model, errors
    return result


def markdown_table_2d(results: list[Result], args) -> str:
    reference = {(r.dtype, r.length): r for r in results if r.impl == "torch"}
    lines = [
        f"2D (Hyena-ISO): B={args.batch_2d} C={args.channels_2d}, ungated, skip term.",
        "",
        "| dtype | H x W | impl | fwd ms | fwd+bwd ms | fwd speedup | fwd+bwd speedup | model FLOP/pt fwd, fwd+bwd "
        "| model B/elt fwd, fwd+bwd | roofline H100 ms fwd, fwd+bwd | roofline H200 ms fwd, fwd+bwd "
        "| rel. error y, du, dk vs float64 |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ref = reference[(r.dtype, r.length)]
        speedups = [
            None if mine is None or base is None else base / mine
            for mine, base in ((r.fwd_ms, ref.fwd_ms), (r.fwd_bwd_ms, ref.fwd_bwd_ms))
        ]
        lines.append(
            f"| {r.dtype} | {r.length} x {r.length} | {r.impl}{' (' + r.note + ')' if r.note else ''} | "
            f"{fmt(r.fwd_ms, '{:.3f}')} | {fmt(r.fwd_bwd_ms, '{:.3f}')} | {fmt(speedups[0], '{:.2f}x')} | "
            f"{fmt(speedups[1], '{:.2f}x')} | {model_cells(r.model, args.batch_2d * args.channels_2d * r.length**2)} | "
            f"{', '.join(f'{e:.1e}' for e in r.errors.values()) if r.errors else ''} |"
        )
    return "\n".join(lines)


def floor_ms(result: Result, args, bandwidth: float, tensors: int) -> float:
    element_size = torch.tensor([], dtype=DTYPES[result.dtype]).element_size()
    return tensors * args.batch * args.channels * result.length * element_size / bandwidth


def fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def markdown_table(results: list[Result], args, bandwidth: float | None) -> str:
    reference = {(r.dtype, r.length): r for r in results if r.impl == "torch"}
    lines = [
        "| dtype | L | impl | fwd ms | fwd+bwd ms | fwd speedup | fwd+bwd speedup | fwd HBM floor "
        "| fwd+bwd HBM floor | model FLOP/pt fwd, fwd+bwd | model B/elt fwd, fwd+bwd "
        "| roofline H100 ms fwd, fwd+bwd | roofline H200 ms fwd, fwd+bwd | rel. error y, du, dk vs float64 |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    elements = args.batch * args.channels
    for r in results:
        ref = reference[(r.dtype, r.length)]
        speedups = [
            None if mine is None or base is None else base / mine
            for mine, base in ((r.fwd_ms, ref.fwd_ms), (r.fwd_bwd_ms, ref.fwd_bwd_ms))
        ]
        floors = [
            None if bandwidth is None or ms is None else floor_ms(r, args, bandwidth, tensors) / ms
            for ms, tensors in ((r.fwd_ms, FWD_TENSORS), (r.fwd_bwd_ms, FWD_BWD_TENSORS))
        ]
        lines.append(
            f"| {r.dtype} | {r.length} | {r.impl}{' (' + r.note + ')' if r.note else ''} | {fmt(r.fwd_ms, '{:.3f}')} | "
            f"{fmt(r.fwd_bwd_ms, '{:.3f}')} | {fmt(speedups[0], '{:.2f}x')} | {fmt(speedups[1], '{:.2f}x')} | "
            f"{fmt(floors[0], '{:.0%}')} | {fmt(floors[1], '{:.0%}')} | {model_cells(r.model, elements * r.length)} | "
            f"{', '.join(f'{e:.1e}' for e in r.errors.values()) if r.errors else ''} |"
        )
    return "\n".join(lines)


def model_cells(model: Model | None, elements: int) -> str:
    """The model's four table cells (empty for rows without a model)."""
    if model is None:
        return " | | |"
    rooflines = [
        ", ".join(f"{model.roofline_ms(device, elements, backward):.3g}" for backward in (False, True))
        for device in BANDWIDTHS
    ]
    return (
        f"{model.fwd_flop:.0f}, {model.fwd_bwd_flop:.0f} | {model.fwd_bytes:.1f}, {model.fwd_bwd_bytes:.1f} | "
        f"{rooflines[0]} | {rooflines[1]}"
    )


def plot(results: list[Result], dtypes: list[str], path: pathlib.Path) -> None:
    fig, axes = subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False)
    for ax, dtype_name in zip(axes[0], dtypes, strict=True):
        for impl in dict.fromkeys(r.impl for r in results):
            rows = [r for r in results if r.dtype == dtype_name and r.impl == impl and r.fwd_ms is not None]
            if not rows:  # Triton without a GPU: model only
                continue
            lengths = [r.length for r in rows]
            ax.plot(lengths, [r.fwd_ms for r in rows], marker="o", label=f"{impl} fwd")
            ax.plot(lengths, [r.fwd_bwd_ms for r in rows], marker="s", linestyle="--", label=f"{impl} fwd+bwd")
        ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="ms", title=dtype_name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def kernel_table(results: list[Result], top: int = 8) -> str:
    """The largest kernels of each row's profiled forward+backward, with their share of its device time."""
    lines = [
        "Device time per kernel, one forward+backward (torch.profiler, mean over --iters calls):",
        "",
        "| dtype | L | impl | kernel | ms | share |",
        "| --- | ---: | --- | --- | ---: | ---: |",
    ]
    for r in results:
        total = sum(ms for _, ms in r.kernels or ())
        lines += [
            f"| {r.dtype} | {r.length} | {r.impl} | {name[:60]} | {ms:.3f} | {ms / total:.0%} |"
            for name, ms in (r.kernels or ())[:top]
        ]
    return "\n".join(lines)


def write_report(args, header: str, bandwidth: float | None, results: list[Result], results_2d: list[Result]) -> str:
    """bench_fftconv.md from the rows so far; returns its tables."""
    table = markdown_table(results, args, bandwidth)
    if any(r.kernels for r in results):
        table += "\n\n" + kernel_table(results)
    if results_2d:
        table += "\n\n" + markdown_table_2d(results_2d, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_fftconv.md").write_text(f"# FFT long convolution benchmark\n\n{header}\n\n{table}\n")
    return table


def main() -> None:
    args = parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        header = f"GPU: {torch.cuda.get_device_name()}; B={args.batch} C={args.channels}, gated, CUDA-event timing."
        bandwidth = copy_bandwidth(device, args.warmup, args.iters)
        header += f" Device-to-device copy bandwidth: {bandwidth * 1e3 / 1e9:.0f} GB/s."
    else:
        header = (
            f"NO CUDA DEVICE: only the torch reference was timed, on the CPU (wall clock), B={args.batch} "
            f"C={args.channels}, gated. Triton / FlashFFTConv columns and HBM-floor fractions need a GPU."
        )
        bandwidth = None
    print(header, flush=True)
    # 2D first: a few short rows, kept if a capped run (gpu_check.py) stops in the long 1D section
    results_2d = []
    if args.sizes_2d:
        results_2d = benchmark_2d(args, device, lambda rows: write_report(args, header, bandwidth, [], rows))
    results = benchmark(args, device, lambda rows: write_report(args, header, bandwidth, rows, results_2d))
    print(write_report(args, header, bandwidth, results, results_2d))
    plot(results, args.dtypes, args.out / "bench_fftconv.png")
    print(f"wrote {args.out / 'bench_fftconv.md'} and {args.out / 'bench_fftconv.png'}")


if __name__ == "__main__":
    main()
