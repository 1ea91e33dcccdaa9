"""Implicit long filters: a small FFN of a positional embedding generates the long-convolution kernels.

``HyenaFilter`` gives 1D kernels, (C, L) causal or (C, 2L-1) bidirectional (lag 0 in the middle), and
``HyenaFilter2d`` gives centred 2D kernels (C, 2H-1, 2W-1). Both hold the skip term D (``bias``) and mark their
parameters with optimizer hints (their own lr, weight decay 0; see ``layers.optim``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .optim import set_optim_hints
from .settings import settings_from

__all__ = [
    "ImplicitFilterConfig",
    "PositionalEmbedding",
    "RESIZE_MODES",
    "Sin",
    "ExponentialModulation",
    "ImplicitFFN",
    "HyenaFilter",
    "HyenaFilter2d",
]


RESIZE_MODES = ("extend", "stretch")


def _check_emb_dim(emb_dim: int) -> None:
    if emb_dim < 3 or emb_dim % 2 == 0:
        raise ValueError(f"emb_dim must be odd and >= 3 (time, then cosine/sine bands), got {emb_dim}")


@dataclasses.dataclass(frozen=True)
class ImplicitFilterConfig:
    """Settings of the implicit long filters, built once per model and handed to every operator and filter.

    Attributes:
        emb_dim: positional features per axis, ``[t, cos, -sin]`` bands (odd, >= 3).
        filter_order: width of the filter FFN.
        num_inner_mlps: hidden Linear layers of the FFN (2: four Linear layers, as the original).
        w: initial frequency of the FFN's sine activation.
        fast_decay_pct, slow_decay_pct, target: the decay window; the fastest (slowest) channel has decayed to
            ``target`` at the normalised distance ``fast_decay_pct`` (``slow_decay_pct``).
        shift: added to the decay window; modulate: apply the window at all.
        normalized: L1-normalise the filter values over the channel axis at every lag.
        filter_dropout: dropout on the generated filter values.
        lr: optimizer hint (lr, weight decay 0) of the FFN; None: the optimizer's lr (still no weight decay).
        lr_pos_emb: optimizer hint of the positional features ``z``; 0 makes them a fixed buffer.
        resize_mode: how the filters follow a new input size (``set_input_size``, weights of another size):
            ``'extend'`` (same lag spacing, a lag keeps its meaning) or ``'stretch'`` (the same normalised
            positions over the new grid); see ``PositionalEmbedding``.
    """

    emb_dim: int = 3
    filter_order: int = 64
    num_inner_mlps: int = 2
    w: float = 1.0
    fast_decay_pct: float = 0.3
    slow_decay_pct: float = 1.5
    target: float = 1e-2
    shift: float = 0.0
    modulate: bool = True
    normalized: bool = False
    filter_dropout: float = 0.0
    lr: float | None = 1e-3
    lr_pos_emb: float = 1e-5
    resize_mode: str = "extend"

    def __post_init__(self):
        _check_emb_dim(self.emb_dim)
        if self.filter_order < 1:
            raise ValueError(f"filter_order must be >= 1, got {self.filter_order}")
        if self.num_inner_mlps < 0:
            raise ValueError(f"num_inner_mlps must be >= 0, got {self.num_inner_mlps}")
        if not 0 < self.target < 1:
            raise ValueError(f"target must be in (0, 1), got {self.target}")
        if self.fast_decay_pct <= 0 or self.slow_decay_pct <= 0:
            raise ValueError(
                f"fast_decay_pct and slow_decay_pct must be > 0, got {self.fast_decay_pct}, {self.slow_decay_pct}"
            )
        if not 0 <= self.filter_dropout < 1:
            raise ValueError(f"filter_dropout must be in [0, 1), got {self.filter_dropout}")
        if self.lr is not None and self.lr < 0:
            raise ValueError(f"lr must be None or >= 0, got {self.lr}")
        if self.lr_pos_emb < 0:
            raise ValueError(f"lr_pos_emb must be >= 0, got {self.lr_pos_emb}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")

    def replace(self, **changes) -> ImplicitFilterConfig:
        """A copy with ``changes`` (field names; unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(cls, filter_cfg: ImplicitFilterConfig | Mapping | None) -> ImplicitFilterConfig:
        """The config a model's ``filter_cfg`` argument stands for (see ``settings_from``)."""
        return settings_from(cls, filter_cfg, "filter_cfg")


def _lags(seq_len: int, bidirectional: bool, device=None) -> torch.Tensor:
    """Integer lags of a filter of ``seq_len`` samples: 0..L-1, or -(L-1)..L-1 centred when bidirectional."""
    return torch.arange(-(seq_len - 1) if bidirectional else 0, seq_len, dtype=torch.float64, device=device)


def positional_features(lags: torch.Tensor, emb_dim: int, scale_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``z = [t, cos(f w), -sin(f w)]`` (n, emb_dim) and decay distances |t| (n, 1) at float64 ``lags`` (n,).

    ``t = lag / (scale_len - 1)``, ``w = 2 pi lag / scale_len``, ``f = linspace(1e-4, bands-1, bands)``: the
    original's embedding of a filter of ``scale_len`` samples, evaluated at any lags (the lag spacing is fixed by
    ``scale_len``, not by how many lags there are).
    """
    t = lags / max(scale_len - 1, 1)  # (n,)
    bands = (emb_dim - 1) // 2
    freqs = torch.linspace(1e-4, bands - 1, bands, dtype=torch.float64, device=lags.device)  # (bands,)
    angle = 2 * math.pi * lags[:, None] / scale_len * freqs  # (n, bands)
    z = torch.cat([t[:, None], torch.cos(angle), -torch.sin(angle)], dim=-1)  # (n, emb_dim)
    return z, t.abs()[:, None]


class PositionalEmbedding(nn.Module):
    """Features of each filter position: ``z = [t, cos(f w), -sin(f w)]`` with ``(emb_dim-1)//2`` bands.

    Causal: positions i = 0..seq_len-1, ``t = i/(scale_len-1)``, ``w = 2 pi i / scale_len``,
    ``f = linspace(1e-4, bands-1, bands)`` (the original's embedding; ``scale_len`` defaults to ``seq_len``).
    Bidirectional: signed lags i = -(seq_len-1)..seq_len-1 with the same formulas (t in [-1, 1]). ``decay_t`` is
    the distance |t| the decay modulation uses. ``z`` is trained with its own lr (``lr_pos_emb``, weight decay 0)
    unless that lr is 0.

    Other lengths (the implicit filter is a function of position, so any grid of lags can be evaluated):

    - ``forward(length)`` with length > seq_len extends at the same lag spacing: the stored (possibly trained)
      rows, and the analytic formula at the lags beyond them. Shorter lengths take the first / centred rows.
    - ``resize(seq_len)`` (``set_input_size`` of the models) and loading a state dict saved at another length
      follow ``resize_mode``: ``'extend'`` keeps the lag spacing (``scale_len``; the stored rows are kept, cropped
      or extended as above), ``'stretch'`` spreads the same positions [-1, 1] over the new grid (``scale_len``
      becomes the new length; what training added to the analytic ``z`` is interpolated linearly to the new
      grid). The spacing of a loaded state dict is read from its ``t`` buffer.
    """

    def __init__(
        self,
        emb_dim: int,
        seq_len: int,
        *,
        bidirectional: bool = False,
        lr_pos_emb: float = 1e-5,
        scale_len: int | None = None,
        resize_mode: str = "extend",
        device=None,
        dtype=None,
    ):
        super().__init__()
        _check_emb_dim(emb_dim)
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.emb_dim, self.seq_len, self.scale_len = emb_dim, seq_len, scale_len or seq_len
        self.bidirectional, self.resize_mode = bidirectional, resize_mode
        z, t = positional_features(_lags(seq_len, bidirectional), emb_dim, self.scale_len)
        factory = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        if lr_pos_emb == 0:
            self.register_buffer("z", z.to(**factory))
        else:
            self.z = nn.Parameter(z.to(**factory))
            set_optim_hints(self.z, lr=lr_pos_emb, weight_decay=0.0)
        self.register_buffer("t", t.to(**factory))  # (n, 1)

    def extra_repr(self) -> str:
        return f"seq_len={self.seq_len}, scale_len={self.scale_len}, resize_mode={self.resize_mode!r}"

    def _grid(self, seq_len: int, scale_len: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Analytic (z, t) of a grid of ``seq_len`` samples at the spacing of ``scale_len``, as ``like``."""
        z, t = positional_features(_lags(seq_len, self.bidirectional, like.device), self.emb_dim, scale_len)
        return z.to(like.dtype), t.to(like.dtype)

    def _extended(self, z: torch.Tensor, seq_len: int, scale_len: int, length: int) -> torch.Tensor:
        """Rows of ``z`` (stored for ``seq_len`` samples) over the lags of ``length`` at the same spacing."""
        if length <= seq_len:
            return z[seq_len - length : seq_len + length - 1] if self.bidirectional else z[:length]
        full = self._grid(length, scale_len, z)[0]
        extra = length - seq_len
        if not self.bidirectional:
            return torch.cat([z, full[seq_len:]])
        return torch.cat([full[:extra], z, full[-extra:]])

    def forward(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (n, emb_dim) and decay distances (n, 1); n = length, or 2*length-1 centred if bidirectional."""
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if length <= self.seq_len:
            window = slice(self.seq_len - length, self.seq_len + length - 1) if self.bidirectional else slice(length)
            return self.z[window], self.t[window]
        z = self._extended(self.z, self.seq_len, self.scale_len, length)
        return z, self._grid(length, self.scale_len, self.t)[1]

    def _resampled(self, z: torch.Tensor, seq_len: int, scale_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` stored for (``seq_len``, ``scale_len``) -> (z, t) for (self.seq_len, self.scale_len)."""
        z_new, t_new = self._grid(self.seq_len, self.scale_len, z)
        if scale_len == self.scale_len:
            return self._extended(z, seq_len, scale_len, self.seq_len), t_new
        delta = (z - self._grid(seq_len, scale_len, z)[0]).T[None]  # what training added, (1, E, n_src)
        if len(z_new) == 1:  # one sample: the lag-0 row
            centre = (len(z) - 1) // 2 if self.bidirectional else 0
            delta = delta[..., centre : centre + 1]
        elif len(z) > 1:
            delta = F.interpolate(delta, size=len(z_new), mode="linear", align_corners=True)
        return z_new + delta[0].T, t_new

    def _store(self, z: torch.Tensor, t: torch.Tensor) -> None:
        with torch.no_grad():
            if isinstance(self.z, nn.Parameter):
                self.z.data = z.detach().clone()  # the same Parameter: its optimizer hints stay
            else:
                self.z = z.detach().clone()
            self.t = t.clone()

    @torch.no_grad()
    def resize(self, seq_len: int) -> None:
        """Evaluate on ``seq_len`` samples from now on (``resize_mode``: extend or stretch; see the class)."""
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        old_len, old_scale = self.seq_len, self.scale_len
        self.seq_len = seq_len
        if self.resize_mode == "stretch":
            self.scale_len = seq_len
        self._store(*self._resampled(self.z, old_len, old_scale))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        """Accept ``z`` / ``t`` saved for another length or lag spacing: resampled to this grid (``resize_mode``)."""
        z, t = state_dict.get(prefix + "z"), state_dict.get(prefix + "t")
        if z is not None and t is not None and z.ndim == 2 and z.shape[1] == self.emb_dim and t.shape[0] == len(z):
            seq_len = (len(z) + 1) // 2 if self.bidirectional else len(z)
            first = t[seq_len if self.bidirectional else 1].item() if seq_len > 1 else 0.0
            scale_len = round(1 / first) + 1 if first > 0 else 1  # t at lag 1 is 1 / (scale_len - 1)
            if self.resize_mode == "extend":
                self.scale_len = scale_len
            if (seq_len, scale_len) != (self.seq_len, self.scale_len):
                z_new, t_new = self._resampled(z.to(self.z), seq_len, scale_len)
                state_dict[prefix + "z"], state_dict[prefix + "t"] = z_new.to(z.dtype), t_new.to(t.dtype)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)


class Sin(nn.Module):
    """``sin(freq * x)`` with a learnable frequency per feature (initialised to ``w``)."""

    def __init__(self, dim: int, w: float = 1.0, *, train_freq: bool = True, device=None, dtype=None):
        super().__init__()
        freq = torch.full((dim,), float(w), device=device, dtype=dtype)
        if train_freq:
            self.freq = nn.Parameter(freq)
        else:
            self.register_buffer("freq", freq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class ExponentialModulation(nn.Module):
    """``h * (exp(-t |delta_c|) + shift)``, decay rates spread linearly over the channels.

    ``delta = linspace(ln(target)/slow_decay_pct, ln(target)/fast_decay_pct, channels)``: the slowest channel
    decays to ``target`` at t = slow_decay_pct, the fastest at t = fast_decay_pct. ``deltas`` is a saved buffer
    so that weights converted from other channel layouts keep their rates.
    """

    def __init__(
        self,
        channels: int,
        *,
        fast_decay_pct: float = 0.3,
        slow_decay_pct: float = 1.5,
        target: float = 1e-2,
        shift: float = 0.0,
        modulate: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if not 0 < target < 1:
            raise ValueError(f"target must be in (0, 1), got {target}")
        if fast_decay_pct <= 0 or slow_decay_pct <= 0:
            raise ValueError(f"decay pcts must be > 0, got fast={fast_decay_pct}, slow={slow_decay_pct}")
        self.shift = shift
        self.modulate = modulate
        deltas = torch.linspace(
            math.log(target) / slow_decay_pct, math.log(target) / fast_decay_pct, channels, dtype=torch.float64
        )
        self.register_buffer("deltas", deltas.to(device=device, dtype=dtype or torch.get_default_dtype()))

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """t (..., 1) distances, h (..., C) filter values."""
        if not self.modulate:
            return h
        return h * (torch.exp(-t * self.deltas.abs()) + self.shift)


class ImplicitFFN(nn.Module):
    """Linear(in, W) -> Sin -> [Linear(W, W) -> Sin] x num_inner_mlps -> Linear(W, out, bias=False).

    One ``Sin`` (one frequency vector) is shared by all its uses, as in the original.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        width: int = 64,
        num_inner_mlps: int = 2,
        w: float = 1.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.sin = Sin(width, w, **factory)
        self.input = nn.Linear(in_features, width, **factory)
        self.inner = nn.ModuleList(nn.Linear(width, width, **factory) for _ in range(num_inner_mlps))
        self.output = nn.Linear(width, out_features, bias=False, **factory)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.sin(self.input(z))
        for layer in self.inner:
            h = self.sin(layer(h))
        return self.output(h)


class _ImplicitFilterBase(nn.Module):
    """What 1D and 2D filters share: FFN, modulation, normalization, dropout, the skip term and the hints."""

    def __init__(self, channels: int, emb_features: int, filter_cfg: ImplicitFilterConfig, *, device, dtype):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        cfg = self.filter_cfg = filter_cfg
        self.channels = channels
        self.ffn = ImplicitFFN(
            emb_features, channels, width=cfg.filter_order, num_inner_mlps=cfg.num_inner_mlps, w=cfg.w, **factory
        )
        self.modulation = ExponentialModulation(
            channels,
            fast_decay_pct=cfg.fast_decay_pct,
            slow_decay_pct=cfg.slow_decay_pct,
            target=cfg.target,
            shift=cfg.shift,
            modulate=cfg.modulate,
            **factory,
        )
        self.bias = nn.Parameter(torch.randn(channels, **factory))  # D, the skip term
        for param in self.ffn.parameters():
            set_optim_hints(param, lr=cfg.lr, weight_decay=0.0)

    def _generate(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z (..., E), t (..., 1) -> filter values (..., C), modulated, normalized, dropped out."""
        h = self.modulation(t, self.ffn(z))
        if self.filter_cfg.normalized:
            h = h / h.abs().sum(dim=-1, keepdim=True)  # L1 over the channel axis, as in the original
        return F.dropout(h, self.filter_cfg.filter_dropout, self.training)


class HyenaFilter(_ImplicitFilterBase):
    """Implicit 1D filter: ``forward(L)`` gives ``k`` (C, L), or (C, 2L-1) when ``bidirectional``.

    For L < l_max the first L samples (causal) or the centred 2L-1 lags (bidirectional) of the l_max filter are
    used, so a causal model's outputs on a prefix do not depend on the sequence's total length; for L > l_max the
    filter is extended at the same lag spacing (``PositionalEmbedding``). ``resize(l_max)`` stores it for another
    length (``filter_cfg.resize_mode``).
    """

    def __init__(
        self,
        channels: int,
        l_max: int,
        *,
        bidirectional: bool = False,
        filter_cfg: ImplicitFilterConfig = ImplicitFilterConfig(),
        device=None,
        dtype=None,
    ):
        super().__init__(channels, filter_cfg.emb_dim, filter_cfg, device=device, dtype=dtype)
        self.l_max = l_max
        self.bidirectional = bidirectional
        self.pos_emb = PositionalEmbedding(
            filter_cfg.emb_dim,
            l_max,
            bidirectional=bidirectional,
            lr_pos_emb=filter_cfg.lr_pos_emb,
            resize_mode=filter_cfg.resize_mode,
            device=device,
            dtype=dtype,
        )

    def resize(self, l_max: int) -> None:
        self.l_max = l_max
        self.pos_emb.resize(l_max)

    def forward(self, length: int) -> torch.Tensor:
        z, t = self.pos_emb(length)  # (n, E), (n, 1)
        return self._generate(z, t).transpose(0, 1)  # (C, n)


class HyenaFilter2d(_ImplicitFilterBase):
    """Implicit 2D filter: ``forward((H, W))`` gives centred kernels (C, 2H-1, 2W-1).

    The FFN reads a 2D positional embedding, the concatenation of a bidirectional 1D embedding of the row lag and
    one of the column lag (2 * emb_dim features); the decay window is ``exp(-r |delta_c|)`` over the normalised
    distance from the centre ``r = sqrt(ty^2 + tx^2)``, its rate varying across channels. Inputs larger than
    ``l_max`` extend the filter at the same lag spacing; ``resize((H, W))`` stores it for another size.
    """

    def __init__(
        self,
        channels: int,
        l_max: tuple[int, int],
        *,
        filter_cfg: ImplicitFilterConfig = ImplicitFilterConfig(),
        device=None,
        dtype=None,
    ):
        super().__init__(channels, 2 * filter_cfg.emb_dim, filter_cfg, device=device, dtype=dtype)
        height, width = l_max
        self.l_max = (height, width)
        factory = {"bidirectional": True, "lr_pos_emb": filter_cfg.lr_pos_emb, "device": device, "dtype": dtype}
        factory["resize_mode"] = filter_cfg.resize_mode
        self.pos_emb_y = PositionalEmbedding(filter_cfg.emb_dim, height, **factory)
        self.pos_emb_x = PositionalEmbedding(filter_cfg.emb_dim, width, **factory)

    def resize(self, l_max: tuple[int, int]) -> None:
        self.l_max = tuple(l_max)
        self.pos_emb_y.resize(self.l_max[0])
        self.pos_emb_x.resize(self.l_max[1])

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        height, width = size
        zy, ty = self.pos_emb_y(height)  # (2H-1, E), (2H-1, 1)
        zx, tx = self.pos_emb_x(width)  # (2W-1, E), (2W-1, 1)
        ny, nx = zy.shape[0], zx.shape[0]
        z = torch.cat([zy[:, None].expand(ny, nx, -1), zx[None].expand(ny, nx, -1)], dim=-1)  # (2H-1, 2W-1, 2E)
        r = torch.sqrt(ty[:, None] ** 2 + tx[None] ** 2)  # (2H-1, 2W-1, 1)
        return self._generate(z, r).permute(2, 0, 1)  # (C, 2H-1, 2W-1)
