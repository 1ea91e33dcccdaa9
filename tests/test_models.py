"""The timm model zoo: every model through timm's API, parameter counts, numerics of S4ND, loading, features.

Kept small for CPU: ImageNet-size models run at 64 px (16 tokens at patch 16) unless the test is about 224 px.
The ``test_timm_contract_*`` tests check what timm's generic tests check (tests/timm_generic runs those when
they can be downloaded); they are the offline fallback of ``tests/timm_generic/run.sh``.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import subprocess
import sys

import pytest
import timm
import timm.data
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.data import IMAGENET_DEFAULT_MEAN
from timm.models import get_notrace_functions, get_notrace_modules
from timm.models._manipulate import group_parameters
from timm.optim import create_optimizer_v2

import hyena_vision.models  # noqa: F401  (registers the models)
from hyena_vision.layers import HyenaFilter, HyenaFilter2d, ImplicitFilterConfig, get_optim_hints
from hyena_vision.layers.s4nd import S4ND, DiagonalSSMKernel, SSMKernelConfig
from hyena_vision.models import HyenaIso, HyenaTextEncoder, HyenaViT, checkpoint_filter_fn, param_groups
from hyena_vision.models._helpers import CIFAR10_MEAN
from hyena_vision.models.hyena_lm import HyenaLM

REPO = pathlib.Path(__file__).resolve().parents[1]
COMPILE_BACKEND = "inductor"  # ~13 s cold (C++ build) and ~3 s with inductor's cache on 1 CPU thread
IMAGENET_MODELS = ["hyena_vit_t", "hyena_vit_s", "hyena_vit_b", "hyena_vit_b_p8"]
IMAGENET_MODELS += ["hyena_vit2d_t", "hyena_vit2d_s", "hyena_vit2d_b"]
CIFAR_MODELS = [
    "hyena_iso_cifar",
    "hyena_seq_cifar",
    "hyena_vit2d_cifar",
    "s4nd_iso_cifar",
    "vit_iso_cifar",
    "hyena_vit_cifar",
]
ALL_MODELS = IMAGENET_MODELS + CIFAR_MODELS
SMALL_MODELS = ["hyena_vit_t", *CIFAR_MODELS]  # each class and mixer, fast enough for repeated API checks
TEST_SIZE = {"hyena_vit_b_p8": 32}  # default 64 for ImageNet models, 32 for CIFAR ones


pytestmark = pytest.mark.usefixtures("one_thread")


def _size(name: str) -> int:
    return TEST_SIZE.get(name, 64 if name in IMAGENET_MODELS else 32)


def _create(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs)


def _eval_model_and_input(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A seeded ``name`` model in eval mode at its test size, and a random batch of 2 images for it."""
    size = _size(name)
    return _create(name, img_size=size).eval(), torch.randn(2, 3, size, size)


def _num_params(name: str, **kwargs) -> int:
    model = timm.create_model(name, device="meta", **kwargs)
    return sum(p.numel() for p in model.parameters())


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# --- registration and parameter counts -------------------------------------------------------------------------


def test_import_registers_every_model():
    code = f"import hyena_vision, timm; missing = set({ALL_MODELS!r}) - set(timm.list_models()); print(missing)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "set()"


@pytest.mark.parametrize(
    "name, reference, tolerance",
    [
        ("hyena_vit_t", "vit_tiny_patch16_224", 0.06),
        ("hyena_vit_s", "vit_small_patch16_224", 0.03),
        ("hyena_vit_b", "vit_base_patch16_224", 0.03),
        ("hyena_vit_b_p8", "vit_base_patch8_224", 0.03),
        ("hyena_vit2d_t", "vit_tiny_patch16_224", 0.06),
        ("hyena_vit2d_s", "vit_small_patch16_224", 0.03),
        ("hyena_vit2d_b", "vit_base_patch16_224", 0.03),
    ],
)
def test_param_count_matches_vit(name, reference, tolerance):
    ours, vit = _num_params(name), _num_params(reference)
    assert abs(ours - vit) / vit < tolerance, (ours, vit)


