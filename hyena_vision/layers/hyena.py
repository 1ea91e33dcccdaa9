"""The Hyena operator: projections, a short depthwise convolution, then gates interleaved with implicit long convs.

Order N (the original's counting): N gates x0..x_{N-1}, a value v and N-1 long convolutions::

    x0, ..., x_{N-1}, v = split(short_conv(in_proj(u)))
    for o, x_i in enumerate(reversed([x1, ..., x_{N-1}])):   # filter o pairs with x_{N-1-o}
        v = long_conv(dropout(v * x_i), k_o) + D_o * (v * x_i)
    y = out_proj(v * x0)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..ops import fftconv, fftconv2d
from ..ops.fftconv import BACKENDS
from ..ops.longconv import short_conv
from .filters import HyenaFilter, HyenaFilter2d, ImplicitFilterConfig

__all__ = ["HyenaOperator", "HyenaOperator2d"]


def _check_common(d_model: int, order: int, dropout: float, fftconv_backend: str) -> None:
    if d_model < 1:
        raise ValueError(f"d_model must be >= 1, got {d_model}")
    if order < 2:
        raise ValueError(f"order must be >= 2 (N gates, N-1 long convolutions), got {order}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if fftconv_backend not in BACKENDS:
        raise ValueError(f"fftconv_backend must be one of {BACKENDS}, got {fftconv_backend!r}")


class HyenaOperator(nn.Module):
    """1D Hyena operator, (B, L, d_model) -> (B, L, d_model).

    ``causal=True`` is the language-model operator (causal short conv, causal long filters of length l_max);
    ``causal=False`` the bidirectional one for vision (centred short conv, filters over lags -(L-1)..L-1).
    Channels are ``d_inner = d_model * inner_factor`` wide; ``num_heads`` splits them into heads of
    ``d_inner / num_heads`` channels that share one set of long filters. ``dropout`` acts on each gated input of
    a long convolution. ``l_max`` is the length the long filters are stored for: shorter inputs use their first
    (causal) or centred samples, longer ones extend them at the same lag spacing; ``resize(l_max)`` stores them
    for another length (``filter_cfg.resize_mode``: extend or stretch). ``filter_cfg`` holds the implicit filters'
    settings (``ImplicitFilterConfig`` with its optimizer hints, a mapping of its fields such as
    ``dict(filter_order=16)``, or None for the defaults).
    """

    def __init__(
        self,
        d_model: int,
        l_max: int,
        *,
        order: int = 2,
        num_heads: int = 1,
        inner_factor: int = 1,
        short_filter_order: int = 3,
        causal: bool = True,
        dropout: float = 0.0,
        fftconv_backend: str = "auto",
        filter_cfg: ImplicitFilterConfig | Mapping | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        _check_common(d_model, order, dropout, fftconv_backend)
        filter_cfg = ImplicitFilterConfig.resolve(filter_cfg)
        if inner_factor < 1:
            raise ValueError(f"inner_factor must be >= 1, got {inner_factor}")
        d_inner = d_model * inner_factor
        if num_heads < 1 or d_inner % num_heads:
            raise ValueError(f"num_heads must divide d_model * inner_factor = {d_inner}, got {num_heads}")
        if short_filter_order < 1 or (not causal and short_filter_order % 2 == 0):
            raise ValueError(f"short_filter_order must be >= 1 (and odd when causal=False), got {short_filter_order}")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.l_max, self.order, self.causal = d_model, l_max, order, causal
        self.d_inner, self.num_heads, self.head_dim = d_inner, num_heads, d_inner // num_heads
        self.fftconv_backend = fftconv_backend
        self.in_proj = nn.Linear(d_model, (order + 1) * d_inner, **factory)
        self.short_filter = nn.Conv1d(
            (order + 1) * d_inner,
            (order + 1) * d_inner,
            short_filter_order,
            groups=(order + 1) * d_inner,
            padding=short_filter_order - 1 if causal else short_filter_order // 2,
            **factory,
        )
        self.filter = HyenaFilter(
            self.head_dim * (order - 1),  # channel o * head_dim + d: filter o, channel d ("o-major")
            l_max,
            bidirectional=not causal,
            filter_cfg=filter_cfg,
            **factory,
        )
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(d_inner, d_model, **factory)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, l_max={self.l_max}, order={self.order}, causal={self.causal}, "
            f"num_heads={self.num_heads}, d_inner={self.d_inner}"
        )

    def resize(self, l_max: int) -> None:
        """Store the long filters for ``l_max`` (see ``PositionalEmbedding`` for extend / stretch)."""
        self.l_max = l_max
        self.filter.resize(l_max)

    def long_filters(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step kernels (N-1, d_inner, n) and skips (N-1, d_inner), n = length or 2*length-1."""
        k = self.filter(length).view(self.order - 1, self.head_dim, -1)  # (O, head_dim, n)
        skip = self.filter.bias.view(self.order - 1, self.head_dim)  # (O, head_dim)
        if self.num_heads > 1:  # heads share the filters
            k, skip = k.repeat(1, self.num_heads, 1), skip.repeat(1, self.num_heads)  # (O, d_inner, n), (O, d_inner)
        return k, skip

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.ndim != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"input must be (B, L, d_model={self.d_model}), got shape {tuple(u.shape)}")
        length = u.shape[1]
        z = self.in_proj(u)  # (B, L, (N+1) * d_inner)
        if z.is_cuda:  # cuDNN's depthwise kernel on channels-first
            z = self.short_filter(z.transpose(1, 2))[..., :length]  # (B, (N+1) * d_inner, L)
            *x, v = z.split(self.d_inner, dim=1)  # N + 1 tensors (B, d_inner, L)
        else:  # shifted multiply-adds along L on channels-last z: no transposed copy, a cheap backward
            z = short_conv(z, self.short_filter.weight, self.short_filter.bias, self.short_filter.padding[0])
            # split the last axis, so that the split's backward concatenates contiguous gradients
            *x, v = [c.transpose(1, 2) for c in z.split(self.d_inner, dim=-1)]  # channels-last (B, d_inner, L)
        k, skip = self.long_filters(length)
        gates = x[:0:-1]  # x_{N-1}, ..., x_1
        fuse_gate = not (self.training and self.dropout.p > 0)
        for o, x_i in enumerate(gates):
            if not fuse_gate:
                v = self.dropout(v * x_i)
            v = fftconv(
                v,
                k[o],
                skip[o],
                causal=self.causal,
                pre_gate=x_i if fuse_gate else None,
                post_gate=x[0] if o == len(gates) - 1 else None,
                backend=self.fftconv_backend,
            )  # the torch backend keeps v's channels-last layout: no copy before out_proj
        return self.out_proj(v.transpose(1, 2))  # (B, L, d_model)


