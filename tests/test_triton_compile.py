"""Every Triton FFT-convolution kernel launch compiles for sm_90 (H100) at real sizes, on a CPU-only machine.

The interpreter tests (test_triton_fftconv) do not enforce real-GPU compile rules (tl.dot tile sizes, dtypes, register
and shared-memory limits). Here tests/triton_aot.py records the launches of the public fftconv / fftconv2d, forward
and backward, for each plan variant and compiles each distinct one ahead of time for GPUTarget("cuda", 90, 32) with
Triton's bundled ptxas. It runs in a subprocess because conftest sets TRITON_INTERPRET in this one. Run with `-s` to
see the table of kernels, registers, spills and shared memory.
"""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

AOT_SCRIPT = pathlib.Path(__file__).with_name("triton_aot.py")
REPO_ROOT = AOT_SCRIPT.parents[1]
MAX_SHARED_BYTES = 227 * 1024  # per block on H100 (opt-in maximum)
REGISTER_FILE = 65536  # 32-bit registers per SM (H100 / H200)


def register_limit(num_warps: int) -> int:
    """Registers per thread a block of num_warps warps can have: the register file shared by its threads, at most
    255 (so 128 at 16 warps, 255 at 8 or fewer)."""
    return min(255, REGISTER_FILE // (32 * num_warps))


def test_register_limit_follows_the_warp_count():
    assert [register_limit(w) for w in (1, 4, 8, 16, 32)] == [255, 255, 255, 128, 64]


def _ptxas_available() -> bool:
    """Triton's CUDA backend is installed and a ptxas is found where Triton looks (bundled, TRITON_PTXAS_PATH, PATH)."""
    spec = importlib.util.find_spec("triton")  # without importing triton into this (interpreter) process
    if spec is None or spec.origin is None:
        return False
    nvidia = pathlib.Path(spec.origin).parent / "backends" / "nvidia"
    if not (nvidia / "compiler.py").is_file():
        return False
    candidates = [nvidia / "bin" / "ptxas", os.environ.get("TRITON_PTXAS_PATH"), shutil.which("ptxas")]
    return any(path and pathlib.Path(path).is_file() for path in candidates)


def _table(launches: list[dict]) -> str:
    rows = [f"{'kernel':<22} {'constexprs':<78} {'pointers':<14} warps regs spill(st/ld) smem  secs mma"]
    for launch in launches:
        constexprs = ",".join(f"{name}={value}" for name, value in launch["constexprs"].items())
        result = (
            launch["error"].splitlines()[0]
            if "error" in launch
            else f"{launch['registers']:>4} {launch['spill_stores']:>6}/{launch['spill_loads']:<6} "
            f"{launch['shared'] // 1024:>3}K {launch['seconds']:>5} {'yes' if launch['tensor_core'] else 'NO'}"
        )
        pointers = ",".join(launch["pointers"])
        rows.append(f"{launch['kernel']:<22} {constexprs:<78} {pointers:<14} {launch['num_warps']:>5} {result}")
    return "\n".join(rows)


def limit_problems(launches: list[dict]) -> list[str]:
    """What breaks the sm_90 rules: registers over the warp count's limit or the launch's maxnreg, any spill (local
    memory), shared memory, DFT products off the tensor cores."""
    problems = []
    for launch in launches:
        name = f"{launch['kernel']} {launch['constexprs']} num_warps={launch['num_warps']}"
        if launch["registers"] is None:
            problems.append(f"{name}: no ptxas report")
            continue
        limit = min(register_limit(launch["num_warps"]), launch["maxnreg"] or 255)  # the launch's own cap too
        if launch["registers"] > limit:
            problems.append(f"{name}: {launch['registers']} registers > {limit}")
        if launch["spill_stores"] or launch["spill_loads"]:
            problems.append(f"{name}: spills {launch['spill_stores']} / {launch['spill_loads']} bytes (stores / loads)")
        if launch["shared"] > MAX_SHARED_BYTES:
            problems.append(f"{name}: {launch['shared']} bytes of shared memory")
        if not launch["tensor_core"]:  # every DFT product is a bf16x3 / tf32x3 tensor-core tl.dot
            problems.append(f"{name}: no tensor-core instruction (mma / wgmma) in its PTX")
    return problems


@pytest.mark.skipif(not _ptxas_available(), reason="Triton's CUDA backend or ptxas not found")
def test_every_kernel_launch_compiles_for_sm90(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRITON_CACHE_DIR": str(tmp_path / "cache")}  # fresh: ptxas runs
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, str(AOT_SCRIPT), str(report_path)], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"triton_aot.py failed:\n{result.stderr[-4000:]}"
    report = json.loads(report_path.read_text())
    summary, launches = report["summary"], report["launches"]
    timing = f"recorded in {summary['record_seconds']} s, {summary['total_seconds']} s in all"
    print("", *summary["plans"], f"{len(launches)} distinct launches, {timing}", _table(launches), sep="\n")

    assert not summary["never_launched"], f"kernels no scenario launches: {summary['never_launched']}"
    failed = [
        f"{launch['kernel']} {launch['constexprs']}: {launch['error']}" for launch in launches if "error" in launch
    ]
    assert not failed, "kernels that do not compile for sm_90:\n" + "\n".join(failed)
    problems = limit_problems(launches)
    assert not problems, "launches over the sm_90 limits:\n" + "\n".join(problems)
