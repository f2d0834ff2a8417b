"""V-JEPA 2 video encoders with Spatiotemporal Area Attention (ST-A²) for transformers and timm."""

from .modeling import (
    VARIANTS,
    AttentiveClassifier,
    AttentivePooler,
    VJEPA2AreaConfig,
    VJEPA2AreaForVideoClassification,
    VJEPA2AreaModel,
    VJEPA2AreaPreTrainedModel,
)

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "VJEPA2AreaConfig",
    "VJEPA2AreaModel",
    "VJEPA2AreaForVideoClassification",
    "VJEPA2AreaPreTrainedModel",
    "AttentiveClassifier",
    "AttentivePooler",
]
