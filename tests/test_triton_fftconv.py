"""Triton FFT long convolution vs independent float64 references (direct convolution) and the torch backend.

Runs on the GPU when there is one, else in the Triton interpreter on the CPU (tiny sizes: the interpreter is slow).
"""

import pytest
import torch
import torch.nn.functional as F

from hyena_vision.ops import fftconv, fftconv2d

pytest.importorskip("triton")  # the kernels' own import errors must fail, not skip
from hyena_vision.ops import triton_fftconv  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 5e-3}
DTYPES = list(TOLERANCE)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return ((actual.double() - expected).norm() / expected.norm()).item()


def direct_conv1d(u, k, D, lag0, pre_gate=None, post_gate=None):
    """float64 direct (no FFT) y = post * (k * x + D x), x = pre * u; k[lag0] is lag 0."""
    x = u.double() if pre_gate is None else u.double() * pre_gate.double()  # (B, C, L)
    klen = k.shape[-1]
    padded = F.pad(x, (klen - 1 - lag0, lag0))  # (B, C, L + klen - 1)
    y = F.conv1d(padded, k.double().flip(-1)[:, None, :], groups=k.shape[0])  # (B, C, L)
    y = y + D.double()[:, None] * x
    return y if post_gate is None else y * post_gate.double()


def direct_conv2d(u, k, D):
    """float64 direct 2D convolution with the centred kernel k (C, 2Mh-1, 2Mw-1)."""
    x = u.double()  # (B, C, H, W)
    kh, kw = k.shape[1:]
    padded = F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, (kh - 1) // 2, (kh - 1) // 2))  # (B, C, H + kh - 1, W + kw - 1)
    y = F.conv2d(padded, k.double().flip(-1, -2)[:, None], groups=k.shape[0])  # (B, C, H, W)
    return y + D.double()[:, None, None] * x


def random_inputs(device, dtype, batch, channels, length, klen, gates):
    u = torch.randn(batch, channels, length, device=device).to(dtype)
    k = torch.randn(channels, klen, device=device) / klen**0.5
    D = torch.randn(channels, device=device)
    pre = torch.randn(batch, channels, length, device=device).to(dtype) if gates else None
    post = torch.randn(batch, channels, length, device=device).to(dtype) if gates else None
    return u, k, D, pre, post


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("length,klen", [(37, 37), (64, 64), (50, 7), (1, 1)])
@pytest.mark.parametrize("gates", [False, True], ids=["plain", "gated"])
def test_causal_forward_matches_float64(device, dtype, length, klen, gates):
    u, k, D, pre, post = random_inputs(device, dtype, 2, 3, length, klen, gates)
    y = fftconv(u, k, D, pre_gate=pre, post_gate=post, backend="triton")
    assert y.shape == u.shape and y.dtype == dtype
    assert relative_error(y, direct_conv1d(u, k, D, 0, pre, post)) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("length,half_width", [(37, 37), (64, 64), (40, 6), (5, 1)])
def test_bidirectional_forward_matches_float64(device, dtype, length, half_width):
    u, k, D, pre, post = random_inputs(device, dtype, 2, 3, length, 2 * half_width - 1, gates=True)
    y = fftconv(u, k, D, causal=False, pre_gate=pre, post_gate=post, backend="triton")
    assert relative_error(y, direct_conv1d(u, k, D, half_width - 1, pre, post)) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,kshape", [((7, 9), (13, 5)), ((8, 8), (15, 15)), ((5, 20), (3, 39))])
def test_2d_forward_matches_float64(device, dtype, shape, kshape):
    u = torch.randn(2, 3, *shape, device=device).to(dtype)
    k = torch.randn(3, *kshape, device=device) / (kshape[0] * kshape[1]) ** 0.5
    D = torch.randn(3, device=device)
    y = fftconv2d(u, k, D, backend="triton")
    assert y.shape == u.shape and y.dtype == dtype
    assert relative_error(y, direct_conv2d(u, k, D)) < TOLERANCE[dtype]


def test_without_skip_matches_torch_backend(device):
    u, k, _, pre, post = random_inputs(device, torch.float32, 3, 2, 33, 33, gates=True)
    expected = fftconv(u, k, pre_gate=pre, post_gate=post, backend="torch")
    assert relative_error(fftconv(u, k, pre_gate=pre, post_gate=post, backend="triton"), expected) < 1e-5


def float64_gradients(forward, inputs, grad_y):
    leaves = [None if t is None else t.detach().double().requires_grad_() for t in inputs]
    forward(*leaves).backward(grad_y.double())
    return [None if t is None else t.grad for t in leaves]


def triton_gradients(forward, inputs, grad_y):
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    forward(*leaves).backward(grad_y)
    return [None if t is None else t.grad for t in leaves]


def skip_gradient_scale(inputs, grad_y) -> torch.Tensor:
    """Per channel, float64 sum over batch and positions of |h x| (h = post * grad_y, x = pre * u): the size of the
    terms of grad_D = sum h x. A channel's sum can cancel to near zero, which makes its plain relative error
    meaningless (a few percent of fresh draws with one channel), so grad_D's error is measured against this."""
    u, pre, post = inputs[0], *(list(inputs[3:]) + [None, None])[:2]
    x = u.double() if pre is None else u.double() * pre.double()
    h = grad_y.double() if post is None else grad_y.double() * post.double()
    return (h * x).abs().sum(dim=tuple(d for d in range(x.ndim) if d != 1))  # (C,)


def assert_gradients_close(inputs, actual, expected, tolerance, grad_y):
    names = ["u", "k", "D", "pre_gate", "post_gate"]
    for name, t, got, want in zip(names, inputs, actual, expected, strict=False):
        if t is None:
            continue
        assert got.dtype == t.dtype, name
        if name == "D":
            error = ((got.double() - want.double()).norm() / skip_gradient_scale(inputs, grad_y).norm()).item()
        else:
            error = relative_error(got, want)
        assert error < tolerance, f"gradient of {name}"


