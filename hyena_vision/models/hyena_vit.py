"""Hyena-ViT: a Vision Transformer whose attention is replaced by the bidirectional Hyena operator.

As in the Hyena paper (Poli et al., ICML 2023, arXiv 2302.10866): patch embedding, no class token and no position
embedding (the implicit long filters are position-aware), pre-norm blocks ``x + Hyena(LN(x))``,
``x + MLP(LN(x))`` with MLP ratio 4, stochastic depth, a final norm and mean pooling.

Two mixers: ``mixer='hyena1d'`` (the paper's) flattens the (H, W) grid of patch tokens row-major into one
sequence of ``H * W`` tokens for the 1D operator, so its lag ``W`` means "one row down" only at the width it was
trained at; ``mixer='hyena2d'`` (``hyena_vit2d_*``) keeps the grid and mixes it with the gated 2D operator
(``HyenaOperator2d``), whose implicit filters are functions of the (row, column) lag: a lag means the same
displacement at every resolution.

Other input sizes, the timm way: filters are stored for the ``img_size`` grid (``l_max``); with
``dynamic_img_size=True`` (the default) any image size runs, smaller grids using the central lags of the filters
and larger ones extending them at the same lag spacing. ``set_input_size(img_size=..., patch_size=...)`` stores the
filters for a new grid, and weights saved at another size load (``load_state_dict``, ``pretrained=True``): both
follow ``filter_cfg.resize_mode`` ('extend': same lag spacing, the default; 'stretch': the same normalised positions
over the new grid; see ``hyena_vision.layers.PositionalEmbedding``).

The same class with ``patch_size=1`` is the pixel-level sequence classifier for sequential CIFAR
(``hyena_seq_cifar``: the 32x32 image as a sequence of 1024 pixels, ``causal`` or bidirectional).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    LayerNorm,
    PatchEmbed,
    calculate_drop_path_rates,
    get_act_layer,
    get_norm_layer,
    register_notrace_module,
    trunc_normal_,
)
from timm.layers.helpers import get_device_dtype
from timm.models import register_model
from timm.models._input import update_model_input_size
from timm.models._manipulate import named_apply
from timm.models._registry import generate_default_cfgs
from torch import nn

from ..layers import HyenaOperator, HyenaOperator2d, ImplicitFilterConfig
from ._blocks import PreNormBlock
from ._helpers import BlockStackMixin, build_image_model, check_image, cifar_cfg, variant_kwargs
from ._shipped import shipped_cfgs

__all__ = ["HyenaViT"]

GLOBAL_POOLS = ("", "avg", "max")
MIXERS = ("hyena1d", "hyena2d")

# The operators validate shapes with Python control flow: FX tracing treats them as leaves.
register_notrace_module(HyenaOperator)
register_notrace_module(HyenaOperator2d)


def _check_global_pool(global_pool: str) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")


def init_weights_linear(module: nn.Module, name: str = "") -> None:
    """trunc_normal(std 0.02) weights and zero biases on every Linear, as the original Hyena-ViT."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class HyenaViT(BlockStackMixin, nn.Module):
    """Hyena-ViT (see the module docstring). Input (B, in_chans, H, W); ``forward_features`` gives (B, N, C)."""

    output_fmt = "NLC"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 768,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        mixer: str = "hyena1d",
        causal: bool = False,
        order: int = 2,
        short_filter_order: int = 5,
        filter_cfg: ImplicitFilterConfig | Mapping | None = None,
        fftconv_backend: str = "auto",
        dynamic_img_size: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        mixer_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: str | Callable[..., nn.Module] | None = None,
        act_layer: str | Callable[..., nn.Module] | None = None,
        device=None,
        dtype=None,
    ):
        """
        Args:
            img_size: input size the filters are stored for (l_max: the patch grid at this size).
            patch_size: patch size (1: one token per pixel).
            global_pool: '' (no pooling), 'avg' (the paper's mean pooling) or 'max'.
            mixer: 'hyena1d' (the flattened token sequence) or 'hyena2d' (2D filters over the patch grid).
            causal: causal 1D operator (short conv and long filters see only earlier tokens); default
                bidirectional.
            order, short_filter_order: Hyena operator settings (see ``hyena_vision.layers.HyenaOperator``); short
                filter 5 (1D) as the original Hyena-ViT, 3x3 for the 2D mixer.
            filter_cfg: the implicit filters of every block (``ImplicitFilterConfig``, or a mapping of its fields;
                None: its defaults), with their optimizer hints and ``resize_mode``, how the filters follow
                ``set_input_size`` and weights of another size (see the module docstring).
            dynamic_img_size: accept any image size (else exactly ``img_size``).
            drop_rate: dropout before the classifier; proj_drop_rate: MLP dropout; mixer_drop_rate: dropout of
                the gated inputs of the long convolutions; drop_path_rate: stochastic depth (linear in depth).
        """
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        _check_global_pool(global_pool)
        if mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {mixer!r}")
        if causal and mixer == "hyena2d":
            raise ValueError("causal=True needs mixer='hyena1d' (the 2D mixer's filters are centred)")
        norm_layer = get_norm_layer(norm_layer) or LayerNorm
        act_layer = get_act_layer(act_layer) or nn.GELU
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.dynamic_img_size = dynamic_img_size
        self.mixer_type = mixer

        self.patch_embed = PatchEmbed(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            output_fmt="NHWC",  # (B, H', W', C): flattened for the 1D mixer
            strict_img_size=not dynamic_img_size,
            **dd,
        )
        common = dict(order=order, short_filter_order=short_filter_order, dropout=mixer_drop_rate)
        common.update(fftconv_backend=fftconv_backend, filter_cfg=ImplicitFilterConfig.resolve(filter_cfg))
        if mixer == "hyena1d":
            mixer_layer = partial(HyenaOperator, l_max=self.l_max, causal=causal, **common)
        else:
            mixer_layer = partial(HyenaOperator2d, l_max=self.l_max, gated=True, **common)
        drop_path_rates = calculate_drop_path_rates(drop_path_rate, depth)  # linear in depth
        self.blocks = nn.Sequential(
            *[
                PreNormBlock(
                    embed_dim,
                    mixer_layer,
                    mlp_hidden=int(embed_dim * mlp_ratio),
                    proj_drop=proj_drop_rate,
                    drop_path=drop_path_rates[i],
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    **dd,
                )
                for i in range(depth)
            ]
        )
        reduction = self.patch_embed.feat_ratio()
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=reduction) for i in range(depth)]
        self.norm = norm_layer(embed_dim, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        named_apply(init_weights_linear, self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is not None:
            _check_global_pool(global_pool)
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)

    @property
    def l_max(self) -> int | tuple[int, int]:
        """The size the filters are stored for: tokens (1D mixer) or the (H', W') patch grid (2D mixer)."""
        return self.patch_embed.num_patches if self.mixer_type == "hyena1d" else self.patch_embed.grid_size

    def set_input_size(
        self, img_size: int | tuple[int, int] | None = None, patch_size: int | tuple[int, int] | None = None
    ) -> None:
        """Store the filters for a new input size (and resample the patch embedding to a new patch size)."""
        self.patch_embed.set_input_size(img_size=img_size, patch_size=patch_size)
        for block in self.blocks:
            block.mixer.resize(self.l_max)
        reduction = self.patch_embed.feat_ratio()
        self.feature_info = [dict(info, reduction=reduction) for info in self.feature_info]
        update_model_input_size(self, self.patch_embed.img_size, patch_size=patch_size)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, in_chans, H, W) -> tokens (B, N, C) for the 1D mixer or the grid (B, H', W', C) for the 2D one, and
        (H', W')."""
        # the patch embedding's NHWC output is a permuted view: made contiguous once here, or every LayerNorm of the
        # residual stream would copy its input (and its gradient) to channels-last again
        x = self.patch_embed(check_image(x, self.in_chans)).contiguous()  # (B, H', W', C)
        grid = (x.shape[1], x.shape[2])
        return (x.flatten(1, 2) if self.mixer_type == "hyena1d" else x), grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> normed tokens (B, N, C), row-major over the patch grid for both mixers."""
        x = self.embed(x)[0]  # (B, N, C) or (B, H', W', C)
        x = self.run_blocks(x)
        return self.norm(x.flatten(1, -2))  # (B, N, C)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)  # (B, C)
        elif self.global_pool == "max":
            x = x.amax(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(url: str = "", **kwargs) -> dict:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        **kwargs,
    }


