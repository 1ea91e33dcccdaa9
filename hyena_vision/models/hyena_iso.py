"""Hyena-ISO: the Hyena paper's isotropic 2D model for CIFAR-10 (4 blocks of width 128, 205k parameters;
the paper: about 202k).

A pixel-level embedding (a 1x1 conv, 3 -> 128), residual pre-norm blocks
``x + drop_path(GLU(dropout(GELU(mixer(LN(x))))))`` at full resolution, a final norm, mean pooling and the
classifier. In Hyena-ISO the mixer is the 2D Hyena long convolution (``HyenaOperator2d``) with implicit filters as
large as the input and a decay window varying across channels; ``gated=False`` (the paper's option, the default)
keeps only the long convolution and its skip term, ``gated=True`` adds the projections and gates. S4ND-ISO
(``cifar_baselines.py``) is the same skeleton with the S4ND layer. Features are channels-last (B, H, W, C).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import (
    ClassifierHead,
    DropPath,
    LayerNorm,
    PatchEmbed,
    calculate_drop_path_rates,
    register_notrace_module,
)
from timm.layers.helpers import get_device_dtype
from timm.models import register_model
from timm.models._input import update_model_input_size
from timm.models._registry import generate_default_cfgs
from torch import nn

from ..layers import HyenaOperator2d, ImplicitFilterConfig
from ._helpers import BlockStackMixin, build_image_model, check_image, cifar_cfg, variant_kwargs

__all__ = ["HyenaIsoLayer", "IsoBlock", "IsotropicNet", "HyenaIso"]

register_notrace_module(HyenaOperator2d)


class HyenaIsoLayer(nn.Module):
    """A 2D long-convolution operator, GELU, dropout and a GLU output projection; (B, H, W, dim) -> same."""

    def __init__(
        self,
        dim: int,
        operator_layer: Callable[..., nn.Module],
        *,
        dropout: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.operator = operator_layer(dim, **dd)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(dim, 2 * dim, **dd)

    def resize(self, size: tuple[int, int]) -> None:
        """Store the operator's filters for images of ``size`` (H, W)."""
        self.operator.resize(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.gelu(self.operator(x)))
        return F.glu(self.out_proj(x), dim=-1)


