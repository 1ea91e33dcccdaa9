"""fftconv / fftconv2d (torch backend) against direct O(N^2) convolution in float64, gradients, dtypes, errors."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hyena_vision.ops import cpu_supports_bf16, fft_size, fftconv, fftconv2d
from hyena_vision.ops.longconv import short_conv

fftconv_module = importlib.import_module("hyena_vision.ops.fftconv")

f64 = torch.float64


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


def direct_conv1d(u, k, lag0):
    """y[b,c,t] = sum_j k[c, j] u[b, c, t - (j - lag0)] over in-range indices (lag0: index of lag 0 in k)."""
    length = u.shape[-1]
    y = torch.zeros_like(u)
    for t in range(length):
        for j in range(k.shape[-1]):
            src = t - (j - lag0)
            if 0 <= src < length:
                y[..., t] += k[:, j] * u[..., src]
    return y


def direct_conv2d(u, k):
    height, width = u.shape[-2:]
    mh, mw = (k.shape[-2] + 1) // 2, (k.shape[-1] + 1) // 2
    y = torch.zeros_like(u)
    for p in range(-(mh - 1), mh):
        for q in range(-(mw - 1), mw):
            shifted = torch.zeros_like(u)  # shifted[i, j] = u[i - p, j - q]
            shifted[..., max(p, 0) : height + min(p, 0), max(q, 0) : width + min(q, 0)] = u[
                ..., max(-p, 0) : height - max(p, 0), max(-q, 0) : width - max(q, 0)
            ]
            y += k[:, mh - 1 + p, mw - 1 + q, None, None] * shifted
    return y


@pytest.mark.parametrize("length", [1, 2, 7, 16, 33, 64])
def test_causal_matches_direct(length):
    u, D = torch.randn(2, 3, length, dtype=f64), torch.randn(3, dtype=f64)
    for klen in sorted({1, length // 2 + 1, length}):
        k = torch.randn(3, klen, dtype=f64)
        expected = direct_conv1d(u, k, 0) + D[:, None] * u
        assert rel_err(fftconv(u, k, D, backend="torch"), expected) < 1e-10


@pytest.mark.parametrize("length", [1, 2, 7, 16, 33, 64])
def test_bidirectional_matches_direct(length):
    u, D = torch.randn(2, 3, length, dtype=f64), torch.randn(3, dtype=f64)
    for lags in sorted({1, length // 2 + 1, length}):
        k = torch.randn(3, 2 * lags - 1, dtype=f64)
        expected = direct_conv1d(u, k, lags - 1) + D[:, None] * u
        assert rel_err(fftconv(u, k, D, causal=False, backend="torch"), expected) < 1e-10


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (8, 8), (9, 4), (16, 3)])
def test_2d_matches_direct(size):
    height, width = size
    u, D = torch.randn(2, 3, height, width, dtype=f64), torch.randn(3, dtype=f64)
    for mh, mw in sorted({(height, width), ((height + 1) // 2, 1), (1, width)}):
        k = torch.randn(3, 2 * mh - 1, 2 * mw - 1, dtype=f64)
        expected = direct_conv2d(u, k) + D[:, None, None] * u
        assert rel_err(fftconv2d(u, k, D, backend="torch"), expected) < 1e-10


def test_linear_not_circular():
    """An impulse at the last step must not wrap around to the start."""
    u = torch.zeros(1, 1, 8, dtype=f64)
    u[..., -1] = 1.0
    k = torch.randn(1, 8, dtype=f64)
    y = fftconv(u, k, backend="torch")
    assert y[..., :-1].abs().max() < 1e-12 and torch.isclose(y[0, 0, -1], k[0, 0])
    y = fftconv(u, torch.randn(1, 15, dtype=f64), causal=False, backend="torch")
    assert y.abs().max() > 0.1  # lags reach back from the end; nothing is lost or wrapped
    y2 = fftconv2d(
        torch.zeros(1, 1, 4, 4, dtype=f64).index_put_(
            (torch.tensor(0), torch.tensor(0), torch.tensor(3), torch.tensor(3)), torch.tensor(1.0, dtype=f64)
        ),
        torch.ones(1, 3, 3, dtype=f64),
        backend="torch",
    )
    assert y2[0, 0, :2].abs().max() < 1e-12 and y2[0, 0, :, :2].abs().max() < 1e-12  # no wrap to the far corner


@pytest.mark.parametrize("causal", [True, False])
def test_gates(causal):
    u, pre, post = (torch.randn(2, 3, 11, dtype=f64) for _ in range(3))
    k, D = torch.randn(3, 11 if causal else 21, dtype=f64), torch.randn(3, dtype=f64)
    expected = post * fftconv(pre * u, k, D, causal=causal, backend="torch")
    actual = fftconv(u, k, D, causal=causal, pre_gate=pre, post_gate=post, backend="torch")
    assert rel_err(actual, expected) < 1e-12


def test_causality():
    """d y[t] / d u[t+1:] is zero up to float64 FFT rounding (~1e-17; an FFT cannot make it bitwise 0)."""
    length = 20
    u = torch.randn(1, 2, length, dtype=f64, requires_grad=True)
    y = fftconv(u, torch.randn(2, length, dtype=f64), torch.randn(2, dtype=f64), backend="torch")
    for t in (0, 7, length - 2):
        (grad,) = torch.autograd.grad(y[..., t].sum(), u, retain_graph=True)
        past = grad[..., : t + 1].abs().max()
        assert past > 0.1
        assert grad[..., t + 1 :].abs().max() <= 1e-13 * past


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_1d(causal):
    length = 6
    args = [
        torch.randn(2, 2, length, dtype=f64, requires_grad=True),
        torch.randn(2, length if causal else 2 * length - 1, dtype=f64, requires_grad=True),
        torch.randn(2, dtype=f64, requires_grad=True),
        torch.randn(2, 2, length, dtype=f64, requires_grad=True),
        torch.randn(2, 2, length, dtype=f64, requires_grad=True),
    ]

    def fn(u, k, D, pre, post):
        return fftconv(u, k, D, causal=causal, pre_gate=pre, post_gate=post, backend="torch")

    assert torch.autograd.gradcheck(fn, args)


def test_gradcheck_2d():
    args = [
        torch.randn(1, 2, 4, 5, dtype=f64, requires_grad=True),
        torch.randn(2, 7, 9, dtype=f64, requires_grad=True),
        torch.randn(2, dtype=f64, requires_grad=True),
    ]
    assert torch.autograd.gradcheck(lambda u, k, D: fftconv2d(u, k, D, backend="torch"), args)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_dtype_round_trip(dtype, tol):
    u = torch.randn(2, 4, 50).to(dtype)
    k, D = torch.randn(4, 50) / 50**0.5, torch.randn(4)
    expected = direct_conv1d(u.double(), k.double(), 0) + D.double()[:, None] * u.double()
    y = fftconv(u, k, D, backend="torch")
    assert y.dtype == dtype
    assert rel_err(y, expected) < tol
    u2 = torch.randn(1, 4, 6, 5).to(dtype)
    k2 = torch.randn(4, 11, 9)
    y2 = fftconv2d(u2, k2, D, backend="torch")
    assert y2.dtype == dtype
    assert rel_err(y2, direct_conv2d(u2.double(), k2.double()) + D.double()[:, None, None] * u2.double()) < tol


def test_fft_size_is_minimal_5_smooth():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 600):
        m = fft_size(n)
        assert m >= n and smooth(m) and not any(smooth(j) for j in range(n, m))


def test_errors():
    u, k = torch.randn(2, 3, 8), torch.randn(3, 8)
    cases = [
        (lambda: fftconv(u[0], k), ValueError, r"u must be \(B, C, L\)"),
        (lambda: fftconv(u, k[0]), ValueError, r"k must be \(C, Lk\)"),
        (lambda: fftconv(u, torch.randn(4, 8)), ValueError, "k has 4 channels but u has C=3"),
        (lambda: fftconv(u, torch.randn(3, 9)), ValueError, "1 <= Lk <= L=8, got Lk=9"),
        (lambda: fftconv(u, torch.randn(3, 16), causal=False), ValueError, r"\(C, 2M-1\) with 1 <= M <= L=8"),
        (lambda: fftconv(u, torch.randn(3, 17), causal=False), ValueError, r"\(C, 2M-1\) with 1 <= M <= L=8"),
        (lambda: fftconv(u, k, torch.randn(4)), ValueError, r"D must have shape \(C,\) = \(3,\)"),
        (lambda: fftconv(u, k, pre_gate=torch.randn(2, 3, 7)), ValueError, "pre_gate must have u's shape"),
        (lambda: fftconv(u, k, post_gate=torch.randn(3, 8)), ValueError, "post_gate must have u's shape"),
        (lambda: fftconv(u.long(), k), TypeError, "u must be a floating-point tensor"),
        (lambda: fftconv(u, k, backend="cuda"), ValueError, "backend must be one of"),
        (lambda: fftconv(torch.randn(2, 3, 0), torch.randn(3, 1)), ValueError, "L >= 1"),
        (lambda: fftconv2d(u, k), ValueError, r"u must be \(B, C, H, W\)"),
        (lambda: fftconv2d(u[..., None], k), ValueError, r"k must be \(C, 2Mh-1, 2Mw-1\)"),
        (lambda: fftconv2d(torch.randn(1, 3, 4, 4), torch.randn(3, 9, 7)), ValueError, "Mh <= H=4"),
        (lambda: fftconv2d(torch.randn(1, 3, 4, 4), torch.randn(3, 6, 7)), ValueError, "odd sizes"),
        (lambda: fftconv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 7, 7)), ValueError, "k has 2 channels"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_triton_backend_unavailable_is_an_error(monkeypatch):
    monkeypatch.setattr(fftconv_module, "_triton_module", lambda: None)
    u, k = torch.randn(1, 2, 8), torch.randn(2, 8)
    with pytest.raises(RuntimeError, match="backend='triton' requested"):
        fftconv(u, k, backend="triton")
    assert torch.equal(fftconv(u, k, backend="auto"), fftconv(u, k, backend="torch"))  # auto falls back


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(1, 40),
    klen_frac=st.floats(0.0, 1.0),
    causal=st.booleans(),
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
)
def test_any_shape_matches_direct(length, klen_frac, causal, batch, channels):
    lags = 1 + int(klen_frac * (length - 1))  # 1..L one-sided lags
    u = torch.randn(batch, channels, length, dtype=f64)
    k = torch.randn(channels, lags if causal else 2 * lags - 1, dtype=f64)
    expected = direct_conv1d(u, k, 0 if causal else lags - 1)
    assert rel_err(fftconv(u, k, causal=causal, backend="torch"), expected) < 1e-10


longconv_module = importlib.import_module("hyena_vision.ops.longconv")


def channels_last_slices(batch, channels, length, count, dtype=f64):
    """count (B, C, L) views of one channels-last (B, L, count*C) tensor, as the Hyena operator's split gives."""
    z = torch.randn(batch, length, count * channels, dtype=dtype)
    return [c.transpose(1, 2).requires_grad_() for c in z.split(channels, dim=-1)]