@pytest.mark.parametrize(
    "name, target, tolerance",
    [
        ("hyena_vit_s", 22e6, 0.03),  # the paper's and timm's ViT-S
        ("hyena_vit_b", 87e6, 0.02),  # ViT-B 86-88M; the paper's Hyena-ViT-B 88M
        ("hyena_iso_cifar", 202e3, 0.03),  # the paper's Hyena-ISO
        ("s4nd_iso_cifar", 268e3, 0.01),  # the paper's S4ND-ISO
        ("vit_iso_cifar", 205e3, 0.05),  # matched to Hyena-ISO
        ("hyena_vit2d_cifar", 208_970, 0.05),  # matched to vit_iso_cifar
        ("hyena_vit_cifar", 208_970, 0.05),  # matched to vit_iso_cifar (208,970)
        ("hyena_seq_cifar", 250e3, 0.2),  # 200-300k
    ],
)
def test_param_count_matches_target(name, target, tolerance):
    assert abs(_num_params(name) - target) / target < tolerance, _num_params(name)


def _filter_cfgs(model: torch.nn.Module) -> list[ImplicitFilterConfig]:
    return [m.filter_cfg for m in model.modules() if isinstance(m, HyenaFilter | HyenaFilter2d)]


@pytest.mark.parametrize("name", ["hyena_vit_t", "hyena_iso_cifar"])
def test_filter_cfg_mapping_builds_one_config(name):
    model = timm.create_model(name, device="meta", filter_cfg=dict(filter_order=8, emb_dim=5), depth=2)
    cfgs = _filter_cfgs(model)
    assert len(cfgs) == 2 and cfgs[0] is cfgs[1] and cfgs[0] == ImplicitFilterConfig(filter_order=8, emb_dim=5)
    with pytest.raises(TypeError, match="filter_ordr"):
        timm.create_model(name, device="meta", filter_ordr=8)  # a typo in a flat keyword reaches the model
    with pytest.raises(ValueError, match=r"unknown filter_cfg keys \['filter_ordr'\]"):
        timm.create_model(name, device="meta", filter_cfg=dict(filter_ordr=8))
    with pytest.raises(ValueError, match="emb_dim"):
        timm.create_model(name, device="meta", filter_cfg=dict(emb_dim=4))


@pytest.mark.parametrize("name", ["hyena_vit_cifar", "hyena_iso_cifar", "hyena_lm_char_small"])
def test_flat_filter_keywords_fold_into_filter_cfg(name):
    """``model.kwargs.filter_order=8`` (a config override) and ``timm.create_model(name, filter_lr=...)`` keep
    working: flat filter keywords update the variant's settings, a config object takes them too."""
    model = timm.create_model(name, device="meta", filter_order=8, filter_lr=2e-3, filter_resize="stretch")
    (cfg, *rest) = _filter_cfgs(model)
    assert all(other is cfg for other in rest)
    assert (cfg.filter_order, cfg.lr, cfg.resize_mode) == (8, 2e-3, "stretch")
    variant = _filter_cfgs(timm.create_model(name, device="meta"))[0]
    assert cfg == variant.replace(filter_order=8, lr=2e-3, resize_mode="stretch")  # the variant's other settings kept
    given = ImplicitFilterConfig(emb_dim=5)
    model = timm.create_model(name, device="meta", filter_cfg=given, modulate=False)
    assert _filter_cfgs(model)[0] == given.replace(modulate=False)


def test_flat_ssm_keywords_fold_into_ssm_cfg():
    model = timm.create_model("s4nd_iso_cifar", depth=1, d_state=16, ssm_lr=2e-3, init="inv")
    kernel = next(m for m in model.modules() if isinstance(m, DiagonalSSMKernel))
    assert kernel.log_a_real.shape == (2, 128, 4) and get_optim_hints(kernel.log_dt) == {"lr": 2e-3, "weight_decay": 0}
    with pytest.raises(TypeError, match="d_sate"):
        timm.create_model("s4nd_iso_cifar", d_sate=16)


def test_filter_cfg_defaults_and_variant_settings():
    defaults = [HyenaViT(depth=1, device="meta"), HyenaIso(depth=1, device="meta"), HyenaLM(n_layer=1, device="meta")]
    defaults.append(HyenaTextEncoder(layers=1, device="meta"))
    assert all(_filter_cfgs(model) == [ImplicitFilterConfig()] for model in defaults)
    # a mapping updates the variant's own settings (filter_order 32 here), a config replaces them
    model = timm.create_model("hyena_vit_cifar", device="meta", depth=1, filter_cfg=dict(emb_dim=5))
    assert _filter_cfgs(model) == [ImplicitFilterConfig(filter_order=32, emb_dim=5)]
    model = timm.create_model("hyena_vit_cifar", device="meta", depth=1, filter_cfg=ImplicitFilterConfig(emb_dim=5))
    assert _filter_cfgs(model) == [ImplicitFilterConfig(emb_dim=5)]


