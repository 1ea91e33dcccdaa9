"""Layers: implicit filters, the Hyena operators (1D, 2D), S4ND, optimizer hints, weight conversion."""

from .convert import SAFARI_LAYOUTS, convert_safari_state_dict
from .filters import (
    ExponentialModulation,
    HyenaFilter,
    HyenaFilter2d,
    ImplicitFFN,
    ImplicitFilterConfig,
    PositionalEmbedding,
    Sin,
)
from .hyena import HyenaOperator, HyenaOperator2d
from .optim import get_optim_hints, no_weight_decay_names, param_groups, set_optim_hints
from .s4nd import S4ND, DiagonalSSMKernel, SSMKernelConfig

__all__ = [
    "S4ND",
    "SAFARI_LAYOUTS",
    "DiagonalSSMKernel",
    "ExponentialModulation",
    "HyenaFilter",
    "HyenaFilter2d",
    "HyenaOperator",
    "HyenaOperator2d",
    "ImplicitFFN",
    "ImplicitFilterConfig",
    "PositionalEmbedding",
    "SSMKernelConfig",
    "Sin",
    "convert_safari_state_dict",
    "get_optim_hints",
    "no_weight_decay_names",
    "param_groups",
    "set_optim_hints",
]
