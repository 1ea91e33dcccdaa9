"""timm model zoo: importing this package registers every model with timm (``timm.create_model('hyena_vit_s')``)."""

from ._helpers import checkpoint_filter_fn, no_weight_decay_names, param_groups
from .cifar_baselines import S4ndIso
from .hyena_iso import HyenaIso, IsotropicNet
from .hyena_lm import HyenaLM as HyenaLM  # registers hyena_lm_* with timm
from .hyena_vit import HyenaViT

__all__ = [
    "HyenaIso",
    "HyenaViT",
    "IsotropicNet",
    "S4ndIso",
    "checkpoint_filter_fn",
    "no_weight_decay_names",
    "param_groups",
]
