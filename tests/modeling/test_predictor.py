"""V-JEPA 2 predictor: equal to transformers' `VJEPA2Predictor`, and to a dense per-area reference on
non-square grids and with area attention; Meta <-> transformers key mapping."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import VJEPA2Config
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2Model

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaPredictor
from tests.modeling.predictor_keys import (
    original_predictor_to_transformers,
    transformers_predictor_to_original,
)
from tests.modeling.reference import randomize, reference_predictor
from tests.numerics import SAMPLE_STD_RTOL, approx, assert_differs, assert_matches

ENCODER_DIM, WIDTH, HEADS, DEPTH = 48, 64, 2, 3  # head_dim 32 as released: 10 channels per axis, 2 unrotated


def our_config(**kwargs) -> VJEPA2AreaConfig:
    fields = dict(embed_dim=ENCODER_DIM, depth=1, num_heads=3, img_size=64, num_frames=8,
                  predictor_embed_dim=WIDTH, predictor_depth=DEPTH, predictor_num_heads=HEADS)
    return VJEPA2AreaConfig(**{**fields, **kwargs})


def disjoint_masks(batch: int, num_tokens: int, num_context: int, num_target: int, seed: int, sort_targets=True):
    """Random disjoint context / target ids. The first sample's targets hold the last token id, since
    transformers sizes its mask-token table by the first sample's largest target id."""
    generator = torch.Generator().manual_seed(seed)
    context, target = [], []
    for b in range(batch):
        perm = torch.randperm(num_tokens, generator=generator)
        if b == 0:
            perm = torch.cat([perm[perm != num_tokens - 1], perm.new_tensor([num_tokens - 1])])
            perm[num_context + num_target - 1], perm[-1] = perm[-1].clone(), perm[num_context + num_target - 1].clone()
        context.append(perm[:num_context].sort().values)
        t = perm[num_context : num_context + num_target]
        target.append(t.sort().values if sort_targets else t)
    return torch.stack(context), torch.stack(target)


@pytest.fixture(scope="module")
def transformers_pair():
    """transformers' VJEPA2Model (square 4x4 grid, 4 tubelets) and our predictor with its weights."""
    hf_config = VJEPA2Config(
        hidden_size=ENCODER_DIM, num_hidden_layers=1, num_attention_heads=3, crop_size=64, frames_per_clip=8,
        pred_hidden_size=WIDTH, pred_num_hidden_layers=DEPTH, pred_num_attention_heads=HEADS,
    )
    hf_model = VJEPA2Model(hf_config).eval()
    randomize(hf_model.predictor, seed=0)
    ours = VJEPA2AreaPredictor(our_config()).eval()
    ours.load_state_dict(transformers_predictor_to_original(hf_model.state_dict()), strict=True)
    return hf_model.predictor.double(), ours.double()  # exactness in float64: tests/numerics.py