# --- forward / backward, dtypes, memory formats ----------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward_every_model(name):
    size, batch = _size(name), 1 if name.startswith("hyena_vit_b") else 2
    model = _create(name, num_classes=7, img_size=size).train()
    x = torch.randn(batch, 3, size, size)
    out = model(x)
    assert out.shape == (batch, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_parameters_follow_default_and_requested_dtype(name):
    model = timm.create_model(name, device="meta")
    assert {t.dtype for t in [*model.parameters(), *model.buffers()]} == {torch.float32}
    model = timm.create_model(name, device="meta", dtype=torch.float64)
    assert {t.dtype for t in [*model.parameters(), *model.buffers()]} == {torch.float64}


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_bf16_autocast_forward(name):
    model, x = _eval_model_and_input(name)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert torch.isfinite(out).all()
    assert _rel_err(out.float(), reference) < 0.05


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_channels_last_input(name):
    model, x = _eval_model_and_input(name)
    with torch.no_grad():
        expected = model(x)
        out = model(x.contiguous(memory_format=torch.channels_last))
        model = model.to(memory_format=torch.channels_last)
        out_cl_model = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_cl_model, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_small_model():
    model = _create("hyena_iso_cifar", depth=1, embed_dim=16).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, dynamic=False, backend=COMPILE_BACKEND)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


# --- sizes ------------------------------------------------------------------------------------------------------


def test_hyena_vit_other_img_size_and_dynamic_grid():
    model = _create("hyena_vit_t", img_size=64, depth=2).eval()  # filters for 4x4 = 16 tokens
    assert model.l_max == 16
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
        assert model(torch.randn(1, 3, 32, 48)).shape == (1, 1000)  # 2x3 grid: kernels for 6 tokens
        features = model.forward_features(torch.randn(1, 3, 32, 48))
    assert features.shape == (1, 6, 192)


def test_hyena_vit_any_size_when_dynamic_exact_size_when_strict():
    model = _create("hyena_vit_t", img_size=64, depth=1)
    assert model(torch.randn(1, 3, 96, 80)).shape == (1, 1000)  # 6x5 grid: more tokens than the 16 stored
    strict = _create("hyena_vit_t", img_size=64, dynamic_img_size=False, depth=1)
    with pytest.raises(AssertionError, match="doesn't match model"):
        strict(torch.randn(1, 3, 32, 32))


def test_hyena_iso_image_too_large_raises_unless_dynamic():
    model = _create("hyena_iso_cifar", img_size=16, depth=1)
    assert model(torch.randn(1, 3, 16, 12)).shape == (1, 10)
    with pytest.raises(ValueError, match=r"input size \(32, 32\) exceeds the \(16, 16\)"):
        model(torch.randn(1, 3, 32, 32))
    assert _create("hyena_iso_cifar", img_size=16, depth=1, dynamic_img_size=True)(torch.randn(1, 3, 24, 20)).shape == (
        1,
        10,
    )


# size change: (model, kwargs, built size, other sizes); depth 1-2 and small widths keep it fast
RESIZE_CASES = [
    ("hyena_vit_t", dict(depth=1), 64, (32, 96)),
    ("hyena_vit2d_cifar", dict(depth=2), 32, (16, 48)),
    ("hyena_iso_cifar", dict(depth=1, embed_dim=16, dynamic_img_size=True), 16, (8, 24)),
    ("hyena_seq_cifar", dict(depth=1, embed_dim=16), 16, (8, 24)),
]


