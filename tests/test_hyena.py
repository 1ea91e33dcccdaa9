"""HyenaOperator (1D) and HyenaOperator2d: shapes, causality, semantics, errors, dtypes."""

import pytest
import torch

from hyena_vision.layers import HyenaOperator, HyenaOperator2d, ImplicitFilterConfig
from hyena_vision.ops import fftconv2d

f64 = torch.float64


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize(("num_heads", "inner_factor"), [(1, 1), (2, 1), (4, 2)])
@pytest.mark.parametrize("causal", [True, False])
def test_shapes_and_gradients(order, num_heads, inner_factor, causal):
    op = HyenaOperator(
        8,
        32,
        order=order,
        num_heads=num_heads,
        inner_factor=inner_factor,
        causal=causal,
        filter_cfg=dict(filter_order=16),
    )
    u = torch.randn(2, 21, 8, requires_grad=True)
    y = op(u)
    assert y.shape == (2, 21, 8)
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in op.parameters())
    assert op.in_proj.out_features == (order + 1) * 8 * inner_factor
    assert op.filter.channels == (order - 1) * 8 * inner_factor // num_heads


def test_heads_share_filters():
    op = HyenaOperator(8, 16, num_heads=4, filter_cfg=dict(filter_order=8))
    k, skip = op.long_filters(16)
    assert k.shape == (1, 8, 16) and skip.shape == (1, 8)
    assert torch.equal(k[0, :2], k[0, 2:4]) and torch.equal(skip[0, :2], skip[0, 6:])


def test_causal_operator_is_causal():
    op = HyenaOperator(6, 24, order=3, dtype=f64)
    u = torch.randn(1, 24, 6, dtype=f64, requires_grad=True)
    y = op(u)
    for t in (0, 11, 22):
        (grad,) = torch.autograd.grad(y[:, t].sum(), u, retain_graph=True)
        past = grad[:, : t + 1].abs().max()
        assert past > 0 and grad[:, t + 1 :].abs().max() <= 1e-12 * past  # zero up to FFT rounding
    # and so a prefix's outputs do not depend on the sequence's length
    with torch.no_grad():
        assert torch.allclose(op(u[:, :10]), op(u)[:, :10], rtol=1e-10, atol=1e-12)


def test_bidirectional_operator_sees_the_future():
    op = HyenaOperator(6, 24, causal=False, short_filter_order=5, dtype=f64)
    u = torch.randn(1, 24, 6, dtype=f64, requires_grad=True)
    (grad,) = torch.autograd.grad(op(u)[:, 3].sum(), u)
    assert grad[:, 10:].abs().max() > 1e-6


def test_operator_matches_explicit_recurrence():
    """The loop pairs filter o with gate x_{N-1-o}, x0 gates the output (written out by hand for order 3)."""
    op = HyenaOperator(4, 12, order=3, dtype=f64).eval()
    u = torch.randn(2, 12, 4, dtype=f64)
    z = op.short_filter(op.in_proj(u).transpose(1, 2))[..., :12]
    x0, x1, x2, v = z.split(4, dim=1)
    k, skip = op.long_filters(12)

    def conv(x, kk, d):  # direct causal convolution plus skip
        y = torch.stack([sum(kk[:, s] * x[..., t - s] for s in range(t + 1)) for t in range(12)], dim=-1)
        return y + d[:, None] * x

    v = conv(v * x2, k[0], skip[0])
    v = conv(v * x1, k[1], skip[1])
    expected = op.out_proj((v * x0).transpose(1, 2))
    with torch.no_grad():
        assert torch.allclose(op(u), expected, rtol=1e-10, atol=1e-12)


def test_dropout_and_filter_dropout_are_applied():
    op = HyenaOperator(8, 16, dropout=0.5, filter_cfg=dict(filter_dropout=0.5))
    u = torch.randn(2, 16, 8)
    op.train()
    assert not torch.equal(op(u), op(u))
    op.eval()
    assert torch.equal(op(u), op(u))
    plain = HyenaOperator(8, 16)
    plain.load_state_dict(op.state_dict())
    plain.train()  # p = 0: the fused-gate path; must equal the eval output of the dropout model
    assert torch.allclose(plain(u), op(u), atol=1e-6)


def test_operator_errors():
    op = HyenaOperator(8, 16)
    with pytest.raises(ValueError, match=r"input must be \(B, L, d_model=8\)"):
        op(torch.randn(17, 8))
    with pytest.raises(ValueError, match=r"input must be \(B, L, d_model=8\)"):
        op(torch.randn(1, 16, 9))
    with pytest.raises(TypeError, match="filter_ordr"):
        HyenaOperator(8, 16, filter_ordr=32)  # no keyword sink
    with pytest.raises(ValueError, match=r"unknown filter_cfg keys \['filter_ordr'\]"):
        HyenaOperator(8, 16, filter_cfg=dict(filter_ordr=32))
    with pytest.raises(ValueError, match="num_heads must divide"):
        HyenaOperator(8, 16, num_heads=3)
    with pytest.raises(ValueError, match="order must be >= 2"):
        HyenaOperator(8, 16, order=1)
    with pytest.raises(ValueError, match="odd when causal=False"):
        HyenaOperator(8, 16, causal=False, short_filter_order=4)
    with pytest.raises(ValueError, match="fftconv_backend must be one of"):
        HyenaOperator(8, 16, fftconv_backend="cufft")
    with pytest.raises(ValueError, match="emb_dim must be odd"):
        HyenaOperator(8, 16, filter_cfg=dict(emb_dim=4))


