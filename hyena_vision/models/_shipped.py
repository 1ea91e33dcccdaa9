"""Pretrained tags for weights shipped inside the package (``hyena_vision/weights/<arch>.<tag>.safetensors``).

A tag is registered only when its file exists, so ``timm.list_pretrained()`` never lists weights that are not
there, and ``timm.create_model(arch, pretrained=True)`` (the first tag with weights is timm's default) or
``timm.create_model("arch.tag", pretrained=True)`` loads the file with no network.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED_TAGS", "WEIGHTS_DIR", "shipped_cfgs", "weights_file"]

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED_TAGS = ("c10",)  # c10: trained on CIFAR-10's 50,000 training images (see weights/README.md)


def weights_file(arch: str, tag: str) -> Path:
    return WEIGHTS_DIR / f"{arch}.{tag}.safetensors"


def shipped_cfgs(arch: str, cfg: dict) -> dict[str, dict]:
    """``{arch: cfg}`` plus ``{"arch.tag": cfg with file=<shipped file>}`` for every shipped file that exists."""
    cfgs = {arch: cfg}
    for tag in SHIPPED_TAGS:
        path = weights_file(arch, tag)
        if path.is_file():
            cfgs[f"{arch}.{tag}"] = {**cfg, "file": str(path)}
    return cfgs
