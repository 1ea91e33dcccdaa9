"""timm model zoo: importing this package registers every model with timm (``timm.create_model('hyena_vit_s')``)."""

from ._helpers import checkpoint_filter_fn, no_weight_decay_names, param_groups
from .cifar_baselines import S4ndIso
from .hyena_clip import HyenaTextEncoder
from .hyena_iso import HyenaIso, IsotropicNet
from .hyena_lm import HyenaLM as HyenaLM  # registers hyena_lm_* with timm
from .hyena_vit import HyenaViT

try:  # open_clip is optional (the ``clip`` extra): with it, the Hyena CLIP configs and text tower are registered
    from .hyena_clip import register_with_open_clip

    register_with_open_clip()
except ImportError:
    pass

__all__ = [
    "HyenaTextEncoder",
    "HyenaIso",
    "HyenaViT",
    "IsotropicNet",
    "S4ndIso",
    "checkpoint_filter_fn",
    "no_weight_decay_names",
    "param_groups",
]
