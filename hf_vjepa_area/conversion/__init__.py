"""Conversion of V-JEPA 2 checkpoints (Meta's `.pt`, transformers' `facebook/vjepa2-*`) to our repo folders,
verification against the source model, publishing, and the export back to transformers.

Command line: `vjepa2-area-convert --help` (or `python -m hf_vjepa_area.conversion --help`).
"""

from .convert import ConversionResult, ConvertOptions, VerificationError, convert
from .export import ExportOptions, export_to_transformers
from .push import push_folder
from .sources import ConversionError, UnsafeCheckpointError, safe_torch_load

__all__ = [
    "ConvertOptions",
    "ConversionResult",
    "ConversionError",
    "UnsafeCheckpointError",
    "VerificationError",
    "ExportOptions",
    "convert",
    "export_to_transformers",
    "push_folder",
    "safe_torch_load",
]