@pytest.mark.parametrize("causal", [True, False])
def test_channels_last_views_keep_layout_and_values(causal):
    u, pre, post = channels_last_slices(2, 3, 9, 3)
    k, D = torch.randn(3, 9 if causal else 17, dtype=f64), torch.randn(3, dtype=f64)
    y = fftconv(u, k, D, causal=causal, pre_gate=pre, post_gate=post, backend="torch")
    expected = post * (direct_conv1d(pre * u, k, 0 if causal else 8) + D[:, None] * pre * u)
    assert rel_err(y, expected) < 1e-12
    assert y.transpose(1, 2).is_contiguous()  # written channels-last, as u is laid out
    (grad_u,) = torch.autograd.grad(y, u, torch.randn_like(y))
    assert grad_u.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_1d_channels_last(causal):
    length = 7
    u, pre, post = (t.detach().requires_grad_() for t in channels_last_slices(2, 3, length, 3))
    k = torch.randn(3, length if causal else 2 * length - 1, dtype=f64, requires_grad=True)
    D = torch.randn(3, dtype=f64, requires_grad=True)

    def fn(u, k, D, pre, post):
        return fftconv(u, k, D, causal=causal, pre_gate=pre, post_gate=post, backend="torch")

    assert torch.autograd.gradcheck(fn, [u, k, D, pre, post])
    assert torch.autograd.gradcheck(lambda u, k: fftconv(u, k, causal=causal, backend="torch"), [u, k])
    k_fixed = k.detach()  # D's gradient without the kernel's (computed directly, not from the correlation)
    assert torch.autograd.gradcheck(lambda u, D: fftconv(u, k_fixed, D, causal=causal, backend="torch"), [u, D])


