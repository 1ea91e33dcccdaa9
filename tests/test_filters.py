"""Implicit filters: positional embedding, Sin, decay modulation, kernel shapes and crops, optimizer hints."""

import math

import pytest
import torch
from hv_testing import assert_rel_close

from hyena_vision.layers import (
    ExponentialModulation,
    HyenaFilter,
    HyenaFilter2d,
    ImplicitFilterConfig,
    PositionalEmbedding,
    Sin,
    get_optim_hints,
    no_weight_decay_names,
    param_groups,
)

f64 = torch.float64
Cfg = ImplicitFilterConfig


def test_positional_embedding_formula():
    emb = PositionalEmbedding(7, 10, dtype=f64)
    z, t = emb(10)
    assert z.shape == (10, 7) and t.shape == (10, 1)
    i = torch.arange(10, dtype=f64)
    f = torch.linspace(1e-4, 2, 3, dtype=f64)
    w = 2 * math.pi * i[:, None] / 10 * f
    assert torch.allclose(z[:, 0], i / 9)
    assert torch.allclose(z[:, 1:4], torch.cos(w)) and torch.allclose(z[:, 4:], -torch.sin(w))
    assert torch.allclose(emb(4)[0], z[:4])


def test_bidirectional_embedding_is_centred():
    emb = PositionalEmbedding(3, 6, bidirectional=True, dtype=f64)
    z, t = emb(6)
    assert z.shape == (11, 3)
    assert torch.allclose(t[:, 0], torch.arange(-5, 6, dtype=f64).abs() / 5)
    assert torch.allclose(z[:, 0], torch.arange(-5, 6, dtype=f64) / 5)
    z3, t3 = emb(3)
    assert torch.equal(z3, z[3:8]) and torch.equal(t3, t[3:8])


def test_embedding_trainable_unless_lr_zero():
    assert isinstance(PositionalEmbedding(3, 8).z, torch.nn.Parameter)
    assert get_optim_hints(PositionalEmbedding(3, 8, lr_pos_emb=2e-5).z) == {"lr": 2e-5, "weight_decay": 0.0}
    frozen = PositionalEmbedding(3, 8, lr_pos_emb=0.0)
    assert "z" in dict(frozen.named_buffers()) and not list(frozen.parameters())


@pytest.mark.parametrize("emb_dim", [1, 2, 4])
def test_embedding_dim_must_be_odd_and_at_least_3(emb_dim):
    with pytest.raises(ValueError, match="emb_dim must be odd and >= 3"):
        PositionalEmbedding(emb_dim, 8)


def test_sin_learnable_frequency():
    sin = Sin(4)
    assert torch.equal(sin.freq, torch.ones(4))
    x = torch.randn(3, 4)
    assert torch.allclose(Sin(4, 14.0)(x), torch.sin(14 * x))
    sin(x).sum().backward()
    assert sin.freq.grad is not None


def test_modulation_rates_and_formula():
    mod = ExponentialModulation(5, dtype=f64)
    assert math.isclose(mod.deltas[0].item(), math.log(1e-2) / 1.5)  # about -3.07
    assert math.isclose(mod.deltas[-1].item(), math.log(1e-2) / 0.3)  # about -15.35
    t, h = torch.rand(7, 1, dtype=f64), torch.randn(7, 5, dtype=f64)
    assert torch.allclose(mod(t, h), h * torch.exp(-t * mod.deltas.abs()))
    shifted = ExponentialModulation(5, shift=0.5, dtype=f64)
    assert torch.allclose(shifted(t, h), h * (torch.exp(-t * mod.deltas.abs()) + 0.5))
    assert torch.equal(ExponentialModulation(5, modulate=False)(t.float(), h.float()), h.float())
    # the slowest channel has decayed to `target` at t = slow_decay_pct
    assert math.isclose(math.exp(-1.5 * abs(mod.deltas[0].item())), 1e-2)


def test_causal_filter_shapes_and_prefix():
    filt = HyenaFilter(6, 32, filter_cfg=Cfg(emb_dim=5, filter_order=16), dtype=f64)
    k = filt(32)
    assert k.shape == (6, 32)
    assert_rel_close(filt(20), k[:, :20])  # shorter inputs: the first samples
    longer = filt(40)  # extended at the same lag spacing: a causal prefix does not change
    assert_rel_close(longer[:, :32], k)


def test_bidirectional_filter_centre_crop_and_decay():
    filt = HyenaFilter(4, 16, bidirectional=True, dtype=f64)
    k = filt(16)
    assert k.shape == (4, 31)
    assert_rel_close(filt(5), k[:, 11:20])
    # the decay window is symmetric: the envelope at lag +s and -s is the same
    assert torch.allclose(filt.pos_emb.t[:15].flip(0), filt.pos_emb.t[16:])


