"""Encoder behaviour: shapes, inputs, masks, position embeddings, init, outputs, validation."""

import math

import pytest
import torch

from hf_vjepa_area import VARIANTS, VJEPA2AreaConfig, VJEPA2AreaModel
from hf_vjepa_area.modeling.modeling_vjepa2_area import sincos_3d

from tests.numerics import BFLOAT16_RTOL, SAMPLE_STD_RTOL, approx, assert_matches


def tiny(**overrides):
    torch.manual_seed(0)
    fields = dict(img_size=32, num_frames=4, embed_dim=48, depth=2, num_heads=2)
    fields.update(overrides)
    return VJEPA2AreaModel(VJEPA2AreaConfig(**fields)).eval()


@pytest.mark.parametrize(
    "shape,tokens",
    [((2, 3, 4, 32, 32), 8), ((2, 3, 8, 48, 32), 24), ((1, 3, 32, 32), 4), ((1, 3, 2, 64, 96), 24)],
    ids=["video", "longer-non-square", "image", "one-tubelet-wide"],
)
def test_output_shapes(shape, tokens):
    out = tiny().encode(torch.randn(shape)).last_hidden_state
    assert out.shape == (shape[0], tokens, 48)


def test_masked_forward_shapes_and_duplicate_ids():
    model = tiny()
    video = torch.randn(2, 3, 4, 32, 32)
    ids = torch.tensor([[0, 3, 3, 7], [7, 6, 5, 0]])  # repeated and unsorted ids are allowed
    out = model.encode(video, masks=ids).last_hidden_state
    assert out.shape == (2, 4, 48)
    assert_matches(out[0, 1], out[0, 2])  # the same token, attended identically


@pytest.mark.parametrize(
    "masks,message",
    [
        (torch.zeros(2, 3), "integer"),
        (torch.zeros(3, 4, dtype=torch.long), "batch_size=2"),
        (torch.tensor([[0, 99], [1, 2]]), "outside"),
        ([torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)], "same number of tokens"),
        ([], "empty list"),
        (torch.zeros(2, 0, dtype=torch.long), "keeps no token"),
    ],
)
def test_bad_masks_raise_clear_errors(masks, message):
    with pytest.raises(ValueError, match=message):
        tiny().encode(torch.randn(2, 3, 4, 32, 32), masks=masks)


@pytest.mark.parametrize(
    "shape,message",
    [((2, 4, 3, 32, 32), "channels"), ((2, 3, 3, 32, 32), "multiple of tubelet_size"),
     ((2, 3, 4, 30, 32), "multiples of patch_size"), ((3, 32, 32), "expected video")],
)
def test_bad_pixels_raise_clear_errors(shape, message):
    with pytest.raises(ValueError, match=message):
        tiny().encode(torch.randn(shape))


def test_transformers_layout_input():
    model = tiny()
    video = torch.randn(2, 3, 4, 32, 32)
    assert_matches(model(video.transpose(1, 2)).last_hidden_state, model.encode(video).last_hidden_state)
    with pytest.raises(TypeError, match="unexpected arguments"):
        model(video.transpose(1, 2), context_mask=None)
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\] with C = 3, got shape \(2, 3, 4, 32, 32\).*encode"):
        model(video)  # the timm layout given to the transformers entry point: the caller's shape is reported


def test_out_layers_and_hidden_states():
    model = tiny(depth=3)
    video = torch.randn(1, 3, 4, 32, 32)
    out = model(video.transpose(1, 2), out_layers=[0, 2], output_hidden_states=True)
    assert len(out.hidden_states) == 4 and len(out.intermediate_states) == 2
    assert_matches(out.intermediate_states[1], out.last_hidden_state)
    assert_matches(out.intermediate_states[0], model.norm(out.hidden_states[1]))
    with pytest.raises(ValueError, match="out_layers"):
        model.encode(video, out_layers=[5])


