"""What every model family here shares: the checkpoint filter, the timm builder, the optimizer helpers, the
block-stack timm API."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import is_dataclass, replace

import torch
from timm.layers import register_notrace_function
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint, checkpoint_seq
from torch import nn

from ..layers.optim import no_weight_decay_names, param_groups

__all__ = [
    "BlockStackMixin",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "build_image_model",
    "check_image",
    "checkpoint_filter_fn",
    "cifar_cfg",
    "no_weight_decay_names",
    "param_groups",
    "variant_kwargs",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@register_notrace_function  # Python control flow on shapes: a leaf for FX tracing
def check_image(x: torch.Tensor, in_chans: int, max_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Validate an image batch (B, in_chans, H, W), H and W at most ``max_size`` when given; returns ``x``."""
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(f"input must be (B, in_chans={in_chans}, H, W), got shape {tuple(x.shape)}")
    if max_size is not None and (x.shape[2] > max_size[0] or x.shape[3] > max_size[1]):
        raise ValueError(
            f"input size {tuple(x.shape[2:])} exceeds the {tuple(max_size)} the model's filters were built for; "
            f"create the model with a larger img_size"
        )
    return x


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Unwrap training checkpoints ({'model': ...}, {'state_dict': ...}, DDP 'module.' prefixes) for ``model``.

    Implicit-filter positional features saved for another ``img_size`` need nothing here: loading them resamples
    them to the model's grid (``PositionalEmbedding``, the analogue of resampling a ViT's position embedding).
    """
    for key in ("model", "state_dict"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
    return {name.removeprefix("module."): value for name, value in state_dict.items()}


def build_image_model(
    model_cls: Callable[..., nn.Module],
    variant: str,
    pretrained: bool = False,
    *,
    pretrained_filter_fn: Callable[[dict, nn.Module], dict] = checkpoint_filter_fn,
    **kwargs,
) -> nn.Module:
    """timm's ``build_model_with_cfg`` as every image model here uses it: ``model_cls(**kwargs)`` with the
    ``variant``'s pretrained config, weights through ``pretrained_filter_fn``, and ``features_only`` through the
    model's ``forward_intermediates`` (timm's 'getter' feature wrapper)."""
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=pretrained_filter_fn,
        feature_cfg=dict(out_indices=3, feature_cls="getter"),
        **kwargs,
    )


# Flat keyword arguments the registered models accept for their settings dataclass (``model.kwargs.filter_order=8``
# in a config, ``timm.create_model(name, filter_order=8)``): per settings keyword, flat name -> the field it sets.
FLAT_SETTINGS = {
    "filter_cfg": {
        **{name: name for name in ("emb_dim", "filter_order", "num_inner_mlps", "w", "modulate", "lr_pos_emb")},
        **{name: name for name in ("fast_decay_pct", "slow_decay_pct", "target", "shift", "normalized")},
        **{"filter_dropout": "filter_dropout", "filter_lr": "lr", "filter_resize": "resize_mode"},
    },
    "ssm_cfg": {**{name: name for name in ("d_state", "init", "dt_min", "dt_max", "bidirectional")}, "ssm_lr": "lr"},
}


def variant_kwargs(model_args: dict, kwargs: dict, settings: str = "filter_cfg") -> dict:
    """A variant's keyword arguments: timm's ``dict(model_args, **kwargs)``, except for its settings keyword
    ``settings`` (a frozen dataclass: ``filter_cfg`` or ``ssm_cfg``). Flat keywords naming its fields
    (``FLAT_SETTINGS``: ``filter_order=8``, ``filter_lr=None``) fold into it; a mapping updates the variant's own
    settings instead of replacing them (``timm.create_model('hyena_lm_153m', filter_cfg=dict(modulate=False))``
    keeps its ``emb_dim=33``, ``w=14``); a dataclass instance replaces them. Other names reach the model class,
    which raises on a typo."""
    kwargs = dict(kwargs)
    flat = {field: kwargs.pop(name) for name, field in FLAT_SETTINGS[settings].items() if name in kwargs}
    given = kwargs.get(settings)
    if flat:
        kwargs[settings] = {**(given or {}), **flat} if not is_dataclass(given) else replace(given, **flat)
    merged = dict(model_args, **kwargs)
    if isinstance(model_args.get(settings), Mapping) and isinstance(kwargs.get(settings), Mapping):
        merged[settings] = {**model_args[settings], **kwargs[settings]}
    return merged


def cifar_cfg(url: str = "", **kwargs) -> dict:
    """Pretrained config of a 32x32 CIFAR-10 model (CIFAR mean/std, no resize or crop at evaluation)."""
    return {
        "url": url,
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (32, 32),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "stem.proj",
        "classifier": "head.fc",
        "license": "apache-2.0",
        **kwargs,
    }


class HintedCheckpointingMixin:
    """timm's ``no_weight_decay`` (from the optimizer hints) and the gradient-checkpointing switch."""

    grad_checkpointing = False

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters whose optimizer hints set weight decay 0 (filter networks, positional features, SSM A, dt)."""
        return no_weight_decay_names(self)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable


def _as_format(x: torch.Tensor, batch: int, grid: tuple[int, int], output_fmt: str) -> torch.Tensor:
    """Block outputs (B, N, C) or (B, H', W', C) on a ``grid`` (H', W') -> 'NCHW', 'NHWC' maps or 'NLC' tokens."""
    x = x.reshape(batch, *grid, x.shape[-1])  # (B, H', W', C)
    if output_fmt == "NCHW":
        return x.permute(0, 3, 1, 2)
    return x.flatten(1, 2) if output_fmt == "NLC" else x


class BlockStackMixin(HintedCheckpointingMixin):
    """timm API of a model that embeds an image, runs ``self.blocks`` (an ``nn.Sequential``) then ``self.norm``:
    weight-decay exclusions from the optimizer hints, gradient checkpointing, intermediate features and pruning.

    The model defines ``embed(x)``: image (B, in_chans, H, W) -> the first block's input, (B, N, C) tokens or
    (B, H', W', C) maps, and their grid (H', W'); and ``output_fmt``, the format of its ``forward_features``
    ('NLC' tokens or 'NHWC' maps).
    """

    output_fmt: str

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

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

        ``output_fmt`` 'NCHW' gives (B, C, H', W') intermediates, ``self.output_fmt`` those of the features.
        ``norm`` applies the final norm to them; ``stop_early`` stops after the last selected block.
        """
        if output_fmt not in ("NCHW", self.output_fmt):
            raise ValueError(f"output_fmt must be 'NCHW' or {self.output_fmt!r}, got {output_fmt!r}")
        batch = x.shape[0]
        x, grid = self.embed(x)
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[: max_index + 1]
        intermediates = []
        for i, block in enumerate(blocks):
            x = checkpoint(block, x) if self.grad_checkpointing and not torch.jit.is_scripting() else block(x)
            if i in take_indices:
                intermediates.append(_as_format(self.norm(x) if norm else x, batch, grid, output_fmt))
        if intermediates_only:
            return intermediates
        return self.norm(_as_format(x, batch, grid, self.output_fmt)), intermediates

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