def deterministic_gradients(inputs, grad_y):
    """Gradients of the gated causal triton fftconv from two identical runs under torch.use_deterministic_algorithms
    (which refuses CUDA's index_add_ and other atomics), asserted bit-identical; returns the first run's."""

    def forward(u, k, D, pre, post):
        return fftconv(u, k, D, pre_gate=pre, post_gate=post, backend="triton")

    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = (triton_gradients(forward, inputs, grad_y) for _ in range(2))
    finally:
        torch.use_deterministic_algorithms(deterministic)
    for name, a, b in zip(["u", "k", "D", "pre_gate", "post_gate"], first, second, strict=True):
        assert torch.equal(a, b), name
    return first


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal,length,klen", [(True, 37, 37), (True, 48, 11), (False, 30, 59), (False, 33, 9)])
@pytest.mark.parametrize("gates", [False, True], ids=["plain", "gated"])
def test_1d_gradients_match_float64(device, dtype, causal, length, klen, gates):
    inputs = random_inputs(device, dtype, 3, 2, length, klen, gates)
    grad_y = torch.randn(3, 2, length, device=device).to(dtype)
    lag0 = 0 if causal else (klen - 1) // 2

    def triton_forward(u, k, D, pre, post):
        return fftconv(u, k, D, causal=causal, pre_gate=pre, post_gate=post, backend="triton")

    def reference_forward(u, k, D, pre, post):
        return direct_conv1d(u, k, D, lag0, pre, post)

    actual = triton_gradients(triton_forward, inputs, grad_y)
    expected = float64_gradients(reference_forward, inputs, grad_y)
    assert_gradients_close(inputs, actual, expected, TOLERANCE[dtype], grad_y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_2d_gradients_match_float64(device, dtype, shape=(6, 10), kshape=(7, 19), batch=2, channels=3):
    inputs = (
        torch.randn(batch, channels, *shape, device=device).to(dtype),
        torch.randn(channels, *kshape, device=device) / (kshape[0] * kshape[1]) ** 0.5,
        torch.randn(channels, device=device),
    )
    grad_y = torch.randn(batch, channels, *shape, device=device).to(dtype)
    actual = triton_gradients(lambda u, k, D: fftconv2d(u, k, D, backend="triton"), inputs, grad_y)
    expected = float64_gradients(direct_conv2d, inputs, grad_y)
    assert_gradients_close(inputs, actual, expected, TOLERANCE[dtype], grad_y)


def spy_on_launches(monkeypatch, *names: str) -> dict[str, list[dict]]:
    """Wraps the named kernels of triton_fftconv.kernels: each launch runs as before, its keyword arguments
    (constexprs, num_warps, maxnreg) appended to its kernel's list."""
    launches = {name: [] for name in names}

    class Spy:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches[self.name].append(kwargs)
                return self.kernel[grid](*args, **kwargs)

            return launch

    for name in names:
        monkeypatch.setattr(triton_fftconv.kernels, name, Spy(name, getattr(triton_fftconv.kernels, name)))
    return launches


@pytest.mark.parametrize("merged", [True, False], ids=["merged", "split"])
@pytest.mark.parametrize("case", ["1d-gated", "2d", "2d-parity"])
def test_merged_and_split_backward_match_float64(device, monkeypatch, case, merged):
    """MERGED_BACKWARD (the default): the cross spectrum's kernel also computes the per-row gradients, and
    conv_bwd_kernel does not run; off (a bench_fftconv --sweep setting): conv_bwd_kernel computes them."""
    monkeypatch.setattr(triton_fftconv, "MERGED_BACKWARD", merged)
    launches = spy_on_launches(monkeypatch, "conv_bwd_kernel")["conv_bwd_kernel"]
    if case == "2d":
        test_2d_gradients_match_float64(device, torch.float32)
    elif case == "2d-parity":  # a 32 x 128 grid: classes of 16 x 64
        test_2d_gradients_match_float64(device, torch.float32, (16, 40), (31, 79), batch=3, channels=1)
    else:
        test_1d_gradients_match_float64(device, torch.float32, True, 37, 37, True)
    assert len(launches) == (0 if merged else 1)


def test_launch_options_cap_registers_per_program_count():
    """maxnreg: the register file (65,536 per SM) shared by the programs of an SM, in steps of 8, at most 248; none
    where no program count is given (ptxas chooses)."""
    options = triton_fftconv._launch_options
    assert options(4) == {"num_warps": 4}
    assert [options(w, 1)["maxnreg"] for w in (1, 4, 8, 16, 32)] == [248, 248, 248, 128, 64]
    assert [options(4, p)["maxnreg"] for p in (2, 3, 4, 5)] == [248, 168, 128, 96]
    assert options(8, 2) == {"num_warps": 8, "maxnreg": 128}


def test_fused_programs_per_sm_caps_the_per_row_kernels(device, monkeypatch):
    """FUSED_PROGRAMS_PER_SM (a bench_fftconv --sweep setting) reaches the fused-register per-row kernels' launches as
    maxnreg, the once-per-channel kernels take none, and the results still match float64."""
    monkeypatch.setattr(triton_fftconv, "FUSED_PROGRAMS_PER_SM", 3)
    names = ("filter_spectrum_kernel", "conv_fwd_kernel", "conv_bwd_filter_kernel", "filter_gradient_kernel")
    launches = spy_on_launches(monkeypatch, *names)
    test_1d_gradients_match_float64(device, torch.float32, True, 37, 37, True)
    assert {name: {(kw["num_warps"], kw.get("maxnreg")) for kw in calls} for name, calls in launches.items()} == {
        "filter_spectrum_kernel": {(4, None)},
        "conv_fwd_kernel": {(4, 168)},
        "conv_bwd_filter_kernel": {(4, 168)},  # merged: the per-row gradients
        "filter_gradient_kernel": {(4, None)},
    }


# 2D grids above one program's points or sides, where the image fills at most half of each side (the zero padding of
# a linear convolution), run in the spectrum's four parity classes, one (n1, n2) grid each (see
# _triton_kernels._class_sum), the skip term folded into the filter's spectrum.
PARITY_CASES = {
    "32x128": ((16, 40), (31, 79), torch.float32),  # a side above 64: classes of 16 x 64
    "32x128-bf16": ((16, 40), (31, 79), torch.bfloat16),
    "64x128-short-filter": ((20, 33), (5, 65), torch.float32),  # 32 x 128 would do, the classes need 32 x 64 each
    "128x128": ((64, 64), (127, 127), torch.float32),  # Hyena-ISO's 64 x 64 images, full filters: classes of 64 x 64
}


@pytest.mark.parametrize("shape,kshape,dtype", PARITY_CASES.values(), ids=PARITY_CASES.keys())
def test_2d_parity_classes_match_float64(device, shape, kshape, dtype):
    plan = triton_fftconv.plan_2d(*shape, *kshape)
    assert plan.parity and (2 * plan.n1, 2 * plan.n2) == plan.fft_shape
    assert triton_fftconv.supports_shape((2, 3, *shape))
    test_2d_gradients_match_float64(device, dtype, shape, kshape, batch=3, channels=1)  # a pair, and a row alone


def test_parity_classes_round_trip():
    """The parity layout holds each frequency once: (C, Nh, Nw) -> (C, 4, 2, n1, n2) -> back is the identity, and
    class (s, t) at the position of frequencies (a, b) holds (2 a + s, 2 b + t)."""
    plan = triton_fftconv.plan_2d(32, 32, 63, 63)  # 64 x 64 grid, not parity: classes of 32 x 32 built by hand
    plan = triton_fftconv.Plan(32, 32, (64, 64), plan.lag0, 32, 32, 32, 1024, twiddle=False, parity=True)
    spectrum = torch.randn(3, 64, 64, dtype=torch.complex64)
    classes = triton_fftconv._parity_classes(spectrum, plan)
    assert classes.shape == (3, 4, 2, 32, 32)
    assert torch.equal(triton_fftconv._from_parity_classes(classes, plan), spectrum)
    rows = triton_fftconv._frequencies(32, 32, torch.device("cpu"))  # frequency held at each position
    assert torch.equal(classes[1, 2, 0, 5, 7], spectrum[1, 2 * rows[5] + 1, 2 * rows[7]].real)


def test_gradients_match_torch_backend(device):
    inputs = random_inputs(device, torch.float32, 2, 3, 40, 79, gates=True)
    grad_y = torch.randn(2, 3, 40, device=device)

    def forward(backend):
        return lambda u, k, D, pre, post: fftconv(u, k, D, causal=False, pre_gate=pre, post_gate=post, backend=backend)

    actual = triton_gradients(forward("triton"), inputs, grad_y)
    expected = triton_gradients(forward("torch"), inputs, grad_y)
    assert_gradients_close(inputs, actual, expected, 1e-5, grad_y)


@pytest.mark.parametrize("channels", [1, 5, 100, 768])
@pytest.mark.parametrize("sms", [1, 4, 132])
@pytest.mark.parametrize("batch", [1, 2, 3, 9, 64])
def test_batch_tile_and_slices_follow_the_sm_count(batch, channels, sms):
    """Forward: the largest power-of-two tile up to MAX_BATCH_TILE keeping WAVES programs per SM (else a pair of rows,
    or 1 for a batch of 1). Backward: the longest slices still giving every SM a (channel, slice) program where the
    batch allows, covering it; the fused-register backward's slices hold an even number of rows where there are
    several (packed pairs never straddle two programs)."""
    programs = lambda tile: channels * -(-batch // tile)  # noqa: E731
    tile = triton_fftconv.batch_tile(batch, channels, sms)
    assert tile & (tile - 1) == 0 and 1 <= tile <= triton_fftconv.MAX_BATCH_TILE and tile < 2 * batch
    assert tile == min(2, batch) or programs(tile) >= triton_fftconv.WAVES * sms
    larger = 2 * tile
    assert larger > triton_fftconv.MAX_BATCH_TILE or larger >= 2 * batch or programs(larger) < 2 * sms
    slices, rows = triton_fftconv.batch_slices(batch, channels, sms)
    assert (slices - 1) * rows < batch <= slices * rows
    assert channels * slices >= sms or slices == batch
    assert rows == batch or channels * -(-batch // (rows + 1)) < sms  # a row more per slice would leave SMs idle
    paired, pair_rows = triton_fftconv.paired_batch_slices(batch, channels, sms)
    assert (paired - 1) * pair_rows < batch <= paired * pair_rows
    assert paired == 1 or pair_rows % 2 == 0
    assert paired >= slices or pair_rows == 2  # rounding odd slices down keeps every SM busy


def test_batch_tile_and_slices_at_real_sizes():
    assert triton_fftconv.batch_tile(64, 768, 132) == 8  # 6,144 programs of 8 rows
    assert triton_fftconv.batch_tile(64, 16, 132) == 2  # 512 programs; tiles of 4 would give 256 < 2 x 132
    assert triton_fftconv.batch_slices(64, 768, 132) == (1, 64)
    assert triton_fftconv.batch_slices(64, 16, 132) == (10, 7)  # 160 programs >= 132; 8 rows would give 128
    assert triton_fftconv.paired_batch_slices(64, 16, 132) == (11, 6)  # 7 rows would split the pair (6, 7)
    assert triton_fftconv.paired_batch_slices(64, 768, 132) == (1, 64)


# (batch, channels, SM count, forward batch tile, fused-register backward batch slices): the kernels transform rows
# in pairs (b, b + 1) packed as one complex signal, a row alone paired with zeros
TILE_CASES = {
    "B3-tile2": (3, 2, 2, 2, 1),  # the last tile holds one row; one slice of 3 rows (a pair and a row alone)
    "B1": (1, 2, 8, 1, 1),
    "B5-S2": (5, 1, 2, 2, 2),  # slices of 4 rows and 1
    "B3-S2": (3, 1, 132, 2, 2),  # batch_slices would give one row per slice (the CPU default SM count): pairs
    "B7-S4": (7, 1, 3, 2, 4),  # batch_slices' 3 rows per slice would split pairs: slices of 2, 2, 2, 1
}


@pytest.mark.parametrize("case", list(TILE_CASES))
def test_batch_tiles_and_slices_match_float64(device, monkeypatch, case):
    """Batch tiles in the forward and batch slices in the backward (per-slice partial sums of grad_k and grad_D,
    added on the host): values and every gradient against the float64 direct convolution."""
    batch, channels, sms, tile, slices = TILE_CASES[case]
    monkeypatch.setattr(triton_fftconv, "_sm_count", lambda device: sms)
    assert triton_fftconv.batch_tile(batch, channels, sms) == tile
    assert triton_fftconv.paired_batch_slices(batch, channels, sms)[0] == slices
    inputs = random_inputs(device, torch.float32, batch, channels, 29, 29, gates=True)
    grad_y = torch.randn(batch, channels, 29, device=device)

    def triton_forward(u, k, D, pre, post):
        return fftconv(u, k, D, pre_gate=pre, post_gate=post, backend="triton")

    def reference_forward(u, k, D, pre, post):
        return direct_conv1d(u, k, D, 0, pre, post)

    assert relative_error(triton_forward(*inputs), reference_forward(*inputs)) < 1e-5
    actual = triton_gradients(triton_forward, inputs, grad_y)
    assert_gradients_close(inputs, actual, float64_gradients(reference_forward, inputs, grad_y), 1e-5, grad_y)


def test_sliced_backward_is_deterministic(device, monkeypatch):
    """Two identical runs of the fused-register backward with 2 batch slices per channel give identical bits (the
    slices' partial sums are added in a fixed order, no atomics), also under torch.use_deterministic_algorithms."""
    monkeypatch.setattr(triton_fftconv, "_sm_count", lambda device: 8)
    assert triton_fftconv.paired_batch_slices(3, 2, 8) == (2, 2)  # a packed pair and a row alone per channel
    inputs = random_inputs(device, torch.float32, 3, 2, 23, 23, gates=True)
    grad_y = torch.randn(3, 2, 23, device=device)
    gradients = deterministic_gradients(inputs, grad_y)
    reference = float64_gradients(lambda *t: direct_conv1d(*t[:3], 0, *t[3:]), inputs, grad_y)
    assert_gradients_close(inputs, gradients, reference, 1e-5, grad_y)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_each_row_of_a_packed_pair_matches_float64(device, monkeypatch, causal):
    """The fused-register kernels transform rows b, b + 1 as one complex signal (real and imaginary parts): every row
    of y and of the per-row gradients is checked on its own, with rows of different scales, so a swapped pair, a sign
    error in the imaginary part or one row leaking into the other fails; row 2 is alone (paired with zeros). A pair
    shares its transform's rounding error: a row s times smaller than its partner gets about s times its relative
    error (s = 100 measured 3e-6 against 1e-7 here), so the scales stay moderate."""
    monkeypatch.setattr(triton_fftconv, "_sm_count", lambda device: 8)
    assert triton_fftconv.batch_tile(3, 2, 8) == 2 and triton_fftconv.paired_batch_slices(3, 2, 8) == (2, 2)
    u, k, D, pre, post = random_inputs(device, torch.float32, 3, 2, 30, 19, gates=True)
    scale = torch.tensor([1.0, 3.0, 0.5], device=device)[:, None, None]  # (B, 1, 1)
    inputs = (u * scale, k, D, pre, post)
    grad_y = torch.randn(3, 2, 30, device=device) / scale
    lag0 = 0 if causal else 9

    def triton_forward(u, k, D, pre, post):
        return fftconv(u, k, D, causal=causal, pre_gate=pre, post_gate=post, backend="triton")

    def reference_forward(u, k, D, pre, post):
        return direct_conv1d(u, k, D, lag0, pre, post)

    y, expected_y = triton_forward(*inputs), reference_forward(*inputs)
    actual = triton_gradients(triton_forward, inputs, grad_y)
    expected = float64_gradients(reference_forward, inputs, grad_y)
    for b in range(3):
        assert relative_error(y[b], expected_y[b]) < 1e-5, b
        for name, index in (("u", 0), ("pre_gate", 3), ("post_gate", 4)):
            assert relative_error(actual[index][b], expected[index][b]) < 1e-5, (name, b)
    assert_gradients_close(inputs, actual, expected, 1e-5, grad_y)


@pytest.mark.parametrize("length", [37, 181])
def test_filter_spectrum_computed_once_per_step(device, monkeypatch, length):
    """The forward's filter spectrum is saved for the backward, not recomputed (fused-register: 37; fused-L2: 181)."""
    if length == 181:
        if device == "cuda":
            length = 5000
        else:
            use_cpu_fused_l2(monkeypatch, 4)
    name = "_filter_spectrum" if length == 37 else "_multipass_spectrum"
    calls = []
    original = getattr(triton_fftconv, name)
    monkeypatch.setattr(triton_fftconv, name, lambda *args: calls.append(args) or original(*args))
    inputs = [t.requires_grad_() for t in random_inputs(device, torch.float32, 1, 2, length, length, gates=False)[:3]]
    fftconv(*inputs, backend="triton").sum().backward()
    assert len(calls) == 1 and all(t.grad is not None for t in inputs)


# Fused-L2 variant (1D grids above MAX_FFT_POINTS up to MAX_FUSED_L2_POINTS). On the CPU the thresholds are lowered
# so that grids of 512 / 1024 points take it, with P = 4, 8 (N / FUSED_L2_ROW) or 16 columns, and the SM count to 4:
# four persistent programs loop over 6 rows (forward) / 6 (channel, batch slice) work items (backward: 3 channels,
# batch of 2 in 2 slices); tl.dot tiles then go below 16, which only the interpreter accepts, so on the GPU the real
# thresholds run at real lengths (N = 8K, 16K, 32K) instead. MIN_SIDE is lowered too, so that these signals, which
# fill half of each column, take the zero-padding skip (HALF_P: P = 32 on the GPU, any P here).
FUSED_L2_CPU_THRESHOLDS = {
    "MAX_FFT_POINTS": 256,
    "MAX_FUSED_L2_POINTS": 1024,
    "FUSED_L2_ROW": 128,
    "DEFAULT_SMS": 4,
    "MIN_SIDE": 2,
}
FUSED_L2_CASES = [  # causal, CPU length, GPU length, CPU columns P, gates, dtype; N on the CPU / GPU in comments
    (True, 300, 16384, 8, True, torch.float32),  # 1024 / 32768
    (True, 181, 5001, 16, True, torch.bfloat16),  # 512 / 16384
    (False, 200, 3000, 4, True, torch.bfloat16),  # 512 / 8192
    (False, 201, 4999, 4, True, torch.float32),  # 512 / 16384
    (True, 181, 5000, 4, False, torch.float32),
]


def use_cpu_fused_l2(monkeypatch, columns):
    for name, value in {**FUSED_L2_CPU_THRESHOLDS, "FUSED_L2_MIN_COLUMN": 16 if columns == 16 else 4}.items():
        monkeypatch.setattr(triton_fftconv, name, value)


@pytest.mark.parametrize(
    "causal,cpu_length,cuda_length,columns,gates,dtype",
    FUSED_L2_CASES,
    ids=[
        f"{'causal' if c[0] else 'bidir'}-L{c[1]}-P{c[3]}-{'gated' if c[4] else 'plain'}-{c[5]}" for c in FUSED_L2_CASES
    ],
)
def test_fused_l2_matches_float64_and_torch(
    device, monkeypatch, causal, cpu_length, cuda_length, columns, gates, dtype
):
    if device == "cuda":
        length = cuda_length
    else:
        length = cpu_length
        use_cpu_fused_l2(monkeypatch, columns)
    klen = length if causal else 2 * length - 1
    plan = triton_fftconv.plan_1d(length, klen, causal)
    assert triton_fftconv.variant(plan) == "fused-L2" and (device == "cuda" or plan.n1 == columns)
    _, sizes = triton_fftconv._fused_l2_setup(plan, torch.device(device))
    assert sizes["HALF_P"] == (device == "cpu" or plan.n1 == 32)
    inputs = random_inputs(device, dtype, 2, 3, length, klen, gates)
    grad_y = torch.randn(2, 3, length, device=device).to(dtype)

    def forward(backend):
        return lambda u, k, D, pre, post: fftconv(u, k, D, causal=causal, pre_gate=pre, post_gate=post, backend=backend)

    def reference_forward(u, k, D, pre, post):
        return direct_conv1d(u, k, D, 0 if causal else length - 1, pre, post)

    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    y = forward("triton")(*leaves)
    y.backward(grad_y)
    actual = [None if t is None else t.grad for t in leaves]
    assert y.dtype == dtype
    assert relative_error(y, reference_forward(*inputs)) < TOLERANCE[dtype]
    assert relative_error(y, forward("torch")(*inputs)) < TOLERANCE[dtype]
    assert_gradients_close(
        inputs, actual, float64_gradients(reference_forward, inputs, grad_y), TOLERANCE[dtype], grad_y
    )
    assert_gradients_close(inputs, actual, triton_gradients(forward("torch"), inputs, grad_y), TOLERANCE[dtype], grad_y)


def test_fused_l2_full_columns_match_float64(device, monkeypatch):
    """A signal longer than half the grid (a short bidirectional filter) fills the whole of each column: the fused-L2
    kernels transform every row of the (P, Q) view (HALF_P off)."""
    length = 10000 if device == "cuda" else 300  # N = 16K (P = 32) / 512 (P = 4)
    if device != "cuda":
        use_cpu_fused_l2(monkeypatch, 4)
    inputs = random_inputs(device, torch.float32, 2, 3, length, 7, True)
    plan = triton_fftconv.plan_1d(length, 7, False)
    _, sizes = triton_fftconv._fused_l2_setup(plan, torch.device(device))
    assert triton_fftconv.variant(plan) == "fused-L2" and not sizes["HALF_P"]

    def triton_forward(u, k, D, pre, post):
        return fftconv(u, k, D, causal=False, pre_gate=pre, post_gate=post, backend="triton")

    def reference_forward(u, k, D, pre, post):
        return direct_conv1d(u, k, D, 3, pre, post)

    assert relative_error(triton_forward(*inputs), reference_forward(*inputs)) < 1e-5
    grad_y = torch.randn_like(inputs[0])
    actual = triton_gradients(triton_forward, inputs, grad_y)
    assert_gradients_close(inputs, actual, float64_gradients(reference_forward, inputs, grad_y), 1e-5, grad_y)


def test_fused_l2_tiles_fit_tl_dot():
    """At the real thresholds every tl.dot side of the fused-L2 kernels is >= 16, as the GPU requires."""
    for length in (2049, 3000, 4097, 8192, 8193, 16384):
        for causal in (True, False):
            plan = triton_fftconv.plan_1d(length, length if causal else 2 * length - 1, causal)
            assert triton_fftconv.variant(plan) == "fused-L2"
            _, sizes = triton_fftconv._fused_l2_setup(plan, torch.device("cpu"))
            rows = sizes["P"] // 2 if sizes["HALF_P"] else sizes["P"]  # the column tiles' rows
            assert min(sizes["P"], rows, sizes["Q1"], sizes["Q2"], sizes["BQ"]) >= triton_fftconv.MIN_SIDE
    assert triton_fftconv._programs(10**6, 66) == 66  # one program per SM
    assert triton_fftconv._programs(3, 132) == 3 and triton_fftconv._programs(0, 132) == 1


# Multi-pass scheme (FFT grids above MAX_FUSED_L2_POINTS). The interpreter is too slow for the real thresholds, so on
# the CPU they are lowered to reach both column variants at L ~ 100; tl.dot tiles then go below 16, which only the
# interpreter accepts, so on the GPU the real thresholds run at real lengths instead. The "-half" cases have causal
# signals filling only the first half of each column with a column factor whose half meets MIN_SIDE (lowered to 4 or 2
# on the CPU): the column passes skip the zero padding (HALF_P). Batches of 3: a packed pair and a lone row.
FOUR_STEP_THRESHOLDS = {
    "MAX_FFT_POINTS": 16,
    "MAX_FUSED_L2_POINTS": 16,
    "MAX_ROW_POINTS": 16,
    "MAX_DIRECT_COLUMN": 1,
    "MIN_FOUR_STEP_COLUMN": 16,
}
# name: (CPU thresholds, CPU length, GPU thresholds, GPU length). On the GPU, direct columns at the real thresholds
# (P = 64, N = 64K) always take half columns (a causal signal, or one whose filter reaches L - 1 both ways, fills at
# most half of N); whole ones come from P = 16 (N = 16K, its half factor below MIN_SIDE), the fused-L2 variant lowered.
MULTIPASS_CASES = {
    "direct-columns": (
        {"MAX_FFT_POINTS": 256, "MAX_FUSED_L2_POINTS": 256, "MAX_ROW_POINTS": 256},
        200,
        {"MAX_FUSED_L2_POINTS": 1 << 13},
        5000,
    ),
    "direct-columns-half": (
        {"MIN_SIDE": 4, "MAX_FFT_POINTS": 64, "MAX_FUSED_L2_POINTS": 64, "MAX_ROW_POINTS": 32},
        120,
        {},
        30_000,
    ),
    "four-step-columns": (FOUR_STEP_THRESHOLDS, 100, {}, 200_000),
    "four-step-columns-half": ({**FOUR_STEP_THRESHOLDS, "MIN_SIDE": 2}, 100, {}, 1_000_000),  # 4 x 4 columns
}


def multipass_plan(device, monkeypatch, case, causal):
    """(length, plan) of a MULTIPASS_CASES case, its thresholds set; checks the variant and HALF_P."""
    cpu_thresholds, cpu_length, cuda_thresholds, cuda_length = MULTIPASS_CASES[case]
    length, thresholds = (cuda_length, cuda_thresholds) if device == "cuda" else (cpu_length, cpu_thresholds)
    for name, value in thresholds.items():
        monkeypatch.setattr(triton_fftconv, name, value)
    plan = triton_fftconv.plan_1d(length, length if causal else 2 * length - 1, causal)
    assert triton_fftconv.variant(plan) == "multi-pass" and plan.direct == case.startswith("direct")
    assert triton_fftconv._half_columns(plan, length) == (causal and case.endswith("half"))
    return length, plan


@pytest.mark.parametrize(
    "case,causal,batch,channels",
    [
        ("direct-columns", True, 3, 1),
        ("direct-columns", False, 3, 1),
        ("direct-columns-half", True, 3, 1),
        # several pairs and filters on the four-step columns' (pair, column) grid; whole columns:
        # test_radix2_steps_match_float64
        ("four-step-columns-half", True, 3, 2),
    ],
)
def test_multipass_matches_float64(device, monkeypatch, case, causal, batch, channels):
    length, plan = multipass_plan(device, monkeypatch, case, causal)
    klen = length if causal else 2 * length - 1
    inputs = random_inputs(device, torch.float32, batch, channels, length, klen, gates=True)
    grad_y = torch.randn(batch, channels, length, device=device)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y = fftconv(*leaves[:3], causal=causal, pre_gate=leaves[3], post_gate=leaves[4], backend="triton")
    y.backward(grad_y)

    def reference_forward(u, k, D, pre, post):  # float64 FFT reference: direct convolution is too slow at 200K
        return fftconv(u, k, D, causal=causal, pre_gate=pre, post_gate=post, backend="torch")

    expected_y = reference_forward(*(t.double() for t in inputs))
    for row in range(batch):  # each row of the packed pair (and a lone third), not only the batch as a whole
        assert relative_error(y[row], expected_y[row]) < 1e-5, row
    expected = float64_gradients(reference_forward, inputs, grad_y)
    assert_gradients_close(inputs, [t.grad for t in leaves], expected, 1e-5, grad_y)


# Radix-2 steps (the sides of square grids from RADIX2_SIDE up and sides from 2 RADIX2_SIDE: 32 x 32, 64 x 64 and the
# 64-point side of 32 x 64 on the GPU, which run as two half-length DFTs, see _triton_kernels._dft). On the CPU the
# threshold is lowered to 4, so that the grids of these small cases take the step on both sides (DFT factors of 2 to
# 8 points), in each variant: spectra in the interleaved layout, the twiddles and the multi-pass outer twiddles follow
# it; "mixed-sides" lowers it to 16, so that 16 x 32 grids take it on their long side only, as 32 x 64 ones do.
@pytest.mark.parametrize("case", ["fused-1d", "fused-2d", "fused-L2", "multi-pass", "mixed-sides"])
def test_radix2_steps_match_float64(device, monkeypatch, case):
    if device == "cuda":
        if case != "fused-1d":
            pytest.skip("on the GPU the fused-1d case runs real 32 x 32, 32 x 64 and 64 x 64 grids")
        for length in (512, 1024, 2048):
            test_1d_gradients_match_float64(device, torch.float32, True, length, length, True)
        return
    side = 16 if case == "mixed-sides" else 4
    monkeypatch.setattr(triton_fftconv.kernels, "RADIX2_SIDE", triton_fftconv.kernels.tl.constexpr(side))
    monkeypatch.setattr(triton_fftconv, "RADIX2_SIDE", side)
    _run_variant(device, monkeypatch, case)


# Stacked products (_triton_kernels._dft_direct): the forward's x @ F on tiles of STACK_ROWS rows or more (fused grids
# from 32 x 32, the fused-L2 forward's rows, four-step multi-pass columns on the GPU, run by the radix-2 test there)
# takes the real and imaginary parts as one tile of twice the rows. On the CPU the threshold is lowered to 2, so that
# every variant's tiles take it.
@pytest.mark.parametrize("case", ["fused-1d", "fused-2d", "fused-L2", "multi-pass"])
def test_stacked_products_match_float64(device, monkeypatch, case):
    if device == "cuda":
        pytest.skip("on the GPU the radix-2 test's 64 x 64 grids take the stacked products")
    monkeypatch.setattr(triton_fftconv.kernels, "STACK_ROWS", triton_fftconv.kernels.tl.constexpr(2))
    _run_variant(device, monkeypatch, case)


def _run_variant(device, monkeypatch, case):
    """One small case of each kernel variant against float64 (forward and backward, 2D forward only)."""
    if case == "fused-1d":
        test_1d_gradients_match_float64(device, torch.float32, True, 37, 37, True)
        test_1d_gradients_match_float64(device, torch.bfloat16, False, 30, 59, True)
    elif case == "fused-2d":
        test_2d_forward_matches_float64(device, torch.float32, (8, 8), (15, 15))  # 16 x 16 grid
    elif case == "fused-L2":
        test_fused_l2_matches_float64_and_torch(device, monkeypatch, True, 300, 16384, 16, True, torch.float32)
    elif case == "multi-pass":
        test_multipass_matches_float64(device, monkeypatch, "four-step-columns", True, 1, 1)  # pairs: above
    else:  # 16 x 32 grids
        assert (triton_fftconv._factor(16, 32), triton_fftconv._factor(32, 16)) == (16, 16)
        test_1d_gradients_match_float64(device, torch.float32, True, 256, 256, True)
        test_2d_forward_matches_float64(device, torch.float32, (8, 16), (15, 31))


@pytest.mark.parametrize("radix2", [False, True], ids=["dense", "radix2"])
@pytest.mark.parametrize("case", ["causal", "bidirectional", "2d"])
def test_zero_padding_skip_matches_float64(device, monkeypatch, case, radix2):
    """The fused-register kernels on the first half of the grid's rows (and in 2D of its columns) only: the signals'
    zero padding skipped in the first stages, the discarded outputs in the last ones, forward and backward (whose
    grad_k fills the whole grid). Dense factors: the 32-point side of 32 x 64 grids on the GPU (the 64-point side takes
    a radix-2 step), 8 x 16 / 16 x 32 grids on the CPU (MIN_SIDE lowered to 4 so that the half meets it); radix-2 steps
    over half-filled factors: 64 x 64 grids on the GPU, 16 x 16 on the CPU (RADIX2_SIDE lowered to 4 as well)."""
    if device != "cuda":
        monkeypatch.setattr(triton_fftconv, "MIN_SIDE", 4)
        if radix2:
            monkeypatch.setattr(triton_fftconv.kernels, "RADIX2_SIDE", triton_fftconv.kernels.tl.constexpr(4))
            monkeypatch.setattr(triton_fftconv, "RADIX2_SIDE", 4)
    lengths = {  # (dense, radix2) on the GPU and on the CPU
        "causal": ((1024, 2048), (60, 100)),
        "bidirectional": ((1000, 2000), (50, 100)),
        "2d": (((16, 32), (32, 32)), ((8, 16), (8, 8))),
    }
    length = lengths[case][device != "cuda"][radix2]
    if case == "2d":
        height, width = length
        u = torch.randn(2, 3, height, width, device=device)  # the image in the grid's top left quarter
        kshape = (2 * height - 1, 2 * width - 1)
        k, D = torch.randn(3, *kshape, device=device) / 30, torch.randn(3, device=device)
        plan = triton_fftconv.plan_2d(height, width, *kshape)
        inputs, triton_forward, reference_forward = (u, k, D), lambda *t: fftconv2d(*t, backend="triton"), direct_conv2d
    else:
        causal = case == "causal"
        inputs = random_inputs(device, torch.float32, 3, 2, length, length if causal else 2 * length - 1, True)
        plan = triton_fftconv.plan_1d(length, inputs[1].shape[1], causal)

        def triton_forward(u, k, D, pre, post):
            return fftconv(u, k, D, causal=causal, pre_gate=pre, post_gate=post, backend="triton")

        def reference_forward(u, k, D, pre, post):
            return direct_conv1d(u, k, D, 0 if causal else length - 1, pre, post)

    assert triton_fftconv.variant(plan) == "fused-register"
    assert (triton_fftconv._factor(plan.n1, plan.n2) < plan.n1) == radix2
    assert triton_fftconv._half_grid(plan) == {"HALF_ROWS": True, "HALF_COLS": case == "2d"}
    assert relative_error(triton_forward(*inputs), reference_forward(*inputs)) < TOLERANCE[torch.float32]
    grad_y = torch.randn_like(inputs[0])
    actual = triton_gradients(triton_forward, inputs, grad_y)
    assert_gradients_close(inputs, actual, float64_gradients(reference_forward, inputs, grad_y), 1e-5, grad_y)


@pytest.mark.parametrize("case", ["fused-register", "fused-L2", "multi-pass", "2d"])
def test_strided_inputs_match_torch_backend(device, monkeypatch, case):
    """u and the gates as channel slices of one projection (how HyenaOperator calls it: read in place), grad_y as a
    channel slice, and u with non-contiguous rows (copied): values and gradients match the torch backend."""
    length = {"fused-register": 37, "fused-L2": 181 if device == "cpu" else 5000, "2d": (6, 9)}.get(case)
    if case == "fused-L2" and device == "cpu":
        use_cpu_fused_l2(monkeypatch, 4)
    if case == "multi-pass":
        length = multipass_plan(device, monkeypatch, "direct-columns", True)[0]
    size = length if case == "2d" else (length,)
    projection = torch.randn(2, 9, *size, device=device, requires_grad=True)  # (B, 3C, *S)
    kshape = tuple(2 * n - 1 for n in size) if case == "2d" else (length,)
    k = (torch.randn(3, *kshape, device=device) / 10).requires_grad_()
    D = torch.randn(3, device=device, requires_grad=True)
    rows_last = torch.randn(2, *size, 3, device=device, requires_grad=True)  # (B, *S, C)
    grad_y = torch.randn(2, 6, *size, device=device)[:, 1:4]  # a channel slice

    def run(backend):
        u, pre, post = projection.split(3, dim=1)  # (B, C, *S) views with contiguous rows
        if case == "2d":
            y = fftconv2d(u, k, D, backend=backend) + fftconv2d(rows_last.movedim(-1, 1), k, D, backend=backend)
        else:
            y = fftconv(u, k, D, pre_gate=pre, post_gate=post, backend=backend)
            y = y + fftconv(rows_last.movedim(-1, 1), k, D, pre_gate=pre, backend=backend)
        grads = torch.autograd.grad(y, (projection, k, D, rows_last), grad_y)
        return y, grads

    if case != "2d":
        assert triton_fftconv.variant(triton_fftconv.plan_1d(length, length, True)) == case
    (y, grads), (expected, expected_grads) = run("triton"), run("torch")
    assert relative_error(y, expected) < 1e-5
    for name, got, want in zip(["projection", "k", "D", "rows_last"], grads, expected_grads, strict=True):
        assert relative_error(got, want) < 1e-5, name


def test_multipass_reads_shared_strides_in_place():
    """Channel slices of one projection (one pair of batch and channel strides, contiguous rows) reach the multi-pass
    kernels as they are; signals whose strides differ or whose rows are not contiguous are copied."""
    u, pre, post = torch.randn(2, 9, 40).split(3, dim=1)
    signals = (u, pre, None, post)
    assert all(a is b for a, b in zip(triton_fftconv._shared_strides(*signals), signals, strict=True))
    rows_last = torch.randn(2, 40, 3).movedim(-1, 1)
    for copied in (triton_fftconv._shared_strides(u, rows_last), triton_fftconv._shared_strides(rows_last)):
        assert all(t.is_contiguous() for t in copied)
        assert torch.equal(copied[-1], rows_last)


@pytest.mark.parametrize("batch,channels,step", [(3, 2, 5), (2, 7, 3), (1, 4, 4), (2, 3, 1), (5, 3, 7)])
def test_multipass_row_chunks_are_batch_elements_or_channel_blocks(monkeypatch, batch, channels, step):
    """Chunks cover every (batch row, channel) once, fit SCRATCH_BYTES (a scratch row per packed pair) and never split
    a pair: whole channels of an even number of batch rows, or a block of channels of one pair of batch rows."""
    plan = triton_fftconv.plan_1d(40_000, 40_000, causal=True)
    monkeypatch.setattr(triton_fftconv, "SCRATCH_BYTES", step * 8 * plan.n1 * plan.n2)
    chunks = triton_fftconv._row_chunks(batch, channels, plan)
    covered = [(b, c) for rows, chans in chunks for b in range(batch)[rows] for c in range(channels)[chans]]
    assert sorted(covered) == [(b, c) for b in range(batch) for c in range(channels)]
    for rows, chans in chunks:
        pairs = -(-(rows.stop - rows.start) // 2) * (chans.stop - chans.start)
        assert 0 < pairs <= step and rows.start % 2 == 0
        assert chans == slice(0, channels) or rows.stop - rows.start <= 2, (rows, chans)


def test_multipass_backward_is_deterministic(device, monkeypatch):
    """Per-chunk partial sums reduced in a fixed order (no atomics): two identical runs give identical bits, also
    under torch.use_deterministic_algorithms (which refuses CUDA's index_add_)."""
    length, plan = multipass_plan(device, monkeypatch, "direct-columns", True)
    # chunks of 2 packed pairs: channels 0, 1 and channel 2 of batch rows 0, 1
    monkeypatch.setattr(triton_fftconv, "SCRATCH_BYTES", 2 * 8 * plan.n1 * plan.n2)
    inputs = random_inputs(device, torch.float32, 2, 3, length, length, gates=True)
    grad_y = torch.randn(2, 3, length, device=device)
    gradients = deterministic_gradients(inputs, grad_y)
    reference = float64_gradients(lambda *t: direct_conv1d(*t[:3], 0, *t[3:]), inputs, grad_y)
    assert_gradients_close(inputs, gradients, reference, 1e-5, grad_y)


def test_constants_built_once_per_device_and_never_cached_under_capture(monkeypatch):
    """DFT matrices and twiddles are made on the device (no host copy) and cached, except during CUDA-graph capture,
    where a tensor has no values until replay and must not be kept for eager calls."""
    monkeypatch.setattr(triton_fftconv, "_CONSTANTS", {})
    cpu = torch.device("cpu")
    dft, padded = triton_fftconv._dft_matrix(16, cpu), triton_fftconv._dft_matrix(16, cpu, 32)
    twiddles = triton_fftconv._twiddles(4, 8, True, cpu)
    assert triton_fftconv._dft_matrix(16, cpu) is dft and triton_fftconv._twiddles(4, 8, True, cpu) is twiddles
    j = torch.arange(16, dtype=torch.float64)
    expected = torch.exp(-2j * torch.pi * torch.outer(j, j) / 16)
    assert torch.allclose(torch.complex(dft[0].double(), dft[1].double()), expected, atol=1e-7)
    assert torch.equal(padded[:, :16, :16], dft) and not padded[:, 16:].any() and not padded[:, :, 16:].any()
    expected = torch.exp(-2j * torch.pi * torch.outer(torch.arange(4.0), torch.arange(8.0)).double() / 32)
    assert torch.allclose(torch.complex(twiddles[0].double(), twiddles[1].double()), expected, atol=1e-7)
    assert torch.equal(triton_fftconv._twiddles(4, 8, False, cpu), torch.stack((torch.ones(4, 8), torch.zeros(4, 8))))
    monkeypatch.setattr(triton_fftconv, "_capturing", lambda device: True)
    cached = dict(triton_fftconv._CONSTANTS)
    during_capture = triton_fftconv._dft_matrix(32, cpu)
    assert triton_fftconv._dft_matrix(32, cpu) is not during_capture and triton_fftconv._CONSTANTS == cached
    assert triton_fftconv._dft_matrix(16, cpu) is dft  # what was cached before capture is still used


def test_too_large_2d_grid_is_refused(device):
    u = torch.randn(1, 1, 100, 100, device=device)
    with pytest.raises(NotImplementedError, match="u of shape"):
        fftconv2d(u, torch.randn(1, 199, 199, device=device), backend="triton")


def test_long_sided_2d_grid_is_refused(device):
    """8 x 128 needs a 16 x 256 grid: few enough points, but a 256-point DFT matrix (512 KB) per program."""
    assert not triton_fftconv.supports_shape((2, 3, 8, 128)) and not triton_fftconv.supports_shape((2, 3, 128, 8))
    assert triton_fftconv.supports_shape((2, 3, 32, 32)) and triton_fftconv.supports_shape((2, 3, 8, 32))
    assert triton_fftconv.supports_shape((2, 3, 64, 64)) and not triton_fftconv.supports_shape((2, 3, 65, 64))
    assert not triton_fftconv.supports_shape((2, 3, 8, 40))  # a 16 x 128 grid: parity classes of 8 rows, below 16
    assert triton_fftconv.supports_shape((2, 3, 4096))
    u = torch.randn(1, 1, 8, 128, device=device)
    assert not triton_fftconv.supports(u)
    with pytest.raises(NotImplementedError, match="sides up to 64"):
        fftconv2d(u, torch.randn(1, 15, 255, device=device), backend="triton")


@pytest.mark.parametrize(
    "case,dtype,skip",
    [("1d", torch.float32, True), ("1d", torch.bfloat16, False), ("2d-parity", torch.float32, True)],
    ids=["fp32-D", "bf16-noD", "2d-parity-fp32-D"],
)
def test_custom_ops_pass_opcheck(device, case, dtype, skip):
    """Fake and real implementations agree on shapes and dtypes (also for grad_D when D is absent), autograd too."""
    if case == "1d":
        u, k, D, pre, post = random_inputs(device, dtype, 2, 2, 20, 20, gates=True)
    else:  # a 32 x 128 grid in parity classes: a (C, 4, 2, 16, 64) spectrum, no gates
        u, k, D = torch.randn(2, 1, 16, 40, device=device).to(dtype), torch.randn(1, 31, 79), torch.randn(1)
        k, D, pre, post = k.to(device) / 50, D.to(device), None, None
    D = D if skip else None
    args = [None if t is None else t.requires_grad_() for t in (u, k, D, pre, post)] + [case == "1d"]
    torch.library.opcheck(torch.ops.hyena_vision.fftconv.default, args)
    plain = [t.detach() if isinstance(t, torch.Tensor) else t for t in args]  # no double backward
    _, spectrum = torch.ops.hyena_vision.fftconv(*plain)
    backward_args = [torch.randn_like(u), *plain[:2], spectrum, *plain[2:]]
    torch.library.opcheck(torch.ops.hyena_vision.fftconv_backward.default, backward_args)


def test_fake_registration_gives_shapes_and_dtypes(device):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        u = torch.empty(4, 3, 100, dtype=torch.bfloat16, device=device)
        k = torch.empty(3, 199, device=device)
        y, spectrum = torch.ops.hyena_vision.fftconv(u, k, None, u, None, False)
        grads = torch.ops.hyena_vision.fftconv_backward(y, u, k, spectrum, None, u, None, False)
    assert y.shape == u.shape and y.dtype == torch.bfloat16
    assert spectrum.shape == (3, 2, 16, 16) and spectrum.dtype == torch.float32  # N = 256 for L = 100, bidirectional
    assert [tuple(g.shape) for g in grads] == [(4, 3, 100), (3, 199), (0,), (4, 3, 100), (0,)]
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.float32, torch.float32, torch.bfloat16, torch.bfloat16]


class GatedConv(torch.nn.Module):
    def __init__(self, channels, length):
        super().__init__()
        self.k = torch.nn.Parameter(torch.randn(channels, length) / length**0.5)
        self.D = torch.nn.Parameter(torch.randn(channels))

    def forward(self, u):
        return torch.tanh(fftconv(u, self.k, self.D, pre_gate=u.sigmoid(), post_gate=u.cos(), backend="triton"))


def test_torch_compile_keeps_the_op(device):
    torch.manual_seed(0)
    module = GatedConv(2, 24).to(device)
    u = torch.randn(2, 2, 24, device=device, requires_grad=True)
    eager = module(u)
    eager.sum().backward()
    eager_grads = [u.grad.clone(), module.k.grad.clone()]
    u.grad = None
    module.zero_grad()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)(u)
    compiled.sum().backward()
    assert relative_error(compiled, eager) < 1e-6
    assert relative_error(u.grad, eager_grads[0]) < 1e-6
    assert relative_error(module.k.grad, eager_grads[1]) < 1e-6


def test_rejects_float64_inputs(device):
    u = torch.randn(1, 2, 16, device=device, dtype=torch.float64)
    with pytest.raises(TypeError, match="u"):
        fftconv(u, torch.randn(2, 16, device=device), backend="triton")


def test_auto_backend_picks_triton_only_on_cuda(device):
    u = torch.randn(1, 2, 16, device=device)
    assert triton_fftconv.supports(u) == (device == "cuda")
    assert not triton_fftconv.supports(u.double())


def test_plans_leave_room_for_linear_convolution():
    assert triton_fftconv.plan_1d(37, 37, causal=True).fft_shape == (256,)
    plan = triton_fftconv.plan_1d(1000, 1999, causal=False)
    assert plan.fft_shape == (2048,) and (plan.n1, plan.n2) == (32, 64) and plan.lag0 == (999,)
    assert triton_fftconv.plan_2d(14, 14, 27, 27).fft_shape == (32, 32)
    assert triton_fftconv.variant(triton_fftconv.plan_1d(2048, 2048, causal=True)) == "fused-register"
    plan = triton_fftconv.plan_1d(3000, 3000, causal=True)
    assert plan.fft_shape == (8192,) and (plan.n1, plan.n2) == (16, 512) and triton_fftconv.variant(plan) == "fused-L2"
    plan = triton_fftconv.plan_1d(5000, 5000, causal=True)
    assert plan.fft_shape == (16384,) and (plan.n1, plan.n2) == (32, 512) and triton_fftconv.variant(plan) == "fused-L2"
    plan = triton_fftconv.plan_1d(16384, 16384 * 2 - 1, causal=False)
    assert (
        plan.fft_shape == (32768,) and (plan.n1, plan.n2) == (32, 1024) and triton_fftconv.variant(plan) == "fused-L2"
    )
    plan = triton_fftconv.plan_1d(16385, 16385, causal=True)
    assert plan.fft_shape == (65536,) and (plan.n1, plan.n2, plan.direct) == (64, 1024, True)
    assert triton_fftconv.variant(plan) == "multi-pass"
    plan = triton_fftconv.plan_1d(1 << 19, 1 << 19, causal=True)
    assert plan.fft_shape == (1 << 20,) and (plan.n1, plan.n2, plan.direct) == (1024, 1024, False)
    plan = triton_fftconv.plan_1d(1 << 20, 1 << 20, causal=True)  # 64 x 64 columns, not 32 x 64 (see plan_1d)
    assert plan.fft_shape == (1 << 21,) and (plan.n1, plan.n2, plan.direct) == (4096, 512, False)
    plan = triton_fftconv.plan_1d(1 << 23, 1 << 23, causal=True)  # columns capped at 64 x 64: the rows grow
    assert plan.fft_shape == (1 << 24,) and (plan.n1, plan.n2, plan.direct) == (4096, 4096, False)


@pytest.mark.parametrize("dtype_name,tolerance", [("fp32", 1e-5), ("bf16", 1e-2)])
def test_bench_check_compares_with_float64(device, dtype_name, tolerance):
    """bench_fftconv's hardware check (relative error of y, grad u, grad k on the first channels vs float64), under
    a sweep setting; its errors are those of a real computation: small, and not zero."""
    from hv_testing import load_script

    bench = load_script("eval/bench_fftconv.py")
    errors = bench.check_triton(3, 2, dtype_name, 100, bench.SWEEP[0][2], device=device)
    assert set(errors) == {"y", "du", "dk"}
    assert all(0 < error < tolerance for error in errors.values()), errors


def test_bench_check_2d_compares_with_float64(device):
    """The 2D rows' hardware check (bench_fftconv.check_triton_2d), here on a grid in parity classes."""
    from hv_testing import load_script

    bench = load_script("eval/bench_fftconv.py")
    u, k, D = torch.randn(2, 2, 16, 40, device=device), torch.randn(2, 31, 79, device=device) / 50, torch.randn(2)
    assert triton_fftconv.plan_2d(16, 40, 31, 79).parity
    errors = bench.check_triton_2d(u, k, D.to(device))
    assert set(errors) == {"y", "du", "dk"}
    assert all(0 < error < 1e-5 for error in errors.values()), errors
    # the whole row (check, then timing) on an 8 x 8 image, one program's 16 x 16 grid
    import argparse

    args = argparse.Namespace(warmup=1, iters=1)
    inputs = (torch.randn(2, 2, 8, 8, device=device), torch.randn(2, 15, 15, device=device) / 15, D.to(device))
    impl = lambda u, k, D: fftconv2d(u, k, D, backend="triton")  # noqa: E731
    row = bench.triton_case_2d(impl, inputs, args, device, "fp32", bench.Model.of_2d(2, 8, torch.float32))
    assert row.length == 8 and row.fwd_ms > 0 and row.fwd_bwd_ms > 0 and row.note == "fused-register"
    assert all(0 < error < 1e-5 for error in row.errors.values()), row.errors


def test_bench_checks_rows_in_worker_processes(device, monkeypatch):
    """bench_fftconv --compile-workers: every Triton row (default plan and sweep settings) checked in spawned
    processes, each with its float64 errors."""
    import argparse
    import importlib
    import pathlib

    monkeypatch.syspath_prepend(pathlib.Path(__file__).resolve().parents[1] / "eval")  # the workers import it too
    bench = importlib.import_module("bench_fftconv")
    args = argparse.Namespace(dtypes=["fp32"], lengths=[40, 1024], sweep=True, batch=2, channels=2, compile_workers=2)
    checks = bench.check_in_parallel(args, device)
    settings_at_1024 = ("triton", "triton, 8 warps", "triton, split backward", "triton, 3 programs per SM")
    assert set(checks) == {("fp32", 40, "triton")} | {("fp32", 1024, name) for name in settings_at_1024}
    assert all(isinstance(errors, dict) and max(errors.values()) < 1e-5 for errors in checks.values()), checks
