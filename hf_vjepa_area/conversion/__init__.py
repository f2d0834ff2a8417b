"""Released V-JEPA 2 checkpoints (Meta's `.pt`, transformers' `facebook/vjepa2-*`): loading them as our models
(`load_released`, no conversion step), and `vjepa2-area-convert`, which writes, verifies and publishes a repo
folder (`python -m hf_vjepa_area.conversion --help`).
"""

from ..checkpoint_keys import ConversionError, UnsafeCheckpointError, safe_torch_load
from .load import load_released

__all__ = ["ConversionError", "UnsafeCheckpointError", "load_released", "safe_torch_load"]
