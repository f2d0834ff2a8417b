"""Numerical verification: run two models on the same fixed input and compare their outputs."""

from __future__ import annotations

import copy

import torch
from accelerate import init_empty_weights

DEFAULT_TOLERANCE = 1e-4
CRITERION = "max abs diff <= tolerance * max(1, max abs of the reference output)"


def fixed_input(config, frames: int | None = None, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Seeded normal pixels at the configured resolution: [B, T, C, H, W] (or [B, C, H, W] for image models).

    transformers' V-JEPA 2 derives RoPE positions from `crop_size`, so the input stays at `img_size`.
    The default of two tubelets exercises the temporal RoPE axis at the smallest cost.
    """
    generator = torch.Generator().manual_seed(seed)
    height, width = config.img_size
    if config.num_frames == 1:
        shape = (batch, config.in_chans, height, width)
    else:
        shape = (batch, frames or 2 * config.tubelet_size, config.in_chans, height, width)
    return torch.randn(shape, generator=generator)


@torch.no_grad()
def ours_outputs(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of one of our models: encoder tokens, plus logits for a classifier."""
    model = model.float().eval()
    if hasattr(model, "head"):
        return {
            "last_hidden_state": model.encoder(pixels).last_hidden_state,
            "logits": model(pixels).logits,
        }
    return {"last_hidden_state": model(pixels).last_hidden_state}


@torch.no_grad()
def transformers_outputs(model, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of transformers' VJEPA2Model / VJEPA2ForVideoClassification (their own forward)."""
    model = model.float().eval()
    if hasattr(model, "classifier"):
        return {
            "last_hidden_state": model.vjepa2(pixels, skip_predictor=True).last_hidden_state,
            "logits": model(pixels).logits,
        }
    return {"last_hidden_state": model(pixels, skip_predictor=True).last_hidden_state}


def compare(reference: dict, candidate: dict, tolerance: float | None) -> dict:
    """Per-output max / mean abs difference; `passed` when every max is within the allowance (None: info only).

    The allowance scales with the output (`CRITERION`): absolute for features within +-1, relative for
    larger ones such as logits, whose float32 rounding grows with their size. A conversion error
    (a swapped or misplaced tensor) moves outputs by a sizeable fraction of their scale, far above it.
    """
    outputs = {}
    for name, ref in reference.items():
        out = candidate[name]
        if ref.shape != out.shape:
            outputs[name] = {"shape": list(ref.shape), "candidate_shape": list(out.shape), "passed": False}
            continue
        diff = (ref.double() - out.double()).abs()
        entry = {
            "shape": list(ref.shape),
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "reference_max_abs": float(ref.abs().max()),
        }
        if tolerance is not None:
            entry["allowed"] = tolerance * max(1.0, entry["reference_max_abs"])
            entry["passed"] = bool(entry["max_abs_diff"] <= entry["allowed"])
        outputs[name] = entry
    result = {"outputs": outputs}
    if tolerance is not None:
        result["passed"] = all(e.get("passed", False) for e in outputs.values())
    return result


def full_attention_twin(model):
    """The same weights (shared, no copy) in a model whose every block attends globally."""
    config = copy.deepcopy(model.config)
    config.area_splits = None
    config.area_layers = []
    with init_empty_weights():
        twin = type(model)(config)
    twin.load_state_dict(model.state_dict(), strict=True, assign=True)
    return twin.eval()


__all__ = ["DEFAULT_TOLERANCE", "CRITERION", "fixed_input", "ours_outputs", "transformers_outputs", "compare", "full_attention_twin"]