@pytest.mark.parametrize("name, kwargs, size, others", RESIZE_CASES)
def test_set_input_size_extends_filters_as_dynamic_input_does(name, kwargs, size, others):
    """'extend': run time (dynamic) sizes, ``set_input_size`` and loading at another size give one model."""
    model = _create(name, img_size=size, **kwargs).eval()
    for other in others:  # smaller, then larger
        x = torch.randn(2, 3, other, other)
        with torch.no_grad():
            dynamic = model(x)
            resized = _create(name, img_size=size, **kwargs).eval()
            resized.load_state_dict(model.state_dict())
            resized.set_input_size(img_size=other)
            torch.testing.assert_close(resized(x), dynamic, rtol=1e-4, atol=1e-5)
            built = _create(name, img_size=other, **kwargs).eval()
            built.load_state_dict(model.state_dict())  # weights of another size
            torch.testing.assert_close(built(x), dynamic, rtol=1e-4, atol=1e-5)
            back = _create(name, img_size=size, **kwargs).eval()
            back.load_state_dict(built.state_dict())  # and back to the original size
            torch.testing.assert_close(back(x), dynamic, rtol=1e-4, atol=1e-5)


def test_set_input_size_patch_size_and_stretch():
    model = _create("hyena_vit2d_cifar", depth=1, filter_cfg=dict(resize_mode="stretch")).eval()
    model.set_input_size(img_size=64)
    filt = model.blocks[0].mixer.filter
    assert filt.l_max == (16, 16) and filt.pos_emb_y.scale_len == 16 and model.patch_embed.img_size == (64, 64)
    built = _create("hyena_vit2d_cifar", depth=1, filter_cfg=dict(resize_mode="stretch"), img_size=64).eval()
    built.load_state_dict(_create("hyena_vit2d_cifar", depth=1, filter_cfg=dict(resize_mode="stretch")).state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stretched = model(x)
        torch.testing.assert_close(built(x), stretched, rtol=1e-4, atol=1e-5)
        extended = _create("hyena_vit2d_cifar", depth=1).blocks[0].mixer.filter((16, 16))
        assert _rel_err(filt((16, 16)), extended) > 0.1  # stretching is not extending
    vit = _create("hyena_vit_t", img_size=64, depth=1)
    vit.set_input_size(patch_size=8)
    assert vit.l_max == 64 and vit.feature_info[0]["reduction"] == 8
    assert vit(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_bad_input_shape_raises():
    with pytest.raises(ValueError, match=r"in_chans=3"):
        _create("hyena_iso_cifar", depth=1)(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"in_chans=3"):
        _create("hyena_vit_t", depth=1)(torch.randn(3, 64, 64))


@pytest.mark.parametrize("order", [2, 3])
def test_hyena_iso_gated_option(order):
    model = _create("hyena_iso_cifar", gated=True, order=order, depth=1)
    assert model.blocks[0].mixer.operator.gated
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 10) and all(p.grad is not None for p in model.parameters())


def test_s4nd_iso_accepts_any_size():
    model = _create("s4nd_iso_cifar", depth=1)
    assert model(torch.randn(1, 3, 40, 24)).shape == (1, 10)


def test_hyena_seq_causal_option():
    model = _create("hyena_seq_cifar", causal=True, depth=1).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)[0]  # (1, 1024, C)
        x2 = x.clone()
        x2[..., 16:, :] = torch.randn(1, 3, 16, 32)  # change the second half of the pixel sequence
        tokens2 = model.forward_intermediates(x2, output_fmt="NLC", intermediates_only=True)[0]
    torch.testing.assert_close(tokens[:, :512], tokens2[:, :512])  # causal: the first half does not see it
    assert not torch.allclose(tokens[:, 512:], tokens2[:, 512:])


# --- weights: safetensors, pretrained loading with head adaptation -----------------------------------------------


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_state_dict_safetensors_round_trip(name, tmp_path):
    size = _size(name)
    model = _create(name, img_size=size).eval()
    save_file(model.state_dict(), tmp_path / "weights.safetensors")
    torch.manual_seed(1)
    fresh = timm.create_model(name, img_size=size).eval()
    fresh.load_state_dict(load_file(tmp_path / "weights.safetensors"))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["hyena_vit_t", "hyena_iso_cifar", "s4nd_iso_cifar", "vit_iso_cifar"])
def test_pretrained_from_local_file_with_new_head(name, tmp_path):
    size = _size(name)
    source = _create(name, img_size=size)
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), path)
    model = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=3, img_size=size
    )
    classifier = model.pretrained_cfg["classifier"]
    loaded = model.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith(classifier + "."):
            assert loaded[key].shape[0] == 3
        else:
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert model(torch.randn(1, 3, size, size)).shape == (1, 3)


