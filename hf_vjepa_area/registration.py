"""Registration with transformers' auto classes (timm entry points register on import of `timm_models`).

Idempotent: importing or reloading `hf_vjepa_area` again re-registers the same names without error.
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
)

from .modeling import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel
from .modeling.video_processing_vjepa2_area import VJEPA2AreaVideoProcessor


def register_transformers() -> None:
    """`AutoConfig` / `AutoModel` / `AutoModelForVideoClassification` / `AutoVideoProcessor` for "vjepa2_area".

    The video processor is transformers' `VJEPA2VideoProcessor` (V-JEPA 2's eval preprocessing) decoding
    files with PyAV (`VJEPA2AreaVideoProcessor`).
    """
    AutoConfig.register(VJEPA2AreaConfig.model_type, VJEPA2AreaConfig, exist_ok=True)
    AutoModel.register(VJEPA2AreaConfig, VJEPA2AreaModel, exist_ok=True)
    AutoModelForVideoClassification.register(VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, exist_ok=True)
    AutoVideoProcessor.register(VJEPA2AreaConfig, VJEPA2AreaVideoProcessor, exist_ok=True)


__all__ = ["register_transformers"]
