"""Hyena-ViT: a Vision Transformer whose attention is replaced by the bidirectional Hyena operator.

As in the Hyena paper (Poli et al., ICML 2023, arXiv 2302.10866): patch embedding, no class token and no position
embedding (the implicit long filters are position-aware), pre-norm blocks ``x + Hyena(LN(x))``,
``x + MLP(LN(x))`` with MLP ratio 4, stochastic depth, a final norm and mean pooling. The (H, W) grid of patch
tokens is flattened row-major into one sequence of ``H * W`` tokens for the 1D operator. Filters are built for the
``img_size`` grid (``l_max`` tokens); with ``dynamic_img_size=True`` (the default) smaller or differently shaped
images are accepted and kernels are generated for the actual number of tokens, and an image giving more tokens
than ``l_max`` raises.

The same class with ``patch_size=1`` is the pixel-level sequence classifier for sequential CIFAR
(``hyena_seq_cifar``: the 32x32 image as a sequence of 1024 pixels, ``causal`` or bidirectional).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    DropPath,
    LayerNorm,
    Mlp,
    PatchEmbed,
    calculate_drop_path_rates,
    get_act_layer,
    get_norm_layer,
    register_notrace_function,
    register_notrace_module,
    trunc_normal_,
)
from timm.layers.helpers import get_device_dtype
from timm.models import build_model_with_cfg, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint, checkpoint_seq, named_apply
from timm.models._registry import generate_default_cfgs
from torch import nn

from ..layers import HyenaOperator, no_weight_decay_names
from ._helpers import check_image, checkpoint_filter_fn, cifar_cfg
from ._shipped import shipped_cfgs

__all__ = ["HyenaBlock", "HyenaViT", "tokens_from_grid"]

GLOBAL_POOLS = ("", "avg", "max")

# The operators validate shapes with Python control flow: FX tracing treats them as leaves.
register_notrace_module(HyenaOperator)


@register_notrace_function
def tokens_from_grid(x: torch.Tensor, l_max: int, patch_size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) patch grid -> (B, H*W, C) row-major tokens; more than ``l_max`` tokens raise."""
    batch, height, width, channels = x.shape
    if height * width > l_max:
        raise ValueError(
            f"an input of {height * patch_size[0]}x{width * patch_size[1]} pixels gives {height}x{width} = "
            f"{height * width} tokens, more than the l_max={l_max} tokens the Hyena filters were built for; "
            f"create the model with a larger img_size"
        )
    return x.reshape(batch, height * width, channels)


def _check_global_pool(global_pool: str) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")


