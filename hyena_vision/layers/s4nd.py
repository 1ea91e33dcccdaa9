"""S4ND (Nguyen et al., NeurIPS 2022): a diagonal state-space kernel per axis, the 2D kernel their outer product.

Written from the S4D and S4ND papers. Per axis and channel, ``modes`` complex diagonal modes per direction give,
after zero-order-hold discretization with step ``dt`` (B fixed to 1: only the product C B matters)::

    A_bar = exp(dt A),   B_bar = (A_bar - 1) / A,   K[l] = 2 Re( sum_n C_n B_bar_n A_bar_n^l ),  l = 0, 1, ...

which is the impulse response of ``x_{l} = A_bar x_{l-1} + B_bar u_l, y_l = 2 Re(C x_l)``. Bidirectional kernels
combine a forward kernel (lags 0..L-1) and a separately parametrised backward kernel (lags -1..-(L-1)) into one
centred kernel (C, 2L-1). ``S4ND`` applies the outer product of the row and column kernels by FFT (``fftconv2d``),
adds the skip ``D u``, then GELU, dropout and a GLU output projection, as the S4 layer does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import fftconv2d
from ..ops.fftconv import BACKENDS
from .optim import set_optim_hints
from .settings import settings_from

__all__ = ["DiagonalSSMKernel", "S4ND", "S4D_INITS", "SSMKernelConfig"]

S4D_INITS = ("lin", "inv")


def _init_a_imag(init: str, modes: int) -> torch.Tensor:
    """Imaginary parts of the S4D-Lin / S4D-Inv diagonal A (modes,), float64; real parts are all -1/2."""
    n = torch.arange(modes, dtype=torch.float64)
    if init == "lin":
        return math.pi * n
    state_size = 2 * modes  # N in the S4D paper: `modes` conjugate pairs
    return state_size / math.pi * (state_size / (2 * n + 1) - 1)


@dataclass(frozen=True)
class SSMKernelConfig:
    """Settings of the diagonal SSM kernels, built once per model and shared by both axes of every S4ND layer.

    Attributes:
        d_state: real state dimensions per channel as in S4D (``d_state/2`` complex modes); with ``bidirectional``
            half of the modes make the forward kernel and half the backward one (each its own A, C), otherwise all
            modes are causal and the negative lags are zero.
        init: ``'lin'`` (S4D-Lin) or ``'inv'`` (S4D-Inv) imaginary parts of A.
        dt_min, dt_max: ``log_dt`` is drawn uniformly in [log dt_min, log dt_max].
        lr: optimizer hint (lr, weight decay 0) of A and dt; None: the optimizer's lr (still no weight decay).
    """

    d_state: int = 64
    init: str = "lin"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    bidirectional: bool = True
    lr: float | None = 1e-3

    def __post_init__(self):
        if self.d_state < 2 * self.directions or self.d_state % (2 * self.directions):
            raise ValueError(f"d_state must be a positive multiple of {2 * self.directions}, got {self.d_state}")
        if self.init not in S4D_INITS:
            raise ValueError(f"init must be one of {S4D_INITS}, got {self.init!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @classmethod
    def resolve(cls, ssm_cfg: SSMKernelConfig | Mapping | None) -> SSMKernelConfig:
        """The config a model's ``ssm_cfg`` argument stands for (see ``settings_from``)."""
        return settings_from(cls, ssm_cfg, "ssm_cfg")


