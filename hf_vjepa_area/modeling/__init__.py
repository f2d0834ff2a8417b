"""Self-contained modeling code (torch + transformers only), copied flat into Hub folders for remote code."""

from .ac_predictor_vjepa2_area import AC_PREDICTOR_WEIGHTS_NAME, VJEPA2ACPredictor, VJEPA2ACPredictorConfig
from .configuration_vjepa2_area import VJEPA2AreaConfig
from .modeling_vjepa2_area import (
    AttentiveClassifier,
    AttentivePooler,
    VJEPA2AreaEncoderMixin,
    VJEPA2AreaForVideoClassification,
    VJEPA2AreaModel,
    VJEPA2AreaPreTrainedModel,
)
from .predictor_vjepa2_area import CONTEXT_ENCODER_WEIGHTS_NAME, PREDICTOR_WEIGHTS_NAME, VJEPA2AreaPredictor
from .released import VARIANTS

__all__ = [
    "VARIANTS",
    "VJEPA2AreaConfig",
    "VJEPA2AreaModel",
    "VJEPA2AreaForVideoClassification",
    "VJEPA2AreaPreTrainedModel",
    "VJEPA2AreaEncoderMixin",
    "AttentiveClassifier",
    "AttentivePooler",
    "VJEPA2AreaPredictor",
    "PREDICTOR_WEIGHTS_NAME",
    "CONTEXT_ENCODER_WEIGHTS_NAME",
    "VJEPA2ACPredictor",
    "VJEPA2ACPredictorConfig",
    "AC_PREDICTOR_WEIGHTS_NAME",
]