@pytest.mark.parametrize("name, size, other", [("hyena_vit_t", 64, 96), ("hyena_vit2d_cifar", 32, 16)])
def test_pretrained_at_other_img_size(name, size, other, tmp_path):
    source = _create(name, img_size=size, depth=1).eval()
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), path)
    overlay = dict(file=str(path))
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, img_size=other, depth=1).eval()
    pos_emb = model.blocks[0].mixer.filter.pos_emb if name == "hyena_vit_t" else model.blocks[0].mixer.filter.pos_emb_y
    grid = (other // 16) ** 2 if name == "hyena_vit_t" else other // 4
    assert pos_emb.z.shape == (2 * grid - 1, 3) and pos_emb.t.shape == (2 * grid - 1, 1)
    x = torch.randn(1, 3, other, other)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=1e-4, atol=1e-5)


def test_checkpoint_filter_unwraps_training_checkpoints():
    model = _create("hyena_iso_cifar", depth=1)
    wrapped = {"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}
    filtered = checkpoint_filter_fn(wrapped, model)
    assert filtered.keys() == model.state_dict().keys()
    model.load_state_dict(filtered)


@pytest.mark.parametrize(
    "name, mean, crop_pct, interpolation, size",
    [
        ("hyena_vit_s", IMAGENET_DEFAULT_MEAN, 0.9, "bicubic", 224),
        ("hyena_iso_cifar", CIFAR10_MEAN, 1.0, "bilinear", 32),
        ("s4nd_iso_cifar", CIFAR10_MEAN, 1.0, "bilinear", 32),
    ],
)
def test_pretrained_cfg_drives_timm_transforms(name, mean, crop_pct, interpolation, size):
    model = timm.create_model(name, device="meta")
    config = timm.data.resolve_data_config(model=model)
    assert (config["mean"], config["crop_pct"], config["interpolation"]) == (mean, crop_pct, interpolation)
    transform = timm.data.create_transform(**config)
    image = Image.fromarray(torch.randint(0, 256, (size + 7, size + 3, 3), dtype=torch.uint8).numpy())
    assert transform(image).shape == (3, size, size)


# --- features -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, channels, grid",
    [
        ("hyena_vit_t", 192, 4),
        ("hyena_iso_cifar", 128, 32),
        ("hyena_seq_cifar", 64, 32),
        ("hyena_vit2d_cifar", 64, 8),
        ("s4nd_iso_cifar", 128, 32),
        ("vit_iso_cifar", 64, 8),
    ],
)
def test_features_only_shapes(name, channels, grid):
    size = _size(name)
    model = _create(name, features_only=True, img_size=size).eval()
    assert model.feature_info.channels() == [channels] * 3
    with torch.no_grad():
        features = model(torch.randn(2, 3, size, size))
    assert [f.shape for f in features] == [(2, channels, grid, grid)] * 3


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_timm_contract_forward_intermediates(name):
    model, x = _eval_model_and_input(name)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert [f.shape[1] for f in intermediates] == [info["num_chs"] for info in model.feature_info]
        torch.testing.assert_close(final, model.forward_features(x))
        last = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(last[0], intermediates[1])
        take = model.prune_intermediate_layers([1], prune_norm=True)
        torch.testing.assert_close(model.forward_intermediates(x, indices=take, intermediates_only=True)[0], last[0])
    assert len(intermediates) == len(model.feature_info)
    assert len(model.blocks) == 2 and model.num_classes == 0


# --- optimizer: timm layer decay, our param groups ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["hyena_vit_t", "hyena_iso_cifar"])
def test_create_optimizer_v2_with_layer_decay(name):
    model = _create(name)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.65)
    scales = {group["lr_scale"] for group in optimizer.param_groups}
    assert len(scales) == len(model.blocks) + 2  # stem, each block, final norm / head
    grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert grouped == {id(p) for p in model.parameters()}
    no_decay = {n for n in model.no_weight_decay()}
    for group in optimizer.param_groups:
        names = {n for n, p in model.named_parameters() if any(p is q for q in group["params"])}
        if names & no_decay:
            assert group["weight_decay"] == 0.0


