"""The built-in demo world model of the V-JEPA 2-AC examples: small, random-init, fast on a CPU."""

from __future__ import annotations

import torch

from ..modeling import VJEPA2AreaConfig, VJEPA2AreaModel
from ..modeling.ac_predictor_vjepa2_area import VJEPA2ACPredictor, VJEPA2ACPredictorConfig
from .world_model import WorldModel

DEMO_SIZE = 64  # px: a 4 x 4 token grid at patch 16


def demo_world_model(seed: int = 0) -> WorldModel:
    """A random-init encoder (width 192, 4 blocks, 3 heads) and AC predictor (width 128, 4 blocks, 4 heads), 64 px."""
    torch.manual_seed(seed)
    encoder = VJEPA2AreaModel(VJEPA2AreaConfig(embed_dim=192, depth=4, num_heads=3, img_size=DEMO_SIZE, num_frames=2))
    predictor = VJEPA2ACPredictor(VJEPA2ACPredictorConfig(embed_dim=192, predictor_embed_dim=128, depth=4, num_heads=4,
                                                          img_size=DEMO_SIZE))  # fmt: skip
    return WorldModel(encoder, predictor).eval()


__all__ = ["demo_world_model", "DEMO_SIZE"]
