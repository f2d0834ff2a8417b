"""V-JEPA 2 predictor keys: Meta's (ours, `VJEPA2AreaPredictor`) <-> transformers' `VJEPA2Model.predictor.*`.

The blocks follow the encoder's block rules under `predictor_blocks.` / `layer.`; the mask tokens are one
`[N, 1, 1, width]` parameter in transformers and N `mask_tokens.{i}` tensors of `[1, 1, width]` in Meta's.
"""

from __future__ import annotations

import re

import torch

from .keys import ENCODER_RULES, Rule, Section, ours_to_theirs, strip_original_prefixes, theirs_to_ours

PREDICTOR_RULES = (
    Rule("predictor_embed.{p}", ("embeddings.predictor_embeddings.{p}",)),
    *(Rule("predictor_" + rule.ours, rule.theirs) for rule in ENCODER_RULES if rule.ours.startswith("blocks.")),
    Rule("predictor_norm.{p}", ("layernorm.{p}",)),
    Rule("predictor_proj.{p}", ("proj.{p}",)),
)
THEIR_MASK_TOKENS = "embeddings.mask_tokens"
_OUR_MASK_TOKEN = re.compile(r"mask_tokens\.(\d+)")


def _fail_on_leftovers(remapped, direction: str) -> None:
    problems = [f"{name}: {keys[:5]}" for name, keys in (("unexpected", remapped.unexpected), ("missing", remapped.missing)) if keys]
    if problems:
        raise ValueError(f"not a V-JEPA 2 predictor state dict ({direction}); " + "; ".join(problems))


def transformers_predictor_to_original(state_dict: dict, prefix: str = "predictor.") -> dict[str, torch.Tensor]:
    """transformers' `VJEPA2Model` keys under `prefix` (query/key/value fused into qkv) -> Meta's predictor
    keys. Keys outside `prefix` (the encoder) are left out."""
    predictor = {key[len(prefix):]: tensor for key, tensor in state_dict.items() if key.startswith(prefix)}
    if THEIR_MASK_TOKENS not in predictor:
        raise ValueError(f"no {prefix}{THEIR_MASK_TOKENS} in the state dict: not a transformers V-JEPA 2 predictor")
    tokens = predictor.pop(THEIR_MASK_TOKENS)
    remapped = theirs_to_ours(predictor, (Section(PREDICTOR_RULES),))
    _fail_on_leftovers(remapped, f"transformers keys under {prefix!r}")
    out = remapped.state_dict
    for i, token in enumerate(tokens):
        out[f"mask_tokens.{i}"] = token.clone()
    return out


def original_predictor_to_transformers(state_dict: dict, prefix: str = "predictor.") -> dict[str, torch.Tensor]:
    """Meta's predictor keys (a `module.backbone.` prefix is stripped) -> transformers' under `prefix`."""
    ours = strip_original_prefixes(state_dict)
    found = {int(m.group(1)): key for key in ours if (m := _OUR_MASK_TOKEN.fullmatch(key))}
    if sorted(found) != list(range(len(found))) or not found:
        raise ValueError(f"mask tokens must be mask_tokens.0 .. mask_tokens.N-1, got indices {sorted(found)}")
    tokens = torch.stack([ours.pop(found[i]) for i in range(len(found))])
    remapped = ours_to_theirs(ours, (Section(PREDICTOR_RULES),))
    _fail_on_leftovers(remapped, "Meta's keys")
    out = {prefix + key: tensor for key, tensor in remapped.state_dict.items()}
    out[prefix + THEIR_MASK_TOKENS] = tokens
    return out


__all__ = ["PREDICTOR_RULES", "transformers_predictor_to_original", "original_predictor_to_transformers"]
