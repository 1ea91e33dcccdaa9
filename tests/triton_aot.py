"""Ahead-of-time compilation of every Triton FFT-convolution kernel launch for sm_90 (H100), without a GPU.

Run as a script, in a process WITHOUT TRITON_INTERPRET (with it, triton.jit returns interpreter objects):

    python tests/triton_aot.py REPORT.json

1. Record: every kernel in hyena_vision.ops._triton_kernels is replaced by a recorder, and the public
   triton_fftconv.fftconv / fftconv2d run forward and backward (autograd) on CPU tensors of real lengths. The launchers
   look the kernels up in that module at each call, so each `kernel[grid](*args, **kwargs)` reaches the recorder,
   which binds the arguments with Triton's own launch binder for the sm_90 backend (the signature, specializations,
   constexprs and options a real launch would compile with) and executes nothing: outputs stay uninitialized.
2. Compile each distinct launch once for GPUTarget("cuda", 90, 32) (ptxas included) and write one JSON record per
   launch to REPORT.json: kernel, constexprs, pointer dtypes, num_warps, maxnreg, ptxas registers/spills, shared
   memory, whether the PTX has tensor-core instructions (mma / wgmma), or the compile error.
"""

import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import re
import sys
import time
from unittest import mock

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported

import torch  # noqa: E402
import triton  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

from hyena_vision.ops import _triton_kernels as kernels  # noqa: E402
from hyena_vision.ops import triton_fftconv  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
BATCH, CHANNELS = 2, 16


class LaunchRecorder:
    """Stands in for a JITFunction: `recorder[grid](*args, **kwargs)` stores what a real launch would compile."""

    def __init__(self, kernel: JITFunction, backend, launches: dict):
        self.kernel = kernel
        self.backend = backend
        self.launches = launches
        self.binder = create_function_from_signature(kernel.signature, kernel.params, backend)

    def __getitem__(self, grid):
        return self.record

    def record(self, *args, **kwargs) -> None:
        # the same steps as JITFunction.run before it compiles
        kwargs = {
            "debug": knobs.runtime.debug,
            "instrumentation_mode": knobs.compilation.instrumentation_mode,
            **kwargs,
        }
        bound_args, specialization, options = self.binder(*args, **kwargs)
        options, signature, constexprs, attrs = self.kernel._pack_args(
            self.backend, kwargs, bound_args, specialization, options
        )
        launch = (self.kernel.__name__, signature, constexprs, attrs, options)
        self.launches.setdefault(repr(launch), launch)


def _inputs(shape, dtype, gated, skip, kshape):
    """u, k, D, pre_gate, post_gate (k and D fp32 parameters; gates in u's dtype), all requiring grad."""
    u = torch.randn(shape, dtype=dtype)
    k = torch.randn(CHANNELS, *kshape)
    D = torch.randn(CHANNELS) if skip else None
    pre, post = (torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)) if gated else (None, None)
    return [t.requires_grad_() if t is not None else None for t in (u, k, D, pre, post)]


def _forward_backward(y: torch.Tensor, inputs) -> None:
    torch.autograd.grad(y, [t for t in inputs if t is not None], torch.randn_like(y))


SPLIT_BACKWARD = {"MERGED_BACKWARD": False}
BF16_GATED = (torch.bfloat16, True, True)  # (u and gate dtype, gated, D): every HAS_* flag True, bf16 pointers
FP32_PLAIN = (torch.float32, False, False)  # every HAS_* flag False, fp32 pointers
# (name, 1D length or 2D (height, width), causal, input configs, SM count the launchers assume for these CPU
# tensors, triton_fftconv constants set while it runs): each plan variant at a real size. 8 SMs give the
# fused-register forward batch tiles of 2 rows (as at real sizes, where B x C far exceeds the SMs; 132 would give
# this batch tiles of 1) and the backwards one batch slice per channel (as when C >= SMs); 64 SMs split the fused-L2
# backward's batch in 2 slices (as when C < SMs). The default set (~3 min on 2 cores) compiles every kernel at every
# size these plans use; HYENA_AOT_FULL=1 adds the other input config of each scenario (the full cross product, about
# twice as long).
SCENARIOS = (
    ("1D causal L=512", 512, True, (BF16_GATED,), 8, {}),  # square 32 x 32 grid: radix-2 steps over 16-point DFTs
    # 32 x 64: a dense 32-point side, radix-2 on the 64-point one
    ("1D causal L=1024", 1024, True, (BF16_GATED,), 8, {}),
    ("1D causal L=2048", 2048, True, (BF16_GATED,), 8, {}),  # 64 x 64 grid with twiddles: radix-2 over 32-point DFTs
    ("1D bidirectional L=1024", 1024, False, (BF16_GATED,), 8, {}),  # same kernels as causal: checks the path only
    ("1D causal L=4000", 4000, True, (BF16_GATED,), 8, {}),  # fused-L2, P = 16 (whole columns, 16 x 32 rows)
    ("1D causal L=16384", 16384, True, (FP32_PLAIN,), 8, {}),  # fused-L2, P = 32 (half columns, 32 x 32 rows)
    ("1D causal L=16384, 2 batch slices", 16384, True, (FP32_PLAIN,), 64, {}),
    ("1D causal L=20000", 20000, True, (BF16_GATED,), 8, {}),  # direct column DFTs (P = 64)
    ("1D causal L=300000", 300000, True, (FP32_PLAIN,), 8, {}),  # four-step column FFTs
    ("1D causal L=1000000", 1_000_000, True, (BF16_GATED,), 8, {}),  # four-step columns on 64 x 64, half columns
    ("2D 32x32", (32, 32), False, (BF16_GATED,), 8, {}),  # no gates: only D follows the config
    # 32 x 64 grid, radix-2 on its 64 columns, half rows and columns
    ("2D 16x32", (16, 32), False, (BF16_GATED,), 8, {}),
    ("2D 64x64", (64, 64), False, (BF16_GATED,), 8, {}),  # 128 x 128 grid in parity classes of 64 x 64
    ("2D 16x64", (16, 64), False, (FP32_PLAIN,), 8, {}),  # 32 x 128 grid in parity classes of 16 x 64
    # the fused-register backward's split form (a bench_fftconv --sweep setting): per-row gradients in their own kernel
    ("1D causal L=512, split backward", 512, True, (BF16_GATED,), 8, SPLIT_BACKWARD),
    ("1D causal L=1024, split backward", 1024, True, (BF16_GATED,), 8, SPLIT_BACKWARD),
    ("1D causal L=2048, split backward", 2048, True, (BF16_GATED,), 8, SPLIT_BACKWARD),
    ("2D 32x32, split backward", (32, 32), False, (BF16_GATED,), 8, SPLIT_BACKWARD),
    ("2D 16x32, split backward", (16, 32), False, (BF16_GATED,), 8, SPLIT_BACKWARD),
    ("2D 64x64, split backward", (64, 64), False, (BF16_GATED,), 8, SPLIT_BACKWARD),
)