def test_param_groups_honour_filter_hints():
    model = _create("hyena_vit_t")
    groups = param_groups(model, lr=5e-4, weight_decay=0.05, no_weight_decay=model.no_weight_decay())
    where = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert where[id(named["blocks.0.mixer.filter.ffn.inner.0.weight"])] == (1e-3, 0.0)
    assert where[id(named["blocks.0.mixer.filter.pos_emb.z"])] == (1e-5, 0.0)
    assert where[id(named["blocks.0.mlp.fc1.weight"])] == (5e-4, 0.05)
    assert where[id(named["blocks.0.mlp.fc1.bias"])] == (5e-4, 0.0)
    assert len(where) == len(named)


def test_s4nd_ssm_parameters_get_hints():
    model = _create("s4nd_iso_cifar")
    named = dict(model.named_parameters())
    for suffix in ("log_a_real", "a_imag", "log_dt"):
        assert get_optim_hints(named[f"blocks.0.mixer.kernel_y.{suffix}"]) == {"lr": 1e-3, "weight_decay": 0.0}
        assert f"blocks.0.mixer.kernel_x.{suffix}" in model.no_weight_decay()
    assert not get_optim_hints(named["blocks.0.mixer.kernel_y.c"])


# --- timm contract (what timm's generic tests check; the offline fallback) ---------------------------------------


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_timm_contract_api(name):
    size = _size(name)
    model = _create(name, img_size=size).eval()
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    assert model.in_chans == cfg["input_size"][0] == 3
    with pytest.raises(TypeError):
        timm.create_model(name, not_a_model_arg=1)
    names = [n for n, _ in model.named_parameters()]
    assert model.no_weight_decay()
    for entry in model.no_weight_decay():  # a parameter, or an optional token this configuration does not have
        assert entry in names or getattr(model, entry, None) is None, entry
    groups = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    assert len(set(groups.values())) > 1
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, model.head_hidden_size)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), model.forward_head(features), rtol=1e-4, atol=1e-5)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features) and isinstance(model.get_classifier(), torch.nn.Identity)
        model.reset_classifier(5, global_pool="")
        assert model(x).ndim == (4 if cfg["pool_size"] else 3)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_timm_contract_meta_device_and_dtype(name):
    model = timm.create_model(name, device="meta", dtype=torch.float32)
    assert {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()} == {"meta"}
    size = _size(name)
    out = model.to(torch.bfloat16)(torch.randn(1, 3, size, size, device="meta", dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["hyena_vit_t", "hyena_vit2d_cifar", "hyena_iso_cifar", "s4nd_iso_cifar"])
def test_timm_contract_fx_trace(name):
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    size = _size(name)
    model = _create(name, img_size=size).eval()
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    fx_model = create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs
    )
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(next(iter(fx_model(x).values())), model(x))


# --- S4ND numerics against an independent float64 recurrence ------------------------------------------------------


def _recurrence(u: torch.Tensor, kernel: DiagonalSSMKernel, direction: int) -> torch.Tensor:
    """y_l = 2 Re(C x_l), x_l = A_bar x_{l-1} + B_bar u_l (ZOH, B = 1), per channel; u (C, L) float64."""
    a = torch.complex(-kernel.log_a_real[direction].exp(), kernel.a_imag[direction]).detach()  # (C, M)
    dt = kernel.log_dt.exp().detach()[:, None]
    a_bar = torch.exp(dt * a)
    b_bar = (a_bar - 1) / a
    c = torch.view_as_complex(kernel.c[direction].detach().contiguous())
    state = torch.zeros_like(a)
    ys = []
    for step in range(u.shape[-1]):
        state = a_bar * state + b_bar * u[:, step, None]
        ys.append(2 * (c * state).sum(-1).real)
    return torch.stack(ys, dim=-1)  # (C, L)


def _bidirectional_recurrence(u: torch.Tensor, kernel: DiagonalSSMKernel) -> torch.Tensor:
    """Forward SSM on u plus the backward SSM on the reversed sequence, shifted to lags -1, -2, ... ; u (C, L)."""
    y = _recurrence(u, kernel, 0)
    backward = _recurrence(u.flip(-1), kernel, 1).flip(-1)  # at t: sum_{s >= 0} K_b[s] u[t + s]
    y[:, :-1] += backward[:, 1:]  # lags -1, -2, ...: sum_{s >= 1} K_b[s - 1] u[t + s]
    return y


