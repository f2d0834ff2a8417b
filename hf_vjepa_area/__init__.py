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
from .registration import register_transformers
from . import timm_models  # noqa: E402  (registers the timm entry points)
from .hub import repo_id_for, save_repo_folder
from .timm_models import VJEPA2Area

register_transformers()

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "VJEPA2AreaConfig",
    "VJEPA2AreaModel",
    "VJEPA2AreaForVideoClassification",
    "VJEPA2AreaPreTrainedModel",
    "AttentiveClassifier",
    "AttentivePooler",
    "VJEPA2AreaPredictor",
    "VJEPA2Area",
    "repo_id_for",
    "save_repo_folder",
    "register_transformers",
]
