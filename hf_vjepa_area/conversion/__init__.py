"""Released V-JEPA 2 checkpoints (Meta's `.pt`, transformers' `facebook/vjepa2-*`): loading them as our models
(read by `conversion.load`, which `hf_vjepa_area.load_model` uses: no conversion step), and `vjepa2-area-convert`, which writes, verifies and publishes a repo
folder (`python -m hf_vjepa_area.conversion --help`).
"""

from ..checkpoint_keys import ConversionError, UnsafeCheckpointError, safe_torch_load

__all__ = ["ConversionError", "UnsafeCheckpointError", "safe_torch_load"]
