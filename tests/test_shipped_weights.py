"""Pretrained tags for weights shipped in hyena_vision/weights: registered only when the file exists, loaded by
``timm.create_model(name, pretrained=True)`` from the file with no network."""

from __future__ import annotations

import json
import sys
import types

import pytest
import timm
import torch
from hv_testing import load_script
from safetensors.torch import save_file
from timm.models import build_model_with_cfg, register_model
from timm.models._registry import generate_default_cfgs

from hyena_vision.models import HyenaViT, _shipped, checkpoint_filter_fn
from hyena_vision.models._helpers import cifar_cfg


def _register(arch: str) -> None:
    """Register a tiny Hyena-ViT as ``arch`` whose cfgs come from ``shipped_cfgs``, as the real models' do."""
    module = types.ModuleType(f"shipped_test_{arch}")
    module.default_cfgs = generate_default_cfgs(_shipped.shipped_cfgs(arch, cifar_cfg(first_conv="patch_embed.proj")))
    sys.modules[module.__name__] = module

    def create(pretrained: bool = False, **kwargs) -> HyenaViT:
        args = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=16, depth=1, filter_cfg=dict(filter_order=8))
        return build_model_with_cfg(
            HyenaViT, arch, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **dict(args, **kwargs)
        )

    create.__name__ = create.__qualname__ = arch
    create.__module__ = module.__name__
    register_model(create)


def test_shipped_file_becomes_the_default_pretrained_tag(tmp_path, monkeypatch):
    monkeypatch.setattr(_shipped, "WEIGHTS_DIR", tmp_path)
    torch.manual_seed(0)
    trained = HyenaViT(
        img_size=32, patch_size=4, num_classes=10, embed_dim=16, depth=1, filter_cfg=dict(filter_order=8)
    )
    save_file(trained.state_dict(), tmp_path / "shiptest_with.c10.safetensors")
    _register("shiptest_with")
    _register("shiptest_without")  # no file: no tag

    assert set(timm.list_pretrained("shiptest_*")) == {"shiptest_with", "shiptest_with.c10"}  # untagged: default
    for name in ("shiptest_with", "shiptest_with.c10"):
        loaded = timm.create_model(name, pretrained=True)
        assert loaded.pretrained_cfg["file"] == str(tmp_path / "shiptest_with.c10.safetensors")
        for key, value in trained.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(RuntimeError, match="pretrained"):
        timm.create_model("shiptest_without", pretrained=True)


def test_real_models_list_only_shipped_files():
    for arch in ("vit_iso_cifar", "hyena_vit_cifar", "hyena_vit2d_cifar"):
        listed = set(timm.list_pretrained(f"{arch}*"))
        present = {f"{arch}.{tag}" for tag in _shipped.SHIPPED_TAGS if _shipped.weights_file(arch, tag).is_file()}
        assert listed == (present | {arch} if present else set())


@pytest.mark.parametrize("arch", ["hyena_vit_cifar", "vit_iso_cifar", "hyena_vit2d_cifar"])
def test_evaluate_reproduces_the_shipped_top1_on_the_full_test_set(arch, shared_data):
    """``eval/evaluate.py --model <arch>.c10 --pretrained`` on all 10,000 test images gives the top-1 written beside
    the weights when they were trained (mean/std and crop from the model's pretrained_cfg)."""
    weights = _shipped.weights_file(arch, "c10")
    if not weights.is_file():
        pytest.skip(f"{weights.name} is not shipped yet (python eval/train_cifar_pair.py --ship)")
    figures = json.loads(weights.with_suffix(".json").read_text())
    evaluate = load_script("eval/evaluate.py")
    args = [f"--model={arch}.c10", "--pretrained", "--kind=memory_cifar10", "--split=test", "--num-workers=0"]
    result = evaluate.main([*args, f"--data={shared_data / 'cifar10-jpg.tar.gz'}"])
    assert result["images"] == figures["test_images"] == 10_000
    # Other batching and thread counts round logits differently: allow a few near-ties to flip (0.05 = 5 images).
    assert result["top1"] == pytest.approx(figures["test_top1"], abs=0.05)
    assert result["top1"] >= 75.0  # the floor for the shipped pair