def record_launches(full: bool) -> tuple[list, list[str]]:
    """Runs the scenarios forward and backward through the recorders; returns the distinct launches and the plans."""
    backend = make_backend(TARGET)
    launches: dict = {}
    for name, value in vars(kernels).items():
        if isinstance(value, JITFunction) and name.endswith("_kernel"):
            setattr(kernels, name, LaunchRecorder(value, backend, launches))
    plans = []
    for name, size, causal, configs, sms, constants in SCENARIOS:
        triton_fftconv.DEFAULT_SMS = sms
        for dtype, gated, skip in (BF16_GATED, FP32_PLAIN) if full else configs:
            with mock.patch.multiple(triton_fftconv, **constants) if constants else contextlib.nullcontext():
                if isinstance(size, tuple):
                    u, k, D, _, _ = inputs = _inputs((BATCH, CHANNELS, *size), dtype, False, skip, size)
                    y = triton_fftconv.fftconv2d(u, k, D)
                    plan = triton_fftconv.plan_2d(*size, *size)
                else:
                    u, k, D, pre, post = inputs = _inputs((BATCH, CHANNELS, size), dtype, gated, skip, (size,))
                    y = triton_fftconv.fftconv(u, k, D, causal=causal, pre_gate=pre, post_gate=post)
                    plan = triton_fftconv.plan_1d(size, size, causal)
                _forward_backward(y, inputs)
        plans.append(f"{name}: {triton_fftconv.variant(plan)}, grid {plan.n1} x {plan.n2}")
    return list(launches.values()), plans


_LAUNCHES: list = []  # filled before the worker processes fork


def compile_launch(index: int) -> dict:
    """Compiles _LAUNCHES[index] for sm_90; ptxas's -v report gives registers and spills."""
    name, signature, constexprs, attrs, options = _LAUNCHES[index]
    kernel = getattr(kernels, name).kernel
    parameters = list(signature)
    record = {
        "kernel": name,
        "constexprs": {parameters[path[0]]: value for path, value in constexprs.items()},
        "pointers": sorted({dtype for dtype in signature.values() if dtype.startswith("*")}),
        "num_warps": options.num_warps,
        "maxnreg": options.maxnreg,
    }
    knobs.nvidia.dump_ptxas_log = True  # make_cubin prints ptxas's -v output
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(
                ASTSource(kernel, signature, constexprs, attrs), target=TARGET, options=options.__dict__
            )
    except Exception as error:  # noqa: BLE001 - every compile failure is reported, not raised
        return {**record, "error": f"{type(error).__name__}: {error}"}
    text = log.getvalue()
    registers = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return {
        **record,
        "registers": int(registers.group(1)) if registers else None,
        "spill_stores": int(spills.group(1)) if spills else None,
        "spill_loads": int(spills.group(2)) if spills else None,
        "shared": compiled.metadata.shared,
        "tensor_core": bool(re.search(r"\b(wgmma|mma)\.", compiled.asm["ptx"])),  # mma.sync / wgmma.mma_async
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(report_path: str) -> None:
    start = time.perf_counter()
    _LAUNCHES[:], plans = record_launches(full=os.environ.get("HYENA_AOT_FULL") == "1")
    recorded = time.perf_counter() - start
    workers = max(1, min(os.cpu_count() or 1, len(_LAUNCHES)))  # compiles are single-threaded: one per core
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        records = list(pool.map(compile_launch, range(len(_LAUNCHES))))
    launched = {launch[0] for launch in _LAUNCHES}
    summary = {
        "plans": plans,
        "never_launched": sorted(name for name in vars(kernels) if name.endswith("_kernel") and name not in launched),
        "record_seconds": round(recorded, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    with open(report_path, "w") as report:
        json.dump({"summary": summary, "launches": records}, report, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