def test_filter_dropout_and_normalization():
    filt = HyenaFilter(8, 64, filter_cfg=Cfg(filter_dropout=0.5))
    filt.train()
    assert (filt(64) == 0).float().mean() > 0.3
    filt.eval()
    assert (filt(64) == 0).float().mean() < 0.01
    normed = HyenaFilter(8, 16, filter_cfg=Cfg(normalized=True), dtype=f64)
    assert torch.allclose(normed(16).abs().sum(0), torch.ones(16, dtype=f64))


def test_filter2d_shapes_crop_and_distance():
    filt = HyenaFilter2d(4, (8, 6), filter_cfg=Cfg(filter_order=16), dtype=f64)
    k = filt((8, 6))
    assert k.shape == (4, 15, 11)
    assert_rel_close(filt((3, 4)), k[:, 5:10, 2:9])
    assert_rel_close(filt((9, 7))[:, 1:-1, 1:-1], k)  # extended by one lag
    # no modulation, no MLP: the decay envelope alone peaks at the centre and decreases with distance
    envelope = filt.modulation(torch.tensor([[0.0], [0.5], [1.0]], dtype=f64), torch.ones(3, 4, dtype=f64))
    assert torch.all(envelope[0] > envelope[1]) and torch.all(envelope[1] > envelope[2])


def test_optim_hints_and_param_groups():
    filt = HyenaFilter(4, 8, filter_cfg=Cfg(lr=1e-3, lr_pos_emb=1e-5))
    for name, param in filt.ffn.named_parameters():
        assert get_optim_hints(param) == {"lr": 1e-3, "weight_decay": 0.0}, name
    assert get_optim_hints(filt.bias) == {}
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), filt)
    groups = {(g["lr"], g["weight_decay"]): len(g["params"]) for g in param_groups(model, lr=0.1, weight_decay=0.05)}
    n_ffn = len(list(filt.ffn.parameters()))
    assert groups == {(0.1, 0.05): 1, (0.1, 0.0): 2, (1e-3, 0.0): n_ffn, (1e-5, 0.0): 1}
    names = no_weight_decay_names(model)
    assert "1.pos_emb.z" in names and "1.ffn.input.weight" in names and "0.weight" not in names
    exclude = param_groups(model, lr=0.1, weight_decay=0.05, no_weight_decay={"0.weight"})
    assert all(g["weight_decay"] == 0.0 for g in exclude if g["lr"] == 0.1)


@pytest.mark.parametrize(
    "field, value",
    [
        ("emb_dim", 4),
        ("filter_order", 0),
        ("num_inner_mlps", -1),
        ("target", 1.5),
        ("fast_decay_pct", 0.0),
        ("filter_dropout", 1.0),
        ("lr", -1e-3),
        ("lr_pos_emb", -1.0),
    ],
)
def test_filter_config_validates_and_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ImplicitFilterConfig(**{field: value})


def test_filter_config_is_frozen_and_shared():
    cfg = ImplicitFilterConfig(filter_order=16, w=14.0)
    with pytest.raises(AttributeError):
        cfg.w = 1.0
    assert cfg.replace(emb_dim=5) == ImplicitFilterConfig(filter_order=16, w=14.0, emb_dim=5)
    with pytest.raises(TypeError, match="filter_ordr"):
        cfg.replace(filter_ordr=8)
    filt = HyenaFilter(4, 8, filter_cfg=cfg)
    assert filt.filter_cfg is cfg and filt.ffn.input.out_features == 16 and torch.all(filt.ffn.sin.freq == 14.0)


def test_filter_config_resolve_takes_a_config_a_mapping_or_none():
    cfg = ImplicitFilterConfig(filter_order=16, w=14.0)
    assert ImplicitFilterConfig.resolve(cfg) is cfg and ImplicitFilterConfig.resolve(None) == ImplicitFilterConfig()
    assert ImplicitFilterConfig.resolve({"filter_order": 16, "w": 14.0}) == cfg
    with pytest.raises(ValueError, match=r"unknown filter_cfg keys \['filter_ordr', 'lr_pos'\]"):
        ImplicitFilterConfig.resolve({"filter_ordr": 8, "lr_pos": 0.0, "w": 2.0})
    with pytest.raises(TypeError, match="filter_cfg must be"):
        ImplicitFilterConfig.resolve(["filter_order", 16])


# --- other lengths: extension at the same lag spacing, stretching, loading weights of another length -----------