def test_gradcheck_2d_channels_last():
    u = torch.randn(2, 5, 4, 3, dtype=f64).permute(0, 3, 1, 2).requires_grad_()  # (B, C, H, W) view of NHWC
    k = torch.randn(3, 9, 5, dtype=f64, requires_grad=True)
    D = torch.randn(3, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, k, D: fftconv2d(u, k, D, backend="torch"), [u, k, D])
    assert fftconv2d(u, k, D, backend="torch").permute(0, 2, 3, 1).is_contiguous()


@pytest.mark.parametrize("size", [(5, 7), (8, 8), (9, 4)])
def test_2d_fft_path_matches_direct(size, monkeypatch):
    """Small 2D transforms on the CPU are DFT matrix products; the torch.fft path (CUDA, large images) too."""
    height, width = size
    u, D = torch.randn(2, 3, height, width, dtype=f64), torch.randn(3, dtype=f64)
    k = torch.randn(3, 2 * height - 1, 2 * width - 1, dtype=f64)
    expected = direct_conv2d(u, k) + D[:, None, None] * u
    assert rel_err(fftconv2d(u, k, D, backend="torch"), expected) < 1e-10
    monkeypatch.setattr(longconv_module, "_DFT_MAX", 0)
    assert rel_err(fftconv2d(u, k, D, backend="torch"), expected) < 1e-10


