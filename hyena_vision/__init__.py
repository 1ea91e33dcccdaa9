"""hyena-vision: Hyena backbones for vision and text.

Importing the package registers its models with timm (``timm.create_model('hyena_vit_s')``).
"""

from . import layers, models, ops

__version__ = "0.1.0"
__all__ = ["layers", "models", "ops", "__version__"]