def test_sincos_position_embedding_and_interpolation_256_to_384():
    model = tiny(use_rope=False, img_size=256, num_frames=4, patch_size=16)
    table = model.pos_embed[0]
    assert_matches(table, sincos_3d(48, (2, 16, 16)))
    # The released layout: time on half the channels, then height and width on a quarter each (raster t, h, w).
    t, h, w = (g.reshape(-1) for g in torch.meshgrid(torch.arange(2), torch.arange(16), torch.arange(16), indexing="ij"))
    released = torch.cat([released_sincos_1d(24, t), released_sincos_1d(12, h), released_sincos_1d(12, w)], dim=1)
    assert_matches(table, released.float())
    # First 24 channels encode time: frame 0 has sin(0)=0 / cos(0)=1 halves.
    assert_matches(table[0, :12], torch.zeros(12))
    assert_matches(table[0, 12:24], torch.ones(12))
    out = model.encode(torch.randn(1, 3, 4, 384, 384)).last_hidden_state
    assert out.shape == (1, 2 * 24 * 24, 48)
    # Interpolating to the same grid is the identity; to 384 it is trilinear on the 16x16 table.
    from hf_vjepa_area.modeling.modeling_vjepa2_area import interpolate_pos_embed

    resized = interpolate_pos_embed(model.pos_embed, (2, 16, 16), (2, 24, 24))
    expected = torch.nn.functional.interpolate(
        model.pos_embed.reshape(1, 2, 16, 16, 48).permute(0, 4, 1, 2, 3), scale_factor=(1, 1.5, 1.5),
        mode="trilinear",
    ).permute(0, 2, 3, 4, 1).reshape(1, -1, 48)
    assert_matches(resized, expected)


def test_sincos_shorter_clip_at_the_configured_size_uses_the_first_frames():
    """The released rule: at the configured height and width, a clip with fewer frames takes the first
    rows of the table (its integer frame positions), no resampling; so it matches a model configured
    for that many frames. An image in a video model is a one-tubelet clip."""
    long = tiny(use_rope=False, num_frames=8)
    state = {k: v for k, v in long.state_dict().items() if k != "pos_embed"}
    for frames, pixels in ((4, torch.randn(1, 3, 4, 32, 32)), (2, torch.randn(1, 3, 32, 32))):
        short = tiny(use_rope=False, num_frames=frames)
        short.load_state_dict(state, strict=False)
        assert_matches(long.pos_embed[:, : short.pos_embed.shape[1]], short.pos_embed)
        with torch.no_grad():
            assert torch.equal(long.encode(pixels).last_hidden_state, short.encode(pixels).last_hidden_state)


def released_sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = pos.double().reshape(-1, 1) * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def test_image_model_uses_2d_sincos_with_bicubic_resize():
    model = tiny(use_rope=False, num_frames=1, img_size=64)
    assert model.patch_embed.proj.weight.ndim == 4
    # V-JEPA 2's 2D table (unlike MAE's): in raster order, the first half encodes the row (height),
    # the second half the column (width).
    rows = torch.arange(4).repeat_interleave(4)
    cols = torch.arange(4).repeat(4)
    expected = torch.cat([released_sincos_1d(24, rows), released_sincos_1d(24, cols)], dim=1).float()
    assert_matches(model.pos_embed[0], expected)
    assert model.encode(torch.randn(1, 3, 96, 96)).last_hidden_state.shape == (1, 36, 48)


@pytest.mark.parametrize("use_silu", [False, True], ids=["gelu", "swiglu"])
def test_init_statistics_follow_released_recipe(use_silu):
    """The released `_rescale_blocks` divides attn.proj and mlp.fc2 by sqrt(2 * layer_id), for SwiGLU too."""
    model = tiny(embed_dim=192, depth=4, num_heads=3, use_silu=use_silu)
    qkv = model.blocks[0].attn.qkv
    assert qkv.weight.std().item() / 0.02 == approx(1.0, rtol=SAMPLE_STD_RTOL) and torch.count_nonzero(qkv.bias) == 0
    for layer_id, block in enumerate(model.blocks, start=1):
        expected = 0.02 / math.sqrt(2 * layer_id)
        assert block.attn.proj.weight.std().item() / expected == approx(1.0, rtol=SAMPLE_STD_RTOL)
        assert block.mlp.fc2.weight.std().item() / expected == approx(1.0, rtol=SAMPLE_STD_RTOL)
        unscaled = block.mlp.fc3 if use_silu else block.mlp.fc1
        assert unscaled.weight.std().item() / 0.02 == approx(1.0, rtol=SAMPLE_STD_RTOL)
    assert torch.equal(model.norm.weight, torch.ones(192))


def test_swiglu_option_hidden_width():
    model = tiny(use_silu=True, wide_silu=True)
    assert model.blocks[0].mlp.fc1.out_features == (int(2 * 192 / 3) + 7) // 8 * 8
    assert model.encode(torch.randn(1, 3, 4, 32, 32)).last_hidden_state.shape == (1, 8, 48)