class HyenaBlock(nn.Module):
    """Pre-norm block: ``x + drop_path(mixer(norm1(x)))`` then ``x + drop_path(mlp(norm2(x)))``, (B, L, dim)."""

    def __init__(
        self,
        dim: int,
        mixer_layer: Callable[..., nn.Module],
        *,
        mlp_ratio: float = 4.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[..., nn.Module] = LayerNorm,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = norm_layer(dim, **dd)
        self.mixer = mixer_layer(dim, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.mixer(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


def init_weights_linear(module: nn.Module, name: str = "") -> None:
    """trunc_normal(std 0.02) weights and zero biases on every Linear, as the original Hyena-ViT."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class HyenaViT(nn.Module):
    """Hyena-ViT (see the module docstring). Input (B, in_chans, H, W); ``forward_features`` gives (B, N, C)."""

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
        causal: bool = False,
        order: int = 2,
        filter_order: int = 64,
        short_filter_order: int = 5,
        emb_dim: int = 3,
        num_inner_mlps: int = 2,
        w: float = 1.0,
        modulate: bool = True,
        filter_lr: float = 1e-3,
        lr_pos_emb: float = 1e-5,
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
            img_size: input size the filters are built for (l_max = number of patches at this size).
            patch_size: patch size (1: one token per pixel).
            global_pool: '' (no pooling), 'avg' (the paper's mean pooling) or 'max'.
            causal: causal operator (short conv and long filters see only earlier tokens); default bidirectional.
            order, filter_order, short_filter_order, emb_dim, num_inner_mlps, w, modulate: Hyena operator and
                implicit filter settings (see ``hyena_vision.layers.HyenaOperator``); short filter 5 as the
                original Hyena-ViT.
            filter_lr, lr_pos_emb: optimizer hints of the filter networks and their positional features.
            dynamic_img_size: accept any image size giving at most l_max tokens (else exactly ``img_size``).
            drop_rate: dropout before the classifier; proj_drop_rate: MLP dropout; mixer_drop_rate: dropout of
                the gated inputs of the long convolutions; drop_path_rate: stochastic depth (linear in depth).
        """
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        _check_global_pool(global_pool)
        norm_layer = get_norm_layer(norm_layer) or LayerNorm
        act_layer = get_act_layer(act_layer) or nn.GELU
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.dynamic_img_size = dynamic_img_size
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            output_fmt="NHWC",  # (B, H', W', C): the grid is flattened by tokens_from_grid
            strict_img_size=not dynamic_img_size,
            **dd,
        )
        self.l_max = self.patch_embed.num_patches
        mixer_layer = partial(
            HyenaOperator,
            l_max=self.l_max,
            order=order,
            filter_order=filter_order,
            short_filter_order=short_filter_order,
            causal=causal,
            dropout=mixer_drop_rate,
            emb_dim=emb_dim,
            num_inner_mlps=num_inner_mlps,
            w=w,
            modulate=modulate,
            filter_lr=filter_lr,
            lr_pos_emb=lr_pos_emb,
            fftconv_backend=fftconv_backend,
        )
        drop_path_rates = calculate_drop_path_rates(drop_path_rate, depth)  # linear in depth
        self.blocks = nn.Sequential(
            *[
                HyenaBlock(
                    embed_dim,
                    mixer_layer,
                    mlp_ratio=mlp_ratio,
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
    def no_weight_decay(self) -> set[str]:
        """Parameters whose optimizer hints set weight decay 0 (implicit filter networks, positional features)."""
        return no_weight_decay_names(self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

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

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> tokens (B, N, C)."""
        x = self.patch_embed(check_image(x, self.in_chans))  # (B, H', W', C)
        return tokens_from_grid(x, self.l_max, self.patch_embed.patch_size)  # (B, N, C)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Features and the outputs of the blocks selected by ``indices`` (last n if int, all if None).

        ``output_fmt`` 'NCHW' gives (B, C, H', W') intermediates, 'NLC' (B, N, C). ``norm`` applies the final
        norm to them; ``stop_early`` stops after the last selected block.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        batch, _, height, width = x.shape
        x = self._embed(x)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[: max_index + 1]
        intermediates = []
        for i, block in enumerate(blocks):
            x = checkpoint(block, x) if self.grad_checkpointing and not torch.jit.is_scripting() else block(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        if output_fmt == "NCHW":
            grid_h, grid_w = self.patch_embed.dynamic_feat_size((height, width))
            intermediates = [y.reshape(batch, grid_h, grid_w, -1).permute(0, 3, 1, 2) for y in intermediates]
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last of ``indices`` (and the final norm / head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)  # (B, N, C)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

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


default_cfgs = generate_default_cfgs(
    {
        "hyena_vit_t": _cfg(),
        "hyena_vit_s": _cfg(),
        "hyena_vit_b": _cfg(),
        "hyena_vit_b_p8": _cfg(),
        "hyena_seq_cifar": cifar_cfg(pool_size=None, first_conv="patch_embed.proj", classifier="head"),
    }
)


def _create_hyena_vit(variant: str, pretrained: bool = False, **kwargs) -> HyenaViT:
    return build_model_with_cfg(
        HyenaViT,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=3, feature_cls="getter"),
        **kwargs,
    )


@register_model
def hyena_vit_t(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Hyena-ViT-Tiny/16: 192 wide, 12 deep (ViT-Ti size, ~5.8M params)."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12)
    return _create_hyena_vit("hyena_vit_t", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def hyena_vit_s(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Hyena-ViT-Small/16: 384 wide, 12 deep (ViT-S size, ~22.5M params)."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12)
    return _create_hyena_vit("hyena_vit_s", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def hyena_vit_b(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Hyena-ViT-Base/16: 768 wide, 12 deep (ViT-B size, ~87M params; the paper's 78.5% ImageNet model)."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12)
    return _create_hyena_vit("hyena_vit_b", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def hyena_vit_b_p8(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Hyena-ViT-Base/8: patch 8, 1024 tokens at 224 px (the paper's 79.8% ImageNet model)."""
    model_args = dict(patch_size=8, embed_dim=768, depth=12)
    return _create_hyena_vit("hyena_vit_b_p8", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def hyena_seq_cifar(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Sequential CIFAR: 32x32 image as 1024 pixel tokens, 4 Hyena blocks of width 64, MLP ratio 2 (~213k)."""
    model_args = dict(
        img_size=32, patch_size=1, num_classes=10, embed_dim=64, depth=4, mlp_ratio=2.0, short_filter_order=3
    )
    return _create_hyena_vit("hyena_seq_cifar", pretrained=pretrained, **dict(model_args, **kwargs))


# Hyena-ViT for 32x32 CIFAR images, at vit_iso_cifar's size (its pair in the CIFAR-10 comparison); pretrained tags
# for the weights shipped in hyena_vision/weights when they exist.
default_cfgs.update(
    generate_default_cfgs(
        shipped_cfgs("hyena_vit_cifar", cifar_cfg(pool_size=None, first_conv="patch_embed.proj", classifier="head"))
    )
)


@register_model
def hyena_vit_cifar(pretrained: bool = False, **kwargs) -> HyenaViT:
    """Hyena-ViT for 32x32 CIFAR: patch 4 (8x8 = 64 tokens), 64 wide, 6 deep, MLP ratio 1.5, bidirectional,
    filter MLP width 32 (~215k params, within 5% of vit_iso_cifar's 209k)."""
    model_args = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=64, depth=6, mlp_ratio=1.5, filter_order=32)
    return _create_hyena_vit("hyena_vit_cifar", pretrained=pretrained, **dict(model_args, **kwargs))