_CIFAR_CFG = cifar_cfg(pool_size=None, first_conv="patch_embed.proj", classifier="head")
default_cfgs = generate_default_cfgs(
    {
        "hyena_vit_t": _cfg(),
        "hyena_vit_s": _cfg(),
        "hyena_vit_b": _cfg(),
        "hyena_vit_b_p8": _cfg(),
        "hyena_vit2d_t": _cfg(),
        "hyena_vit2d_s": _cfg(),
        "hyena_vit2d_b": _cfg(),
        "hyena_seq_cifar": _CIFAR_CFG,
        # the CIFAR Hyena-ViTs (1D and 2D filters) of eval/train_cifar_pair.py: pretrained tags for the weights
        # shipped in hyena_vision/weights when they exist
        **shipped_cfgs("hyena_vit_cifar", _CIFAR_CFG),
        **shipped_cfgs("hyena_vit2d_cifar", _CIFAR_CFG),
    }
)


def _create_hyena_vit(variant: str, pretrained: bool = False, **kwargs) -> HyenaViT:
    return build_image_model(HyenaViT, variant, pretrained, **kwargs)


@register_model
def hyena_vit_t(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Hyena-ViT-Tiny/16: 192 wide, 12 deep (ViT-Ti size, 6.0M params)."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12)
    return _create_hyena_vit("hyena_vit_t", pretrained=pretrained, **variant_kwargs(model_args, kwargs))


@register_model
def hyena_vit_s(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Hyena-ViT-Small/16: 384 wide, 12 deep (ViT-S size, 22.5M params)."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12)
    return _create_hyena_vit("hyena_vit_s", pretrained=pretrained, **variant_kwargs(model_args, kwargs))


@register_model
def hyena_vit_b(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Hyena-ViT-Base/16: 768 wide, 12 deep (ViT-B size, 87.3M params; the paper's 78.5% ImageNet model)."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12)
    return _create_hyena_vit("hyena_vit_b", pretrained=pretrained, **variant_kwargs(model_args, kwargs))


@register_model
def hyena_vit_b_p8(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Hyena-ViT-Base/8: patch 8, 1024 tokens at 224 px (the paper's 79.8% ImageNet model)."""
    model_args = dict(patch_size=8, embed_dim=768, depth=12)
    return _create_hyena_vit("hyena_vit_b_p8", pretrained=pretrained, **variant_kwargs(model_args, kwargs))


@register_model
def hyena_vit2d_t(pretrained: bool = False, **kwargs) -> HyenaViT:
    """2D Hyena-ViT-Tiny/16: gated 2D Hyena over the 14x14 patch grid, 192 wide, 12 deep."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, mixer="hyena2d", short_filter_order=3)
    return _create_hyena_vit("hyena_vit2d_t", pretrained=pretrained, **variant_kwargs(model_args, kwargs))


@register_model
def hyena_vit2d_s(pretrained: bool = False, **kwargs) -> HyenaViT:
    """2D Hyena-ViT-Small/16: gated 2D Hyena over the 14x14 patch grid, 384 wide, 12 deep."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, mixer="hyena2d", short_filter_order=3)
    return _create_hyena_vit("hyena_vit2d_s", pretrained=pretrained, **variant_kwargs(model_args, kwargs))


@register_model
def hyena_vit2d_b(pretrained: bool = False, **kwargs) -> HyenaViT:
    """2D Hyena-ViT-Base/16: gated 2D Hyena over the 14x14 patch grid, 768 wide, 12 deep."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, mixer="hyena2d", short_filter_order=3)
    return _create_hyena_vit("hyena_vit2d_b", pretrained=pretrained, **variant_kwargs(model_args, kwargs))


@register_model
def hyena_vit2d_cifar(pretrained: bool = False, **kwargs) -> HyenaViT:
    """2D Hyena-ViT for 32x32 CIFAR: patch 4 (8x8 grid), 64 wide, 5 deep, MLP ratio 2, filter FFN 32 wide (204k)."""
    model_args = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=64, depth=5, mlp_ratio=2.0)
    model_args.update(mixer="hyena2d", short_filter_order=3, filter_cfg=dict(filter_order=32))
    return _create_hyena_vit("hyena_vit2d_cifar", pretrained=pretrained, **variant_kwargs(model_args, kwargs))


@register_model
def hyena_seq_cifar(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Sequential CIFAR: 32x32 image as 1024 pixel tokens, 4 Hyena blocks of width 64, MLP ratio 2 (214k params)."""
    model_args = dict(
        img_size=32, patch_size=1, num_classes=10, embed_dim=64, depth=4, mlp_ratio=2.0, short_filter_order=3
    )
    return _create_hyena_vit("hyena_seq_cifar", pretrained=pretrained, **variant_kwargs(model_args, kwargs))


@register_model
def hyena_vit_cifar(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Hyena-ViT for 32x32 CIFAR: patch 4 (8x8 = 64 tokens), 64 wide, 6 deep, MLP ratio 1.5, bidirectional,
    filter MLP width 32 (~215k params, within 5% of vit_iso_cifar's 209k)."""
    model_args = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=64, depth=6, mlp_ratio=1.5)
    model_args.update(filter_cfg=dict(filter_order=32))
    return _create_hyena_vit("hyena_vit_cifar", pretrained=pretrained, **variant_kwargs(model_args, kwargs))