def test_bf16_autocast():
    op = HyenaOperator(8, 16)
    u = torch.randn(2, 16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = op(u)
    assert y.dtype == torch.bfloat16
    rel = (y.float() - op(u)).norm() / op(u).norm()
    assert rel < 5e-2


@pytest.mark.parametrize("gated", [True, False])
def test_2d_shapes_and_smaller_inputs(gated):
    op = HyenaOperator2d(8, (9, 7), gated=gated, filter_cfg=dict(filter_order=16))
    for size in ((9, 7), (4, 5), (1, 1)):
        u = torch.randn(2, *size, 8, requires_grad=True)
        y = op(u)
        assert y.shape == u.shape
        y.sum().backward()
        assert u.grad.abs().sum() > 0


def test_2d_ungated_is_the_long_convolution():
    op = HyenaOperator2d(4, (6, 5), gated=False, dtype=f64)
    u = torch.randn(2, 6, 5, 4, dtype=f64)
    expected = fftconv2d(u.permute(0, 3, 1, 2), op.filter((6, 5)), op.filter.bias).permute(0, 2, 3, 1)
    with torch.no_grad():
        assert torch.allclose(op(u), expected)
    assert not hasattr(op, "in_proj")


def test_2d_translation_equivariance_away_from_borders():
    """A pattern on a zero background, moved by (dy, dx), gives the same output moved by (dy, dx)."""
    torch.manual_seed(0)
    op = HyenaOperator2d(4, (16, 16), order=3, dtype=f64).eval()
    with torch.no_grad():
        op.in_proj.bias.zero_()  # zero background must stay zero before the output projection
        op.short_filter.bias.zero_()
        pattern = torch.randn(1, 4, 4, 4, dtype=f64)
        a = torch.zeros(1, 16, 16, 4, dtype=f64)
        b = torch.zeros(1, 16, 16, 4, dtype=f64)
        a[:, 3:7, 2:6] = pattern
        b[:, 8:12, 9:13] = pattern  # shifted by (5, 7)
        ya, yb = op(a), op(b)
    assert torch.allclose(ya[:, : 16 - 5, : 16 - 7], yb[:, 5:, 7:], rtol=1e-9, atol=1e-11)
    signal = (ya - op.out_proj.bias).abs().max()  # what the pattern adds to the constant background output
    assert (ya - yb).abs().max() > 0.1 * signal  # the outputs themselves differ: the test is not vacuous


def test_2d_errors():
    op = HyenaOperator2d(8, (8, 8))
    with pytest.raises(ValueError, match=r"channels-last \(B, H, W, d_model=8\)"):
        op(torch.randn(1, 8, 8, 8, 1))
    with pytest.raises(ValueError, match="gated=False has one long convolution"):
        HyenaOperator2d(8, (8, 8), gated=False, order=3)
    with pytest.raises(ValueError, match="short_filter_order must be odd"):
        HyenaOperator2d(8, (8, 8), short_filter_order=2)
    with pytest.raises(TypeError):
        HyenaOperator2d(8, (8, 8), causal=True)


def test_filter_cfg_is_handed_down_or_built_from_a_mapping():
    cfg = ImplicitFilterConfig(filter_order=8, emb_dim=5, w=14.0)
    op = HyenaOperator(8, 16, filter_cfg=cfg)
    assert op.filter.filter_cfg is cfg
    op2d = HyenaOperator2d(8, (4, 4), filter_cfg=dict(filter_order=8, emb_dim=5, w=14.0, modulate=False))
    assert op2d.filter.filter_cfg == cfg.replace(modulate=False)
    assert op2d.filter.ffn.input.in_features == 2 * 5  # row and column features
    assert HyenaOperator(8, 16, filter_cfg=dict(filter_order=4)).filter.filter_cfg == ImplicitFilterConfig(
        filter_order=4
    )


def test_longer_inputs_extend_the_filters_as_resize_does():
    """An input longer than l_max sees the same filters as the operator resized to that length (extend)."""
    torch.manual_seed(0)
    op = HyenaOperator(6, 12, causal=False, short_filter_order=3, dtype=f64).eval()
    op2d = HyenaOperator2d(6, (5, 4), dtype=f64).eval()
    u, u2d = torch.randn(2, 20, 6, dtype=f64), torch.randn(2, 7, 9, 6, dtype=f64)
    with torch.no_grad():
        before, before2d = op(u), op2d(u2d)
        op.resize(20)
        op2d.resize((7, 9))
        assert op.l_max == 20 and op2d.l_max == (7, 9) and op2d.filter.pos_emb_x.z.shape == (17, 3)
        torch.testing.assert_close(op(u), before, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(op2d(u2d), before2d, rtol=1e-10, atol=1e-12)
