"""CIFAR-10 baselines at Hyena-ISO's size: S4ND-ISO (``s4nd_iso_cifar``) and a small ViT (``vit_iso_cifar``).

S4ND-ISO is ``IsotropicNet`` (see ``hyena_iso.py``) with the S4ND layer as mixer: 4 blocks x 128, 64-dim diagonal
state per channel and axis (32 complex modes: 16 per direction), about 268k parameters like the paper's. ViT-ISO is
timm's ``VisionTransformer`` sized for 32x32 input: patch 4 (64 tokens), width 64, depth 6, 4 heads, MLP ratio 2,
class token and learned position embedding (209k parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from timm.layers import register_notrace_module
from timm.models import register_model
from timm.models._registry import generate_default_cfgs
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as vit_checkpoint_filter_fn

from ..layers.s4nd import S4ND, SSMKernelConfig
from ._helpers import build_image_model, cifar_cfg, variant_kwargs
from ._shipped import shipped_cfgs
from .hyena_iso import IsotropicNet

__all__ = ["S4ndIso"]

register_notrace_module(S4ND)


class S4ndIso(IsotropicNet):
    """S4ND-ISO: ``IsotropicNet`` with ``S4ND`` layers (kernel, skip, GELU, dropout, GLU). Any input size works."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 32,
        in_chans: int = 3,
        num_classes: int = 10,
        global_pool: str = "avg",
        embed_dim: int = 128,
        depth: int = 4,
        ssm_cfg: SSMKernelConfig | Mapping | None = None,
        fftconv_backend: str = "auto",
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        """
        Args:
            img_size: nominal input size (pretrained config; the SSM kernels are generated for any size).
            ssm_cfg: the SSM kernels' settings (``SSMKernelConfig``, a mapping of its fields such as
                ``dict(d_state=32, init='inv')``, or None for the defaults: S4D-Lin, 64 states, bidirectional).
            drop_rate: dropout before the classifier; proj_drop_rate: dropout after GELU in each S4ND layer;
                drop_path_rate: stochastic depth.
        """
        ssm_cfg = SSMKernelConfig.resolve(ssm_cfg)  # once: every layer shares it
        mixer_layer = partial(S4ND, ssm_cfg=ssm_cfg, dropout=proj_drop_rate, fftconv_backend=fftconv_backend)
        super().__init__(
            mixer_layer,
            img_size=img_size,
            in_chans=in_chans,
            num_classes=num_classes,
            global_pool=global_pool,
            embed_dim=embed_dim,
            depth=depth,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            max_img_size=None,
            device=device,
            dtype=dtype,
        )


default_cfgs = generate_default_cfgs(
    {
        "s4nd_iso_cifar": cifar_cfg(),
        **shipped_cfgs("vit_iso_cifar", cifar_cfg(pool_size=None, first_conv="patch_embed.proj", classifier="head")),
    }
)


@register_model
def s4nd_iso_cifar(pretrained: bool = False, **kwargs) -> S4ndIso:
    """S4ND-ISO for 32x32 CIFAR: 4 blocks x 128, S4D-Lin init, bidirectional (~268k params)."""
    return build_image_model(S4ndIso, "s4nd_iso_cifar", pretrained, **variant_kwargs({}, kwargs, settings="ssm_cfg"))


@register_model
def vit_iso_cifar(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT for 32x32 CIFAR at Hyena-ISO's size: patch 4, 64 wide, 6 deep, 4 heads, MLP ratio 2 (209k params)."""
    model_args = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=64, depth=6, num_heads=4, mlp_ratio=2.0)
    return build_image_model(
        VisionTransformer,
        "vit_iso_cifar",
        pretrained,
        pretrained_filter_fn=vit_checkpoint_filter_fn,
        **dict(model_args, **kwargs),
    )