@pytest.mark.parametrize(
    "batch, num_context, num_target, sort_targets",
    [(1, 20, 30, True), (3, 10, 40, True), (2, 40, 24, False), (4, 1, 63, True)],
)
def test_matches_transformers_predictor(transformers_pair, batch, num_context, num_target, sort_targets):
    theirs, ours = transformers_pair
    grid = (4, 4, 4)
    num_tokens = math.prod(grid)
    context_ids, target_ids = disjoint_masks(batch, num_tokens, num_context, num_target, seed=batch, sort_targets=sort_targets)
    encoder_out = torch.randn(batch, num_tokens, ENCODER_DIM, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        ref = theirs(encoder_out, [context_ids], [target_ids]).last_hidden_state
        context = encoder_out.gather(1, context_ids.unsqueeze(-1).expand(-1, -1, ENCODER_DIM))
        got = ours(context, context_ids, target_ids, grid, mask_index=1)
    assert got.shape == (batch, num_target, ENCODER_DIM)
    assert_matches(got, ref)
    # The mask token matters: with another index the prediction changes.
    with torch.no_grad():
        other = ours(context, context_ids, target_ids, grid, mask_index=0)
    assert_differs(other, ref)


@pytest.mark.parametrize(
    "img_size, num_frames, area",
    [
        ((64, 96), 8, None),  # 4 x 4 x 6: non-square, full attention
        ((96, 48), 4, None),  # 2 x 6 x 3
        ((64, 96), 8, dict(predictor_area_splits=(2, 2, 1), predictor_area_layers=[0, 2])),
        ((80, 48), 6, dict(predictor_area_splits=(2, 2, 3), predictor_area_layers="0:3")),  # 3 x 5 x 3: uneven areas
    ],
)
def test_matches_dense_reference(img_size, num_frames, area):
    config = our_config(img_size=img_size, num_frames=num_frames, **(area or {}))
    predictor = VJEPA2AreaPredictor(config).eval()
    randomize(predictor, seed=1)
    predictor.double()
    grid = config.grid_size
    num_tokens = math.prod(grid)
    batch = 3
    context_ids, target_ids = disjoint_masks(batch, num_tokens, num_tokens // 4, num_tokens // 2, seed=2, sort_targets=False)
    context = torch.randn(batch, context_ids.shape[1], ENCODER_DIM, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        got = predictor(context, context_ids, target_ids, grid, mask_index=2)
        ref = reference_predictor(predictor, config, context, context_ids, target_ids, grid, mask_index=2)
    assert_matches(got, ref)


def test_area_attention_changes_the_prediction():
    """Guards the area test above against a predictor that ignores its area fields."""
    full = VJEPA2AreaPredictor(our_config(img_size=(64, 96)))
    area = VJEPA2AreaPredictor(our_config(img_size=(64, 96), predictor_area_splits=(2, 2, 1), predictor_area_layers=[0]))
    randomize(full, seed=4)
    area.load_state_dict(full.state_dict())
    grid = full.config.grid_size
    context_ids, target_ids = disjoint_masks(2, math.prod(grid), 30, 30, seed=5)
    context = torch.randn(2, 30, ENCODER_DIM, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():  # ~1e-2 of the outputs' scale over random contexts: 10x the float32 rule is far below
        assert_differs(full(context, context_ids, target_ids, grid), area(context, context_ids, target_ids, grid), factor=10)


def test_gradients_with_checkpointing_match():
    config = our_config(predictor_area_splits=(2, 2, 1), predictor_area_layers=[1])
    predictor = VJEPA2AreaPredictor(config)
    randomize(predictor, seed=6)
    context_ids, target_ids = disjoint_masks(2, 64, 16, 24, seed=7)
    context = torch.randn(2, 16, ENCODER_DIM)

    def grads():
        predictor.zero_grad()
        predictor(context, context_ids, target_ids, (4, 4, 4)).square().mean().backward()
        return {name: p.grad.clone() for name, p in predictor.named_parameters() if p.grad is not None}

    plain = grads()
    predictor.set_grad_checkpointing(True)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert_matches(checkpointed[name], plain[name], msg=name)
    assert plain["mask_tokens.0"].abs().max() > 0 and "mask_tokens.1" not in plain  # only the chosen token learns
    assert len(plain) == len(list(predictor.parameters())) - 9


def test_released_init_and_keys():
    config = our_config(predictor_depth=4)
    predictor = VJEPA2AreaPredictor(config)
    state = predictor.state_dict()
    expected = {"predictor_embed.weight", "predictor_embed.bias", "predictor_norm.weight", "predictor_norm.bias",
                "predictor_proj.weight", "predictor_proj.bias"}
    expected |= {f"mask_tokens.{i}" for i in range(10)}
    expected |= {f"predictor_blocks.{i}.{name}.{p}" for i in range(4) for p in ("weight", "bias")
                 for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")}
    assert set(state) == expected
    assert all(state[f"mask_tokens.{i}"].shape == (1, 1, WIDTH) and not state[f"mask_tokens.{i}"].any() for i in range(10))
    assert not predictor.predictor_embed.bias.any()
    assert predictor.predictor_proj.weight.std().item() / 0.02 == approx(1.0, rtol=SAMPLE_STD_RTOL)
    for i, block in enumerate(predictor.predictor_blocks):  # residual outputs rescaled by 1/sqrt(2 * (i + 1))
        for linear in (block.attn.proj, block.mlp.fc2):
            expected_std = 0.02 / math.sqrt(2 * (i + 1))
            assert abs(linear.weight.std().item() / expected_std - 1) < 0.15


def test_bad_inputs_are_refused():
    predictor = VJEPA2AreaPredictor(our_config())
    context_ids, target_ids = disjoint_masks(2, 64, 8, 8, seed=0)
    context = torch.randn(2, 8, ENCODER_DIM)
    with pytest.raises(ValueError, match="mask_index 10 out of range"):
        predictor(context, context_ids, target_ids, (4, 4, 4), mask_index=10)
    with pytest.raises(ValueError, match="context_ids must be"):
        predictor(context, context_ids[:, :4], target_ids, (4, 4, 4))
    with pytest.raises(ValueError, match="target_ids: .* outside"):
        predictor(context, context_ids, target_ids + 64, (4, 4, 4))


def test_key_mapping_round_trip(transformers_pair):
    theirs, ours = transformers_pair
    their_state = {"predictor." + k: v for k, v in theirs.state_dict().items()}
    original = transformers_predictor_to_original({**their_state, "encoder.layernorm.weight": torch.ones(1)})
    assert original.keys() == ours.state_dict().keys()
    back = original_predictor_to_transformers(original)
    assert back.keys() == their_state.keys()
    for key, tensor in their_state.items():
        assert torch.equal(back[key], tensor), key
    # A released `.pt` entry carries `module.backbone.`: stripped.
    prefixed = original_predictor_to_transformers({"module.backbone." + k: v for k, v in original.items()})
    assert prefixed.keys() == their_state.keys()


def test_key_mapping_refuses_foreign_keys():
    ours = VJEPA2AreaPredictor(our_config()).state_dict()
    with pytest.raises(ValueError, match="unexpected"):
        original_predictor_to_transformers({**ours, "predictor_extra.weight": torch.zeros(1)})
    del ours["mask_tokens.3"]
    with pytest.raises(ValueError, match="mask_tokens.0 .. mask_tokens.N-1"):
        original_predictor_to_transformers(ours)
    with pytest.raises(ValueError, match="no predictor.embeddings.mask_tokens"):
        transformers_predictor_to_original({"encoder.layernorm.weight": torch.ones(1)})


def test_residual_stream_stays_float32_under_bf16_autocast():
    """Meta's predictor concatenates the bf16 embedded context with fp32 mask tokens, so the blocks carry
    an fp32 residual stream under autocast; a cast of the mask tokens to bf16 would change that."""
    predictor = VJEPA2AreaPredictor(our_config()).train()
    seen = []
    predictor.predictor_blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    context_ids, target_ids = disjoint_masks(2, 64, 16, 24, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = predictor(torch.randn(2, 16, ENCODER_DIM), context_ids, target_ids, (4, 4, 4))
    assert seen == [torch.float32] and out.shape == (2, 24, ENCODER_DIM)