@pytest.mark.parametrize("masked", [False, True], ids=["all-tokens", "masked-area"])
def test_gradient_checkpointing_gives_same_gradients(masked):
    # masked: uneven areas, so the checkpointed blocks recompute through the plan's shared mask kernel
    model = tiny(drop_path_rate=0.0, area_splits=(2, 2, 1) if masked else None).train()
    video = torch.randn(2, 3, 4, 32, 32)
    ids = torch.tensor([[0, 1, 2, 5, 7], [1, 3, 4, 6, 7]]) if masked else None

    def grads():
        model.zero_grad()
        model.encode(video, masks=ids).last_hidden_state.pow(2).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    # transformers >= 5.23 calls it activation checkpointing; older 5.x (e.g. 5.17 on the GPU image) gradient
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert all(block.gradient_checkpointing for block in model.blocks)
    for a, b in zip(plain, grads()):
        assert_matches(a, b)


def test_bf16_autocast_runs_and_stays_close():
    model = tiny()
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.encode(video).last_hidden_state
    assert low.dtype == torch.bfloat16
    ref = model.encode(video).last_hidden_state
    assert_matches(low.float(), ref, rtol=BFLOAT16_RTOL)


def test_variant_table_and_config_errors():
    assert {k: (v["embed_dim"], v["depth"], v["num_heads"]) for k, v in VARIANTS.items()} == {
        "tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16),
        "huge": (1280, 32, 16), "giant": (1408, 40, 22), "gigantic": (1664, 48, 26),
    }
    assert VJEPA2AreaConfig.from_variant("giant").mlp_ratio == 48 / 11
    assert VJEPA2AreaConfig.from_variant("tiny", depth=2).depth == 2  # overrides win
    with pytest.raises(ValueError, match="variant must be one of"):
        VJEPA2AreaConfig.from_variant("colossal")
    cases = [
        (dict(variant="large"), "use VJEPA2AreaConfig.from_variant"),
        (dict(area_split=(2, 2, 1)), "did you mean 'area_splits'"),  # a misspelled field is not ignored
        (dict(num_frame=8), "did you mean 'num_frames'"),
        (dict(embed_dim=48, num_heads=16), "even head_dim of at least 6"),
        (dict(embed_dim=50, num_heads=4), "divisible by num_heads"),
        (dict(img_size=250), "divisible by patch_size"),
        (dict(num_frames=5), "divisible by tubelet_size"),
        (dict(area_splits=(2, 2)), "three positive ints"),
        (dict(area_splits=(0, 2, 1)), "three positive ints"),
        (dict(area_splits=(9, 1, 1)), "exceeds the token grid"),
        (dict(area_splits=(2, 2, 1), area_layers="a:b"), "start:end"),
        (dict(area_splits=(2, 2, 1), area_layers=[0, 40]), "out of range"),
        (dict(area_layers=[0]), "area_splits is None"),
        (dict(area_kernel="flash"), "area_kernel must be one of"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
        (dict(mlp_ratio=-1), "mlp_ratio"),
        (dict(probe_num_heads=0), "probe_num_heads"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            VJEPA2AreaConfig(**kwargs)


def test_probe_heads_are_checked_only_where_a_probe_is_built():
    import timm

    from hf_vjepa_area import VJEPA2AreaForVideoClassification

    config = VJEPA2AreaConfig(img_size=32, num_frames=4, embed_dim=72, depth=1, num_heads=6)  # 72 % 16 != 0
    assert VJEPA2AreaModel(config).encode(torch.randn(1, 3, 4, 32, 32)).last_hidden_state.shape == (1, 8, 72)
    assert timm.create_model("vjepa2_vitt", img_size=32, num_frames=4, embed_dim=72, depth=1, num_heads=6,
                             num_classes=2, global_pool="avg")(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2)
    with pytest.raises(ValueError, match="set probe_num_heads to a divisor of embed_dim"):
        VJEPA2AreaForVideoClassification(config)


def test_area_layers_forms():
    make = lambda layers: VJEPA2AreaConfig(depth=8, area_splits=(2, 2, 1), area_layers=layers).area_layers  # noqa
    assert make(None) == list(range(6))
    assert make("2:5") == [2, 3, 4] == make(range(2, 5))
    assert make([7, 1]) == [1, 7]
