"""The residual block every token model here shares (Hyena-ViT 1D and 2D, HyenaLM, GPT), its mixer injected."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.layers import DropPath, LayerNorm, Mlp
from torch import nn

__all__ = ["PreNormBlock"]


class PreNormBlock(nn.Module):
    """``x + drop(mixer(norm1(x)))`` then ``x + drop(mlp(norm2(x)))`` on channels-last (..., dim) tensors.

    ``mixer_layer(dim, device=, dtype=)`` builds the token mixer (a Hyena operator, attention); ``mlp`` is timm's
    ``Mlp`` (``proj_drop`` after its activation and output). ``drop`` is stochastic depth (``drop_path``, per
    sample, the ViT recipe) then element dropout (``branch_drop``, GPT-2's residual dropout) on each branch.
    """

    def __init__(
        self,
        dim: int,
        mixer_layer: Callable[..., nn.Module],
        *,
        mlp_hidden: int,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        branch_drop: float = 0.0,
        norm_layer: Callable[..., nn.Module] = LayerNorm,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = norm_layer(dim, **dd)
        self.mixer = mixer_layer(dim, **dd)
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, mlp_hidden, act_layer=act_layer, drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.branch_drop = nn.Dropout(branch_drop) if branch_drop > 0.0 else nn.Identity()

    def mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        """The second half of the block: ``x + drop(mlp(norm2(x)))``."""
        return x + self.drop_path(self.branch_drop(self.mlp(self.norm2(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.branch_drop(self.mixer(self.norm1(x))))
        return self.mlp_residual(x)
