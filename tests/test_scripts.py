"""Smoke runs of the comparison and benchmark scripts at tiny sizes: they run end to end and write their outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_bench_fftconv_model_counts_the_zero_padding_skip():
    """The FLOP model halves the first stage (and the inverse's last) where the kernels skip the zero padding."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hv_testing import load_script

    from hyena_vision.ops import triton_fftconv

    transform_flop = load_script("eval/bench_fftconv.py").transform_flop
    # causal L = 2048: 64 x 64 grid, radix-2 over 32-point factors, half rows; a packed row pays half of (4 * 32 for
    # the first stage on half the rows + 8 * 32 + 10 for the butterflies + 6 for the twiddles); whole rows: 8 * 32
    grid = triton_fftconv.plan_1d(2048, 2048, True)
    assert transform_flop(grid) == (4 * 32 + 8 * 32 + 10 + 6) / 2
    assert transform_flop(triton_fftconv.plan_1d(2100, 63, False)) == (8 * 32 + 8 * 32 + 10 + 6) / 2  # > half the grid
    # causal L = 1024: 32 x 64 grid, a dense 32-point factor on the half rows, a radix-2 step on the 64-point side
    assert transform_flop(triton_fftconv.plan_1d(1024, 1024, True)) == (4 * 32 + 8 * 32 + 5 + 6) / 2
    # causal L = 16K: fused-L2, P = 32 half columns (2 * 32) + 6, and 17 of 32 column-spectrum rows take 1024-point
    # row FFTs on 32 x 32 (8 * 16 + 8 * 16 + 10 + 6 per point)
    assert transform_flop(triton_fftconv.plan_1d(16384, 16384, True)) == 2 * 32 + 6 + 272 * 17 / 32
    # causal L = 30K: multi-pass, N = 64K as P = 64 direct columns (a packed pair's complex columns, half in the
    # forward pass only: 6 * 64 + 6 on average) and Q = 1024-point rows (272); per row half of a pair's transform; a
    # lone filter row pays whole complex columns (8 * 64). L = 1M: N = 2M as 64 x 64 four-step columns (radix-2 over
    # 32-point factors: half 4 * 32 + 8 * 32 + 10, + 12 for the two twiddles) and 512-point rows on 16 x 32 (8 * 16 +
    # 8 * 32 + 6); a lone row's real columns 4 * 32 as well
    multipass = triton_fftconv.plan_1d(30_000, 30_000, True)
    assert transform_flop(multipass) == (6 * 64 + 6 + 272) / 2
    assert transform_flop(multipass, packed=False) == 8 * 64 + 6 + 272
    four_step = triton_fftconv.plan_1d(1 << 20, 1 << 20, True)
    assert transform_flop(four_step) == (4 * 32 + 8 * 32 + 10 + 12 + 8 * 16 + 8 * 32 + 6) / 2
    assert transform_flop(four_step, packed=False) == 4 * 32 + 8 * 32 + 10 + 12 + 8 * 16 + 8 * 32 + 6
    # 2D 32 x 32 images: 64 x 64 grid, radix-2 on both sides, no twiddles; the image fills half the rows of half the
    # columns (first stage 4 * 32 / 2), the second stage contracts half its columns (8 * 32 / 2). 2D 64 x 64: parity
    # classes of 64 x 64, each a whole complex transform and a twiddle multiply
    assert transform_flop(triton_fftconv.plan_2d(32, 32, 63, 63)) == (2 * 32 + 4 * 32 + 10) / 2
    parity = triton_fftconv.plan_2d(64, 64, 127, 127)
    assert parity.parity and transform_flop(parity) == (8 * 32 + 8 * 32 + 10 + 6) / 2
    assert transform_flop(parity, packed=False) == 4 * 32 + 8 * 32 + 10 + 6


def test_bench_fftconv_cpu_runs_reference_only(tmp_path, device):
    args = "--lengths 64 1024 --batch 1 --channels 4 --dtypes fp32 --warmup 1 --iters 2 --sweep --kernel-times".split()
    args += ["--compile-workers", "2"]  # GPU-only work: accepted, and nothing of it runs on the CPU
    args += "--sizes-2d 6 --batch-2d 2 --channels-2d 3".split()
    out = run_script("eval/bench_fftconv.py", *args, "--out", str(tmp_path))
    lines = (tmp_path / "bench_fftconv.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith("| fp32") and " x " not in line.split("|")[2]]
    two_d = [line.split("|")[2:] for line in lines if "| 6 x 6 |" in line]  # the 2D section: torch, the Triton model
    assert [row[:2] for row in two_d] == [[" 6 x 6 ", " torch "], [" 6 x 6 ", " triton (fused-register, no GPU) "]]
    assert float(two_d[1][6].split(",")[0]) > 0 and two_d[1][7].split(",")[0].strip() == "8.0"  # fp32 u, y
    assert [row.split("|")[2].strip() for row in rows if "| torch |" in row] == ["64", "1024"]
    assert (tmp_path / "bench_fftconv.png").stat().st_size > 0
    triton_rows = {row.split("|")[2].strip(): row.split("|")[3:] for row in rows if "| triton (" in row}
    assert list(triton_rows) == ["64", "1024"]
    # the sweep's setting for L = 1K gets its own row there, with the default plan's model (same grid)
    (sweep_row,) = [row.split("|")[2:] for row in rows if "| triton, 8 warps (fused-register" in row]
    assert sweep_row[0].strip() == "1024" and sweep_row[8:10] == triton_rows["1024"][7:9]
    # model at L = 64: a 16 x 16 grid (4 points per output point); two rows share a complex transform, (8*16 + 8*16
    # + 6) FLOP per point, but B = 1 leaves the row alone with zeros, so it pays all of it; forward = 2 such
    # transforms + 12 per point for the spectral product + the filter's real transform (4*16 + 8*16 + 6 per point)
    cells = triton_rows["64"]
    assert cells[7].split(",")[0].strip() == str(2 * 1048 + 12 * 4 + 792)
    assert cells[8].split(",")[0].strip() == "16.0"  # fp32 u, pre, post read, y written
    h100, h200 = (float(cell.split(",")[1]) for cell in cells[9:11])
    assert 0 < h200 <= h100
    if device == "cpu":
        assert "NO CUDA DEVICE: only the torch reference was timed" in out
        assert all("| torch |" in row or "no GPU" in row for row in rows)
        assert all(cell.strip() == "n/a" for cell in cells[1:3])
        assert not any(line.startswith("Device time per kernel") for line in lines)  # no Triton call was profiled


def test_bench_fftconv_kernel_times_profile_a_forward_backward():
    """--kernel-times' profile, on the CPU path (ops by self CPU time): positive times, largest first, and a table
    whose shares add up to the whole."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hv_testing import load_script

    bench = load_script("eval/bench_fftconv.py")
    inputs = bench.make_inputs(2, 3, 300, bench.DTYPES["fp32"], "cpu")
    times = bench.kernel_times(bench.forward_backward(bench.conv_with_backend("torch"), inputs), "cpu", 2)
    assert times and all(ms > 0 for _, ms in times) and [ms for _, ms in times] == sorted(ms for _, ms in times)[::-1]
    assert any("fft" in name for name, _ in times)  # the transforms themselves are among the ops
    result = bench.Result("fp32", 300, "torch", 1.0, 2.0, kernels=times)
    rows = [line for line in bench.kernel_table([result], top=len(times)).splitlines() if line.startswith("| fp32")]
    assert len(rows) == len(times)
    assert abs(sum(float(row.split("|")[6].strip().rstrip("%")) for row in rows) - 100) <= len(rows)  # rounding


def test_compare_cifar10_tiny(tmp_path, shared_data):
    out_dir = tmp_path / "cmp"
    data = ["--data", str(shared_data / "cifar10-jpg.tar.gz"), "--out", str(out_dir)]
    tiny = "data.train_subset=40 data.val_subset=20 train.batch_size=20 train.epochs=1"
    tiny += " model.kwargs.embed_dim=8 model.kwargs.depth=1"
    run_script("eval/compare_cifar10.py", "--budget", "demo", "--models", "hyena_iso", "vit_iso", *data, *tiny.split())
    results = json.loads((out_dir / "results.json").read_text())
    text = json.dumps(results)
    assert "hyena_iso_cifar" in text and "vit_iso_cifar" in text
    table = (out_dir / "results.md").read_text()
    assert table.count("\n|") >= 3 and (out_dir / "accuracy.png").stat().st_size > 0


def test_compare_lm_tiny(tmp_path, shared_data):
    out_dir = tmp_path / "lm"
    tiny = (
        "model.d_model=16 model.n_layer=1 model.d_mlp=32 model.l_max=16 model.hyena.filter_cfg.filter_order=8 "
        "model.gpt.n_head=2 train.block_size=16 train.batch_size=4 train.steps=4 train.eval_every=2 "
        "train.eval_batches=1 train.log_every=2 optim.warmup_steps=1"
    ).split()
    tiny += [f"data.text={shared_data / 'tinyshakespeare.txt'}", f"data.cache_dir={tmp_path / 'cache'}"]
    run_script("eval/compare_lm.py", "--config", "lm/shakespeare_char_cpu", "--out", str(out_dir), *tiny)
    table = next(out_dir.glob("*.md")).read_text()
    assert "hyena" in table and "gpt" in table and list(out_dir.glob("*.png"))
    for arch in ("hyena", "gpt"):  # a finished run is reused, not retrained or refused
        assert (out_dir / arch / "summary.json").is_file()
    run_script("eval/compare_lm.py", "--config", "lm/shakespeare_char_cpu", "--out", str(out_dir), *tiny)
