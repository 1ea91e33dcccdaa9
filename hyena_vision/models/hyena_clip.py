"""Hyena CLIP towers for open_clip: a Hyena text encoder, a CIFAR-size Hyena image tower, their configs.

Importing this module (``import hyena_vision`` does) registers, when open_clip is installed:

- the JSON model configs in ``clip_configs/`` through ``open_clip.add_model_config``, so
  ``open_clip.create_model_and_transforms("hyena_clip_cifar")`` and ``open_clip.get_tokenizer("hyena_clip_cifar")``
  work by name (``clip_vit_cifar`` is the matched baseline: open_clip's own ViT and text transformer);
- a text-tower builder: open_clip builds text towers in ``open_clip.model._build_text_tower``, which knows only its
  own transformer and Hugging Face models. We wrap it so a ``text_cfg`` holding a ``"hyena_text"`` mapping builds a
  ``HyenaTextEncoder`` (with ``"custom_text": true`` the model is open_clip's ``CustomTextCLIP``, whose ``.text``
  is the tower); every other config goes to open_clip's builder unchanged;
- the ``cifar_captions`` pretrained tag of ``hyena_clip_cifar`` (weights shipped in ``clip_weights/``, loaded with
  no network) when the file is present.

The image tower goes through open_clip's timm adapter (``vision_cfg.timm_model_name``); ``hyena_vit_clip_cifar``
(registered with timm here) is a Hyena-ViT for 32x32 images with 4x4 patches (64 tokens).

``HyenaTextEncoder`` mirrors open_clip's ``TextTransformer``: token embedding, blocks, final LayerNorm, the feature
at the end-of-text token (the largest id with CLIP's tokenizer, open_clip's ``pool_type='argmax'``), a linear
projection. Its blocks are the Hyena LM's pre-norm blocks with a causal ``HyenaOperator`` (no positional embedding:
the implicit filters know positions), so the pooled feature depends only on tokens up to end-of-text, as with
CLIP's causal mask. ``causal=False`` gives a bidirectional variant; it zeroes the positions after end-of-text
before every block so padding cannot change the result either.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import HyenaOperator, ImplicitFilterConfig
from ._helpers import HintedCheckpointingMixin, build_image_model, cifar_cfg, variant_kwargs
from ._lm import gpt2_block, init_gpt2_weights
from .hyena_vit import HyenaViT

__all__ = ["CLIP_CONFIG_DIR", "CLIP_WEIGHTS", "HyenaTextEncoder", "build_hyena_text_tower", "register_with_open_clip"]

CLIP_CONFIG_DIR = Path(__file__).parent / "clip_configs"
# pretrained tags shipped with the package: model name -> {tag: safetensors file}
CLIP_WEIGHTS = {
    "hyena_clip_cifar": {"cifar_captions": Path(__file__).parent / "clip_weights" / "hyena_clip_cifar.safetensors"}
}

# keys of a Hyena text_cfg besides the "hyena_text" mapping (the rest of open_clip's CLIPTextCfg does not apply)
_TEXT_CFG_KEYS = ("context_length", "vocab_size", "width", "layers", "mlp_ratio")


class HyenaTextEncoder(HintedCheckpointingMixin, nn.Module):
    """Token ids (B, L) int64, L <= context_length, each row holding its end-of-text token as its largest id ->
    text features (B, output_dim).

    ``width`` wide, ``layers`` blocks with MLP ``mlp_ratio * width``; ``order`` and ``short_filter_order`` configure
    the Hyena operator (see ``HyenaOperator``), ``filter_cfg`` its implicit filters (``ImplicitFilterConfig`` or a
    mapping of its fields, None: its defaults); ``dropout`` acts on each residual branch. GPT-2 initialisation.
    """

    def __init__(
        self,
        *,
        context_length: int = 77,
        vocab_size: int = 49408,
        width: int = 512,
        layers: int = 12,
        mlp_ratio: float = 4.0,
        output_dim: int = 512,
        causal: bool = True,
        order: int = 2,
        short_filter_order: int = 3,
        filter_cfg: ImplicitFilterConfig | Mapping | None = None,
        dropout: float = 0.0,
        fftconv_backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if min(context_length, vocab_size, width, layers, output_dim) < 1 or mlp_ratio <= 0:
            raise ValueError(
                "context_length, vocab_size, width, layers, output_dim must be >= 1 and mlp_ratio > 0, got "
                f"{context_length}, {vocab_size}, {width}, {layers}, {output_dim}, {mlp_ratio}"
            )
        dd = {"device": device, "dtype": dtype}
        self.context_length, self.vocab_size, self.causal = context_length, vocab_size, causal
        self.token_embedding = nn.Embedding(vocab_size, width, **dd)
        mixer_layer = partial(
            HyenaOperator,
            l_max=context_length,
            order=order,
            short_filter_order=short_filter_order,
            causal=causal,
            fftconv_backend=fftconv_backend,
            filter_cfg=ImplicitFilterConfig.resolve(filter_cfg),
        )
        block = gpt2_block(mlp_hidden=int(width * mlp_ratio), dropout=dropout, layer_norm_eps=1e-5, **dd)
        self.blocks = nn.ModuleList(block(width, mixer_layer) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width, **dd)
        self.text_projection = nn.Linear(width, output_dim, bias=False, **dd)
        if self.token_embedding.weight.device.type != "meta":
            init_gpt2_weights(self, layers)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        if text.ndim != 2 or text.dtype != torch.long or not 1 <= text.shape[1] <= self.context_length:
            raise ValueError(
                f"text must be int64 token ids (B, L) with 1 <= L <= context_length={self.context_length}, "
                f"got {text.dtype} {tuple(text.shape)}"
            )
        batch, length = text.shape
        eot = text.argmax(dim=-1)  # (B,) CLIP's tokenizer gives end-of-text the largest id
        x = self.token_embedding(text)  # (B, L, width)
        keep = None
        if not self.causal:  # (B, L, 1): a bidirectional mixer would otherwise see the padding
            keep = (torch.arange(length, device=text.device) <= eot[:, None])[..., None].to(x.dtype)
        for block in self.blocks:
            if keep is not None:
                x = x * keep
            x = checkpoint(block, x, use_reentrant=False) if self.grad_checkpointing and self.training else block(x)
        x = self.ln_final(x[torch.arange(batch, device=text.device), eot])  # (B, width)
        return self.text_projection(x)  # (B, output_dim)

    def lock(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze the tower (LiT-style) but its last ``unlocked_layers`` blocks and, when any, the final norm and
        projection; ``freeze_layer_norm=False`` leaves every LayerNorm trainable."""
        frozen = [self.token_embedding, *self.blocks[: len(self.blocks) - unlocked_layers]]
        if not unlocked_layers:
            frozen += [self.ln_final, self.text_projection]
        for module in frozen:
            for sub in module.modules():
                if freeze_layer_norm or not isinstance(sub, nn.LayerNorm):
                    for param in sub.parameters(recurse=False):
                        param.requires_grad = False