class IsoBlock(nn.Module):
    """Pre-norm residual block ``x + drop_path(mixer(norm(x)))`` on (B, H, W, dim)."""

    def __init__(
        self,
        dim: int,
        mixer_layer: Callable[..., nn.Module],
        *,
        drop_path: float = 0.0,
        norm_layer: Callable[..., nn.Module] = LayerNorm,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm = norm_layer(dim, **dd)
        self.mixer = mixer_layer(dim, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mixer(self.norm(x)))


class IsotropicNet(BlockStackMixin, nn.Module):
    """Isotropic image classifier: 1x1 embedding, ``depth`` ``IsoBlock`` s of ``mixer_layer``, norm, pool, head.

    Subclasses build ``mixer_layer`` (a callable ``(dim, device=, dtype=) -> module`` on channels-last maps) from
    their explicit arguments. ``forward_features`` gives (B, H, W, C) (``output_fmt = 'NHWC'``). Images larger
    than ``max_img_size`` (None: no limit) raise. ``set_input_size(img_size=...)`` stores the mixers' filters
    (those with a ``resize`` method) for a new size.
    """

    output_fmt = "NHWC"

    def __init__(
        self,
        mixer_layer: Callable[..., nn.Module],
        *,
        img_size: int | tuple[int, int],
        in_chans: int,
        num_classes: int,
        global_pool: str,
        embed_dim: int,
        depth: int,
        drop_rate: float,
        drop_path_rate: float,
        max_img_size: tuple[int, int] | None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.max_img_size = max_img_size
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.stem = PatchEmbed(
            img_size=img_size,
            patch_size=1,
            in_chans=in_chans,
            embed_dim=embed_dim,
            output_fmt="NHWC",
            strict_img_size=False,
            **dd,
        )
        drop_path_rates = calculate_drop_path_rates(drop_path_rate, depth)  # linear in depth
        self.blocks = nn.Sequential(
            *[IsoBlock(embed_dim, mixer_layer, drop_path=drop_path_rates[i], **dd) for i in range(depth)]
        )
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=1) for i in range(depth)]
        self.norm = LayerNorm(embed_dim, **dd)
        self.head = ClassifierHead(
            embed_dim, num_classes, pool_type=global_pool, drop_rate=drop_rate, input_fmt="NHWC", **dd
        )

    def set_input_size(
        self, img_size: int | tuple[int, int] | None = None, patch_size: int | tuple[int, int] | None = None
    ) -> None:
        """Store size-dependent state (implicit filters, the size limit) for ``img_size``; pixels stay patches."""
        if patch_size not in (None, 1, (1, 1)):
            raise ValueError(f"patch_size must stay 1 (the stem embeds single pixels), got {patch_size}")
        self.stem.set_input_size(img_size=img_size)
        if self.max_img_size is not None:
            self.max_img_size = self.stem.img_size
        for block in self.blocks:
            if hasattr(block.mixer, "resize"):
                block.mixer.resize(self.stem.img_size)
        update_model_input_size(self, self.stem.img_size)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool, **get_device_dtype(self))

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.stem(check_image(x, self.in_chans, self.max_img_size))  # (B, H, W, C)
        return x, (x.shape[1], x.shape[2])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)[0]  # (B, H, W, C)
        x = self.run_blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class HyenaIso(IsotropicNet):
    """Hyena-ISO: ``IsotropicNet`` with the 2D Hyena long convolution as mixer (see the module docstring).

    The filters are stored for ``img_size``; smaller inputs use their centred part. With ``dynamic_img_size=True``
    larger inputs run too (the filters extended at the same lag spacing), else they raise. ``set_input_size`` and
    weights saved at another size follow ``filter_cfg.resize_mode`` ('extend' or 'stretch'; see
    ``hyena_vision.layers.PositionalEmbedding``).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 32,
        in_chans: int = 3,
        num_classes: int = 10,
        global_pool: str = "avg",
        embed_dim: int = 128,
        depth: int = 4,
        gated: bool = False,
        order: int = 2,
        short_filter_order: int = 3,
        filter_cfg: ImplicitFilterConfig | Mapping | None = None,
        fftconv_backend: str = "auto",
        dynamic_img_size: bool = False,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        """
        Args:
            img_size: input size = the 2D filters' stored extent (l_max).
            gated: add the Hyena projections and gates around the long convolution (paper's Hyena-ISO: False).
            order, short_filter_order: ``HyenaOperator2d`` settings.
            filter_cfg: the implicit filters (``ImplicitFilterConfig`` or a mapping of its fields, ``emb_dim`` per
                axis; None: its defaults), with their optimizer hints and ``resize_mode`` (see the class).
            dynamic_img_size: accept any input size (else at most ``img_size``).
            drop_rate: dropout before the classifier; proj_drop_rate: dropout after GELU in each block;
                drop_path_rate: stochastic depth.
        """
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        operator_layer = partial(
            HyenaOperator2d,
            l_max=img_size,
            order=order,
            gated=gated,
            short_filter_order=short_filter_order,
            fftconv_backend=fftconv_backend,
            filter_cfg=ImplicitFilterConfig.resolve(filter_cfg),
        )
        super().__init__(
            partial(HyenaIsoLayer, operator_layer=operator_layer, dropout=proj_drop_rate),
            img_size=img_size,
            in_chans=in_chans,
            num_classes=num_classes,
            global_pool=global_pool,
            embed_dim=embed_dim,
            depth=depth,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            max_img_size=None if dynamic_img_size else img_size,
            device=device,
            dtype=dtype,
        )


default_cfgs = generate_default_cfgs({"hyena_iso_cifar": cifar_cfg()})


@register_model
def hyena_iso_cifar(pretrained: bool = False, **kwargs) -> HyenaIso:
    """Hyena-ISO for 32x32 CIFAR: 4 blocks x 128, ungated 2D Hyena long convolutions (205k params)."""
    return build_image_model(HyenaIso, "hyena_iso_cifar", pretrained=pretrained, **variant_kwargs({}, kwargs))
