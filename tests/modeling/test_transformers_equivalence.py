"""Our encoder against transformers' own VJEPA2Model (an independent implementation of V-JEPA 2)."""

import pytest
import torch
from transformers import VJEPA2Config, VJEPA2Model

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaModel

from ..conftest import assert_close_scaled

DEPTH = 3


def hf_encoder_to_ours(state_dict: dict) -> dict:
    """Map transformers' VJEPA2Model encoder keys onto the original key names, fusing q/k/v rows."""
    renames = [
        ("embeddings.patch_embeddings.proj.", "patch_embed.proj."),
        ("layernorm.", "norm."),
        ("layer.", "blocks."),
        ("attention.proj.", "attn.proj."),
    ]
    ours = {}
    for key, value in state_dict.items():
        if not key.startswith("encoder."):
            continue
        key = key[len("encoder.") :]
        for old, new in renames:
            key = key.replace(old, new)
        ours[key] = value
    for i in range(DEPTH):
        prefix = f"blocks.{i}.attention."
        for kind in ("weight", "bias"):
            ours[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [ours.pop(f"{prefix}{name}.{kind}") for name in ("query", "key", "value")]
            )
    return ours


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    # head_dim 64 leaves 4 unrotated channels (3 x 20 rotated), the case of the released models.
    hf_config = VJEPA2Config(
        crop_size=32, frames_per_clip=4, tubelet_size=2, hidden_size=128, num_attention_heads=2,
        num_hidden_layers=DEPTH, pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=1,
        attn_implementation="sdpa",
    )
    theirs = VJEPA2Model(hf_config).eval()
    ours = VJEPA2AreaModel(VJEPA2AreaConfig(img_size=32, num_frames=4, embed_dim=128, depth=DEPTH, num_heads=2)).eval()
    missing, unexpected = ours.load_state_dict(hf_encoder_to_ours(theirs.state_dict()), strict=True)
    assert not missing and not unexpected
    return theirs, ours


@pytest.mark.parametrize(
    "shape",
    [(2, 4, 3, 32, 32), (2, 8, 3, 32, 32), (1, 1, 3, 32, 32)],
    ids=["video-config-size", "video-8-frames", "image"],
)
def test_matches_transformers_vjepa2(models, shape):
    theirs, ours = models
    video = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(video, skip_predictor=True).last_hidden_state
        got = ours(video).last_hidden_state
    assert got.shape == expected.shape
    assert_close_scaled(got, expected)  # two implementations: the bound scales with the outputs


def test_image_as_4d_pixels_matches_transformers_single_frame(models):
    """timm-style [B, C, H, W] images (our own path to one tubelet) vs transformers given a 1-frame video."""
    theirs, ours = models
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = ours.encode(image).last_hidden_state
        expected = theirs(image.unsqueeze(1), skip_predictor=True).last_hidden_state
    assert got.shape == expected.shape
    assert_close_scaled(got, expected)  # two implementations: the bound scales with the outputs