def build_hyena_text_tower(embed_dim: int, text_cfg: dict) -> HyenaTextEncoder:
    """A ``HyenaTextEncoder`` from an open_clip ``text_cfg`` holding a ``"hyena_text"`` mapping of its own
    arguments; ``embed_dim`` is the shared embedding width. Keys neither accepts raise."""
    unknown = sorted(set(text_cfg) - {*_TEXT_CFG_KEYS, "hyena_text"})
    if unknown:
        raise ValueError(f"text_cfg of a Hyena text tower accepts {[*_TEXT_CFG_KEYS, 'hyena_text']}, got {unknown}")
    args = {k: text_cfg[k] for k in _TEXT_CFG_KEYS if k in text_cfg}
    return HyenaTextEncoder(output_dim=embed_dim, **args, **text_cfg["hyena_text"])


# ----------------------------------------------------------------------------------------------------------------
# The CIFAR-size image tower (timm)


default_cfgs = generate_default_cfgs(
    {"hyena_vit_clip_cifar": cifar_cfg(num_classes=0, pool_size=None, first_conv="patch_embed.proj", classifier="head")}
)


@register_model
def hyena_vit_clip_cifar(pretrained: bool = False, **kwargs) -> HyenaViT:
    """CLIP image tower for 32x32 images: 4x4 patches (64 tokens), 4 Hyena blocks of width 64, MLP ratio 4, filter
    FFN width 32 (the size of the 4 x 64 ViT of ``clip_vit_cifar``)."""
    model_args = dict(img_size=32, patch_size=4, num_classes=0, embed_dim=64, depth=4)
    model_args.update(short_filter_order=3, filter_cfg=dict(filter_order=32))
    return build_image_model(HyenaViT, "hyena_vit_clip_cifar", pretrained, **variant_kwargs(model_args, kwargs))


# ----------------------------------------------------------------------------------------------------------------
# open_clip registration


def register_with_open_clip() -> None:
    """Add our model configs, the Hyena text-tower builder and the shipped pretrained tags to open_clip (idempotent)."""
    import open_clip
    from open_clip import model as open_clip_model
    from open_clip import pretrained as open_clip_pretrained

    if CLIP_CONFIG_DIR not in open_clip.factory._MODEL_CONFIG_PATHS:
        open_clip.add_model_config(CLIP_CONFIG_DIR)
    original = open_clip_model._build_text_tower
    if not getattr(original, "hyena_vision", False):

        def build_text_tower(embed_dim, text_cfg, quick_gelu=False, cast_dtype=None):
            if isinstance(text_cfg, dict) and "hyena_text" in text_cfg:
                return build_hyena_text_tower(embed_dim, text_cfg)
            return original(embed_dim, text_cfg, quick_gelu, cast_dtype)

        build_text_tower.hyena_vision = True
        open_clip_model._build_text_tower = build_text_tower
    # open_clip has no public call for adding a tag; its registry maps model -> tag -> config, a 'file' is local
    for name, tags in CLIP_WEIGHTS.items():
        for tag, path in tags.items():
            if path.is_file():
                open_clip_pretrained._PRETRAINED.setdefault(name, {})[tag] = open_clip_pretrained._pcfg(file=str(path))