def _trained(emb: PositionalEmbedding) -> PositionalEmbedding:
    """Perturb z as training would (it is a parameter with its own small lr)."""
    with torch.no_grad():
        emb.z.add_(0.01 * torch.randn_like(emb.z))
    return emb


@pytest.mark.parametrize("bidirectional", [False, True])
def test_embedding_extends_at_the_same_spacing(bidirectional):
    torch.manual_seed(0)
    emb = _trained(PositionalEmbedding(7, 10, bidirectional=bidirectional, dtype=f64))
    z, t = emb(14)
    lags = torch.arange(-13 if bidirectional else 0, 14, dtype=f64)
    f = torch.linspace(1e-4, 2, 3, dtype=f64)
    w = 2 * math.pi * lags[:, None] / 10 * f  # the spacing of the 10-sample filter
    expected = torch.cat([lags[:, None] / 9, torch.cos(w), -torch.sin(w)], dim=-1)
    stored = slice(4, 23) if bidirectional else slice(0, 10)
    torch.testing.assert_close(z[stored], emb.z, rtol=0, atol=0)  # trained rows kept
    outside = torch.ones(len(lags), dtype=torch.bool)
    outside[stored] = False
    torch.testing.assert_close(z[outside], expected[outside], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t[:, 0], lags.abs() / 9, rtol=1e-12, atol=0)


@pytest.mark.parametrize("new_len", [5, 16])  # smaller, larger
def test_resize_extend_and_stretch(new_len):
    torch.manual_seed(1)
    extend = _trained(PositionalEmbedding(5, 10, bidirectional=True, dtype=f64))
    expected_z, expected_t = extend(new_len)
    hints = get_optim_hints(extend.z)
    extend.resize(new_len)
    assert extend.z.shape == (2 * new_len - 1, 5) and get_optim_hints(extend.z) == hints
    torch.testing.assert_close(extend(new_len), (expected_z, expected_t), rtol=0, atol=0)

    stretch = PositionalEmbedding(5, 10, bidirectional=True, resize_mode="stretch", dtype=f64)
    with torch.no_grad():
        stretch.z.add_(0.5)  # a constant trained offset: interpolated, it stays constant
    stretch.resize(new_len)
    fresh = PositionalEmbedding(5, new_len, bidirectional=True, dtype=f64)  # the analytic grid of new_len
    assert stretch.scale_len == new_len
    torch.testing.assert_close(stretch.z, fresh.z + 0.5, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stretch.t, fresh.t, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("new_len", [5, 16])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_filter_loads_weights_of_another_length(new_len, bidirectional):
    """A filter built for new_len loading one trained at 10 (extend) gives the same kernel at every length."""
    torch.manual_seed(2)
    source = HyenaFilter(4, 10, bidirectional=bidirectional, filter_cfg=Cfg(filter_order=8), dtype=f64)
    _trained(source.pos_emb)
    target = HyenaFilter(4, new_len, bidirectional=bidirectional, filter_cfg=Cfg(filter_order=8), dtype=f64)
    target.load_state_dict(source.state_dict())
    assert target.pos_emb.scale_len == 10 and target.pos_emb.z.shape[0] == len(target.pos_emb.t)
    for length in (3, new_len, 20) if new_len > 10 else (3, new_len):  # a smaller one dropped trained rows 5..9
        torch.testing.assert_close(target(length), source(length), rtol=1e-12, atol=1e-14)
    back = HyenaFilter(4, 10, bidirectional=bidirectional, filter_cfg=Cfg(filter_order=8), dtype=f64)
    back.load_state_dict(target.state_dict())  # and back (from the larger one: exactly the trained rows)
    if new_len > 10:
        torch.testing.assert_close(back.pos_emb.z, source.pos_emb.z, rtol=0, atol=0)


def test_filter2d_stretch_load_matches_resize():
    torch.manual_seed(3)
    cfg = Cfg(filter_order=8, resize_mode="stretch")
    source = HyenaFilter2d(4, (6, 4), filter_cfg=cfg, dtype=f64)
    _trained(source.pos_emb_y)
    target = HyenaFilter2d(4, (9, 3), filter_cfg=cfg, dtype=f64)
    target.load_state_dict(source.state_dict())
    source.resize((9, 3))
    torch.testing.assert_close(target((9, 3)), source((9, 3)), rtol=1e-12, atol=1e-14)
    assert target.pos_emb_y.scale_len == 9 and target.pos_emb_x.scale_len == 3


def test_resize_mode_must_be_known():
    with pytest.raises(ValueError, match="resize_mode must be one of"):
        ImplicitFilterConfig(resize_mode="crop")