class DiagonalSSMKernel(nn.Module):
    """Per-channel diagonal SSM convolution kernels of one axis: ``forward(L)`` gives (C, 2L-1), lag 0 at L-1.

    ``ssm_cfg`` (``SSMKernelConfig``, a mapping of its fields, or None for the defaults) sets the state size,
    initialisation, step range, directions and the optimizer hint of A and dt. The kernel is computed in float32
    (float64 when the parameters are float64) whatever the parameters' dtype.
    """

    def __init__(self, channels: int, *, ssm_cfg: SSMKernelConfig | Mapping | None = None, device=None, dtype=None):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        cfg = SSMKernelConfig.resolve(ssm_cfg)
        factory = {"device": device, "dtype": dtype or torch.get_default_dtype()}  # inits are built in float64
        self.channels, self.bidirectional, directions = channels, cfg.bidirectional, cfg.directions
        modes = cfg.d_state // (2 * directions)
        shape = (directions, channels, modes)
        self.log_a_real = nn.Parameter(torch.full(shape, math.log(0.5), **factory))  # Re A = -exp(.)
        self.a_imag = nn.Parameter(_init_a_imag(cfg.init, modes).to(**factory).expand(shape).clone())
        c = torch.randn(*shape, dtype=torch.complex128)  # C ~ complex normal, E|C|^2 = 1
        self.c = nn.Parameter(torch.view_as_real(c).to(**factory))  # (directions, C, modes, 2)
        u = torch.rand(channels, dtype=torch.float64)
        log_dt = math.log(cfg.dt_min) + u * (math.log(cfg.dt_max) - math.log(cfg.dt_min))
        self.log_dt = nn.Parameter(log_dt.to(**factory))  # (C,)
        for param in (self.log_a_real, self.a_imag, self.log_dt):
            set_optim_hints(param, lr=cfg.lr, weight_decay=0.0)

    def extra_repr(self) -> str:
        d, c, m = self.log_a_real.shape
        return f"channels={c}, modes={m}, bidirectional={self.bidirectional}"

    def causal_kernels(self, length: int) -> torch.Tensor:
        """Kernels (directions, C, length) for lags 0..length-1 of each direction."""
        real = torch.float64 if self.log_dt.dtype == torch.float64 else torch.float32
        a = torch.complex(-torch.exp(self.log_a_real.to(real)), self.a_imag.to(real))  # (dirs, C, M)
        dt_a = torch.exp(self.log_dt.to(real))[:, None] * a  # (dirs, C, M)
        c = self.c.to(real)
        c_b_bar = torch.complex(c[..., 0], c[..., 1]) * (torch.exp(dt_a) - 1) / a  # C * B_bar, (dirs, C, M)
        steps = torch.arange(length, device=a.device, dtype=real)
        powers = torch.exp(dt_a[..., None] * steps)  # A_bar^l, (dirs, C, M, L)
        return 2 * torch.einsum("dcm,dcml->dcl", c_b_bar, powers).real  # (dirs, C, L)

    def forward(self, length: int) -> torch.Tensor:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        k = self.causal_kernels(length)
        forward_k = k[0]  # lags 0..L-1
        if self.bidirectional:
            backward_k = k[1, :, : length - 1].flip(-1)  # lags -(L-1)..-1
        else:
            backward_k = forward_k.new_zeros(self.channels, length - 1)
        return torch.cat([backward_k, forward_k], dim=-1)  # (C, 2L-1)


class S4ND(nn.Module):
    """2D S4ND layer on channels-last images, (B, H, W, d_model) -> (B, H, W, d_model).

    ``y = GLU(Linear(dropout(GELU(k_y (x) k_x * u + D u))))`` where ``k_y (x) k_x`` is the outer product of the
    row and column kernels of two ``DiagonalSSMKernel`` s, both set by ``ssm_cfg``. Any image size works: the
    kernels are generated for the actual size.
    """

    def __init__(
        self,
        d_model: int,
        *,
        ssm_cfg: SSMKernelConfig | Mapping | None = None,
        dropout: float = 0.0,
        fftconv_backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if fftconv_backend not in BACKENDS:
            raise ValueError(f"fftconv_backend must be one of {BACKENDS}, got {fftconv_backend!r}")
        factory = {"device": device, "dtype": dtype}
        ssm_cfg = SSMKernelConfig.resolve(ssm_cfg)
        self.d_model, self.fftconv_backend = d_model, fftconv_backend
        self.kernel_y = DiagonalSSMKernel(d_model, ssm_cfg=ssm_cfg, **factory)
        self.kernel_x = DiagonalSSMKernel(d_model, ssm_cfg=ssm_cfg, **factory)
        self.skip = nn.Parameter(torch.randn(d_model, **factory))  # D
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(d_model, 2 * d_model, **factory)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}"

    def kernel(self, size: tuple[int, int]) -> torch.Tensor:
        """The centred 2D kernel (C, 2H-1, 2W-1)."""
        height, width = size
        return self.kernel_y(height)[:, :, None] * self.kernel_x(width)[:, None, :]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.ndim != 4 or u.shape[-1] != self.d_model:
            raise ValueError(f"input must be channels-last (B, H, W, d_model={self.d_model}), got {tuple(u.shape)}")
        k = self.kernel((u.shape[1], u.shape[2]))
        y = fftconv2d(u.permute(0, 3, 1, 2), k, self.skip, backend=self.fftconv_backend)  # (B, D, H, W)
        y = self.dropout(F.gelu(y.permute(0, 2, 3, 1)))  # (B, H, W, D)
        return F.glu(self.out_proj(y), dim=-1)
