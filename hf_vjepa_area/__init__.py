"""V-JEPA 2 video encoders with Spatiotemporal Area Attention (ST-A²) for transformers and timm.

Importing the package registers the models with transformers' auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForVideoClassification`, `AutoVideoProcessor`) and timm's registry (`vjepa2_*` entry points).
"""

from .modeling import (
    VARIANTS,
    AttentiveClassifier,
    AttentivePooler,
    VJEPA2AreaConfig,
    VJEPA2AreaForVideoClassification,
    VJEPA2AreaModel,
    VJEPA2AreaPredictor,
    VJEPA2AreaPreTrainedModel,
)
from ._version import __version__
from .registration import register_transformers
from . import timm_models  # noqa: E402  (registers the timm entry points)
from .sources import AreaOptions, load_encoder, load_model
from .hub import repo_id_for, save_repo_folder
from .timm_models import VJEPA2Area

register_transformers()

__all__ = [
    "__version__",
    "VARIANTS",
    "VJEPA2AreaConfig",
    "VJEPA2AreaModel",
    "VJEPA2AreaForVideoClassification",
    "VJEPA2AreaPreTrainedModel",
    "AttentiveClassifier",
    "AttentivePooler",
    "VJEPA2AreaPredictor",
    "VJEPA2Area",
    "AreaOptions",
    "load_model",
    "load_encoder",
    "repo_id_for",
    "save_repo_folder",
    "register_transformers",
]