def direct_short_conv(z, weight, bias, padding):
    """The reference: nn.functional.conv1d on channels-first, cropped to the first L steps, as the original."""
    length = z.shape[1]
    y = F.conv1d(z.transpose(1, 2), weight, bias, padding=padding, groups=z.shape[-1])[..., :length]
    return y.transpose(1, 2)


@pytest.mark.parametrize(("taps", "padding", "length"), [(3, 2, 9), (3, 1, 9), (5, 2, 11), (5, 4, 3), (3, 2, 1)])
def test_short_conv_matches_conv1d_and_gradcheck(taps, padding, length):
    z = torch.randn(2, length, 4, dtype=f64, requires_grad=True)
    weight = torch.randn(4, 1, taps, dtype=f64, requires_grad=True)
    bias = torch.randn(4, dtype=f64, requires_grad=True)
    expected = direct_short_conv(z, weight, bias, padding)
    assert rel_err(short_conv(z, weight, bias, padding), expected) < 1e-12
    assert torch.autograd.gradcheck(lambda z, w, b: short_conv(z, w, b, padding), [z, weight, bias])
    assert torch.autograd.gradcheck(lambda z, w: short_conv(z, w, None, padding), [z, weight])
    with pytest.raises(ValueError, match=r"padding must be in \[0, K="):
        short_conv(z, weight, bias, taps)


def test_bf16_autocast_forward_backward():
    """Under CPU bf16 autocast the transforms run in float32; outputs and gradients stay close to float64."""
    u, pre, post = (t.detach().to(torch.bfloat16).requires_grad_() for t in channels_last_slices(2, 4, 64, 3))
    k, D = (torch.randn(4, 64) / 8).requires_grad_(), torch.randn(4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fftconv(u, k, D, pre_gate=pre, post_gate=post, backend="torch")
    assert y.dtype == torch.bfloat16
    grad = torch.randn_like(y)
    grads = torch.autograd.grad(y, [u, k, D, pre, post], grad)
    ref_inputs = [t.detach().double().requires_grad_() for t in (u, k, D, pre, post)]
    ref = fftconv(ref_inputs[0], ref_inputs[1], ref_inputs[2], pre_gate=ref_inputs[3], post_gate=ref_inputs[4])
    ref_grads = torch.autograd.grad(ref, ref_inputs, grad.double())
    assert rel_err(y, ref) < 2e-2
    for actual, expected, source in zip(grads, ref_grads, (u, k, D, pre, post), strict=True):
        assert actual.dtype == source.dtype
        assert rel_err(actual, expected) < 2e-2


def test_cpu_supports_bf16(monkeypatch):
    cpu_module = importlib.import_module("hyena_vision.ops.cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(cpu_module, "_cpuinfo_flags", lambda: {"avx2", "fma"})
    assert cpu_supports_bf16() is False
    monkeypatch.setattr(cpu_module, "_cpuinfo_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert cpu_supports_bf16() is True
    monkeypatch.setattr(cpu_module, "_cpuinfo_flags", lambda: set())
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert cpu_supports_bf16() is True