class HyenaOperator2d(nn.Module):
    """2D Hyena operator on channels-last images, (B, H, W, d_model) -> (B, H, W, d_model).

    ``gated=True``: the Hyena recurrence of ``HyenaOperator`` with a centred depthwise ``short_filter_order`` x
    ``short_filter_order`` conv and 2D implicit long filters (C, 2H-1, 2W-1), linear (zero-padded) convolution.
    ``gated=False`` (the paper's Hyena-ISO option): no projections and no gates, only the implicit long
    convolution with its skip term, ``y = k * u + D u`` (then ``order`` must be 2). ``filter_cfg`` configures the
    implicit filters and ``l_max`` (H, W) is their stored extent, as for ``HyenaOperator`` (other sizes crop or
    extend them; ``resize((H, W))``).
    """

    def __init__(
        self,
        d_model: int,
        l_max: tuple[int, int],
        *,
        order: int = 2,
        gated: bool = True,
        short_filter_order: int = 3,
        dropout: float = 0.0,
        fftconv_backend: str = "auto",
        filter_cfg: ImplicitFilterConfig | Mapping | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        _check_common(d_model, order, dropout, fftconv_backend)
        filter_cfg = ImplicitFilterConfig.resolve(filter_cfg)
        if not gated and order != 2:
            raise ValueError(f"gated=False has one long convolution and needs order=2, got order={order}")
        if short_filter_order < 1 or short_filter_order % 2 == 0:
            raise ValueError(f"short_filter_order must be odd and >= 1, got {short_filter_order}")
        if len(l_max) != 2 or min(l_max) < 1:
            raise ValueError(f"l_max must be (H, W) with H, W >= 1, got {l_max}")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.l_max, self.order, self.gated = d_model, tuple(l_max), order, gated
        self.fftconv_backend = fftconv_backend
        if gated:
            width = (order + 1) * d_model
            self.in_proj = nn.Linear(d_model, width, **factory)
            self.short_filter = nn.Conv2d(
                width, width, short_filter_order, padding=short_filter_order // 2, groups=width, **factory
            )
            self.out_proj = nn.Linear(d_model, d_model, **factory)
        self.filter = HyenaFilter2d(
            d_model * (order - 1),
            self.l_max,
            filter_cfg=filter_cfg,
            **factory,
        )
        self.dropout = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, l_max={self.l_max}, order={self.order}, gated={self.gated}"

    def resize(self, l_max: tuple[int, int]) -> None:
        """Store the 2D filters for ``l_max`` = (H, W)."""
        self.l_max = tuple(l_max)
        self.filter.resize(self.l_max)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.ndim != 4 or u.shape[-1] != self.d_model:
            raise ValueError(f"input must be channels-last (B, H, W, d_model={self.d_model}), got {tuple(u.shape)}")
        height, width = u.shape[1:3]
        k = self.filter((height, width)).view(self.order - 1, self.d_model, 2 * height - 1, 2 * width - 1)
        skip = self.filter.bias.view(self.order - 1, self.d_model)
        if not self.gated:
            y = fftconv2d(u.permute(0, 3, 1, 2), k[0], skip[0], backend=self.fftconv_backend)  # (B, D, H, W)
            return y.permute(0, 2, 3, 1)  # (B, H, W, D)
        z = self.short_filter(self.in_proj(u).permute(0, 3, 1, 2))  # (B, (N+1) * D, H, W)
        *x, v = z.split(self.d_model, dim=1)
        for o, x_i in enumerate(x[:0:-1]):
            v = self.dropout(v * x_i)
            v = fftconv2d(v, k[o], skip[o], backend=self.fftconv_backend)
        return self.out_proj((v * x[0]).permute(0, 2, 3, 1))  # (B, H, W, D)