@pytest.mark.parametrize("init", ["lin", "inv"])
def test_ssm_kernel_matches_recurrence(init):
    torch.manual_seed(0)
    kernel = DiagonalSSMKernel(4, ssm_cfg=dict(d_state=16, init=init, dt_min=0.01, dt_max=0.5), dtype=torch.float64)
    length = 23
    u = torch.randn(4, length, dtype=torch.float64)
    k = kernel(length)  # (C, 2L-1), lag 0 at L-1
    assert k.shape == (4, 2 * length - 1)
    direct = torch.stack(
        [sum(k[:, length - 1 + s] * u[:, t - s] for s in range(t - length + 1, t + 1)) for t in range(length)], dim=-1
    )
    expected = _bidirectional_recurrence(u, kernel)
    assert _rel_err(direct, expected) < 1e-10


def test_ssm_kernel_init():
    kernel = DiagonalSSMKernel(3, ssm_cfg=SSMKernelConfig(d_state=8, init="inv", bidirectional=False, dt_max=1e-1))
    modes = 4
    n = torch.arange(modes, dtype=torch.float64)
    expected = 2 * modes / math.pi * (2 * modes / (2 * n + 1) - 1)
    torch.testing.assert_close(kernel.a_imag[0, 0].double(), expected, rtol=1e-6, atol=0)
    assert torch.all(kernel.log_dt.exp() >= 1e-3) and torch.all(kernel.log_dt.exp() <= 1e-1)
    assert torch.all(kernel(5)[:, :4] == 0)  # causal: no negative lags
    with pytest.raises(ValueError, match="d_state"):
        DiagonalSSMKernel(3, ssm_cfg=dict(d_state=6))
    with pytest.raises(ValueError, match="init"):
        DiagonalSSMKernel(3, ssm_cfg=dict(init="legs"))


def test_s4nd_layer_matches_separable_recurrences():
    torch.manual_seed(0)
    layer = S4ND(3, ssm_cfg=dict(d_state=8, dt_min=0.05, dt_max=0.5), dtype=torch.float64, fftconv_backend="torch")
    u = torch.randn(2, 5, 6, 3, dtype=torch.float64)  # (B, H, W, C)
    expected = []
    for image in u.permute(0, 3, 1, 2):  # (C, H, W)
        rows = torch.stack([_bidirectional_recurrence(image[:, :, j], layer.kernel_y) for j in range(6)], dim=-1)
        both = torch.stack([_bidirectional_recurrence(rows[:, i, :], layer.kernel_x) for i in range(5)], dim=1)
        expected.append(both + layer.skip.detach()[:, None, None] * image)  # (C, H, W)
    y = torch.stack(expected).permute(0, 2, 3, 1)  # (B, H, W, C)
    y = torch.nn.functional.glu(layer.out_proj(torch.nn.functional.gelu(y)), dim=-1)
    with torch.no_grad():
        assert _rel_err(layer(u), y.detach()) < 1e-10


def test_s4nd_bad_input_raises():
    with pytest.raises(ValueError, match=r"\(B, H, W, d_model=4\)"):
        S4ND(4)(torch.randn(1, 4, 5, 5))


def test_s4nd_iso_ssm_cfg_is_one_shared_config():
    model = timm.create_model("s4nd_iso_cifar", depth=2, ssm_cfg=dict(d_state=16, init="inv"))
    kernels = [m for m in model.modules() if isinstance(m, DiagonalSSMKernel)]
    assert len(kernels) == 4 and all(k.log_a_real.shape == (2, 128, 4) for k in kernels)  # 16 states: 4 modes/dir
    n = torch.arange(4, dtype=torch.float64)
    torch.testing.assert_close(
        kernels[-1].a_imag[0, 0].double(), 8 / math.pi * (8 / (2 * n + 1) - 1), rtol=1e-6, atol=0
    )
    assert sum(p.numel() for p in timm.create_model("s4nd_iso_cifar").parameters()) == 267_786
    with pytest.raises(ValueError, match=r"unknown ssm_cfg keys \['d_sate'\]"):
        timm.create_model("s4nd_iso_cifar", ssm_cfg=dict(d_sate=16))
    with pytest.raises(TypeError, match="ssm_cfg must be a SSMKernelConfig"):
        timm.create_model("s4nd_iso_cifar", ssm_cfg=16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SSMKernelConfig().d_state = 8
