"""V-JEPA 2 predictor keys, for the tests: Meta's (`VJEPA2AreaPredictor`) <-> transformers' `VJEPA2Model.predictor.*`,
through the one key table (`checkpoint_keys.PREDICTOR_KEYS`): blocks as the encoder's, mask tokens one
`[N, 1, 1, width]` parameter in transformers and N `mask_tokens.{i}` of `[1, 1, width]` in Meta's.
"""

from __future__ import annotations

import torch

from hf_vjepa_area.checkpoint_keys import MASK_TOKENS, PREDICTOR_KEYS, from_transformers, strip_original_prefixes, to_transformers


def transformers_predictor_to_original(state_dict: dict, prefix: str = "predictor.") -> dict[str, torch.Tensor]:
    """transformers' keys under `prefix` (query/key/value fused into qkv) -> Meta's; other keys are left out."""
    if prefix + MASK_TOKENS not in state_dict:
        raise ValueError(f"no {prefix}{MASK_TOKENS} in the state dict: not a transformers V-JEPA 2 predictor")
    original, unexpected = from_transformers(state_dict, PREDICTOR_KEYS, prefix)
    if unexpected:
        raise ValueError(f"not a V-JEPA 2 predictor state dict: unexpected {unexpected[:5]}")
    return original


def original_predictor_to_transformers(state_dict: dict, prefix: str = "predictor.") -> dict[str, torch.Tensor]:
    """Meta's predictor keys (a `module.backbone.` prefix is stripped) -> transformers' under `prefix`."""
    return to_transformers(strip_original_prefixes(state_dict), PREDICTOR_KEYS, prefix)


__all__ = ["transformers_predictor_to_original", "original_predictor_to_transformers"]
