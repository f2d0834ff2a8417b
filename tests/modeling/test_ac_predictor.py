"""The action-conditioned predictor against a reference written from Meta's code, and its causality."""

from __future__ import annotations

import pytest
import torch

from hf_vjepa_area.modeling.ac_predictor_vjepa2_area import VJEPA2ACPredictor, VJEPA2ACPredictorConfig
from tests.modeling.ac_reference import reference_ac_predictor
from tests.modeling.reference import randomize
from tests.numerics import FLOAT64_RTOL, assert_matches, scaled_max_diff

# head_dim 16: three 4-channel RoPE slices and 4 unrotated channels.
TINY_AC = dict(embed_dim=24, predictor_embed_dim=32, depth=2, num_heads=2, action_embed_dim=7)


def _inputs(config, frames, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    height, width = config.grid_size
    tokens = torch.randn(batch, frames * height * width, config.embed_dim, generator=g, dtype=torch.float64)
    actions = torch.randn(batch, frames, config.action_embed_dim, generator=g, dtype=torch.float64)
    states = torch.randn(batch, frames, config.action_embed_dim, generator=g, dtype=torch.float64)
    extrinsics = torch.randn(batch, frames, config.action_embed_dim - 1, generator=g, dtype=torch.float64)
    return tokens, actions, states, (extrinsics if config.use_extrinsics else None)


def _model(config, seed=0):
    model = VJEPA2ACPredictor(config).double().eval()
    randomize(model, seed)
    return model


@pytest.mark.parametrize("use_extrinsics", [False, True])
@pytest.mark.parametrize("img_size,frames", [(32, 1), (32, 3), ((24, 40), 2), ((40, 16), 2)])
def test_matches_meta_reference_float64(img_size, frames, use_extrinsics):
    config = VJEPA2ACPredictorConfig(**TINY_AC, img_size=img_size, patch_size=8, use_extrinsics=use_extrinsics)
    model = _model(config)
    inputs = _inputs(config, frames)
    with torch.no_grad():
        got = model(*inputs)
        expected = reference_ac_predictor(model.state_dict(), config, *inputs)
    assert_matches(got, expected)


def test_another_grid_snaps_onto_the_configured_one():
    """Frames of another size: rows and columns rescaled by configured grid height / H and / W, as Meta's blocks."""
    config = VJEPA2ACPredictorConfig(**TINY_AC, img_size=32, patch_size=8)
    model = _model(config, seed=3)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randn(1, 2 * 3 * 5, 24, generator=g, dtype=torch.float64)
    actions, states = (torch.randn(1, 2, 7, generator=g, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        got = model(tokens, actions, states, grid=(3, 5))
        assert_matches(got, reference_ac_predictor(model.state_dict(), config, tokens, actions, states, grid=(3, 5)))


def test_full_attention_matches_reference():
    config = VJEPA2ACPredictorConfig(**TINY_AC, img_size=32, patch_size=8, is_frame_causal=False)
    model = _model(config, seed=1)
    inputs = _inputs(config, 2)
    with torch.no_grad():
        assert_matches(model(*inputs), reference_ac_predictor(model.state_dict(), config, *inputs))


@pytest.mark.parametrize("use_extrinsics", [False, True])
def test_a_later_action_cannot_change_an_earlier_prediction(use_extrinsics):
    config = VJEPA2ACPredictorConfig(**TINY_AC, img_size=32, patch_size=8, use_extrinsics=use_extrinsics)
    model = _model(config, seed=2)
    tokens, actions, states, extrinsics = _inputs(config, 3)
    per_frame = 16
    changed = actions.clone()
    changed[:, 2] += 1.0
    later_tokens = tokens.clone()
    later_tokens[:, 2 * per_frame :] += 1.0
    with torch.no_grad():
        base = model(tokens, actions, states, extrinsics)
        for out in (model(tokens, changed, states, extrinsics), model(later_tokens, actions, states, extrinsics)):
            assert_matches(out[:, : 2 * per_frame], base[:, : 2 * per_frame])
            # the last frame does move, by far more than rounding
            assert scaled_max_diff(out[:, 2 * per_frame :], base[:, 2 * per_frame :]) > 1e6 * FLOAT64_RTOL


def test_released_layout_keys():
    config = VJEPA2ACPredictorConfig(**TINY_AC, img_size=32, patch_size=8)
    keys = set(VJEPA2ACPredictor(config).state_dict())
    assert {"predictor_embed.weight", "action_encoder.weight", "state_encoder.weight", "extrinsics_encoder.weight",
            "predictor_blocks.1.attn.qkv.bias", "predictor_blocks.0.mlp.fc2.weight", "predictor_norm.weight",
            "predictor_proj.bias"} <= keys  # fmt: skip


def test_bad_inputs_say_what_to_pass():
    config = VJEPA2ACPredictorConfig(**TINY_AC, img_size=32, patch_size=8)
    model = VJEPA2ACPredictor(config)
    tokens, actions, states, _ = (t.float() if t is not None else None for t in _inputs(config, 2))
    with pytest.raises(ValueError, match="actions must be"):
        model(tokens, actions[:, :1], states)
    with pytest.raises(ValueError, match="not whole frames"):
        model(tokens[:, :-1], actions, states)
    with pytest.raises(ValueError, match="use_extrinsics=False"):
        model(tokens, actions, states, torch.zeros(2, 2, 6))
    with pytest.raises(ValueError, match="divisible"):
        VJEPA2ACPredictorConfig(predictor_embed_dim=30, num_heads=4)
