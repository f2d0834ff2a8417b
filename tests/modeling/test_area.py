"""ST-A² area attention: exact against a dense per-area reference on every mask and partition.

The tests that compare with the reference run on each CPU kernel: `auto` (dense for full divisible
grids, segment otherwise), `segment` forced everywhere (also over equal areas) and `mask`.
"""

import pytest
import torch

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaModel
from hf_vjepa_area.modeling.area import AreaPlan, area_attention, area_ids_from_positions
from hf_vjepa_area.modeling.rope import token_positions
from tests.modeling.reference import random_masks, reference_encoder
from tests.numerics import assert_matches


@pytest.fixture(autouse=True)
def float64():
    """Exactness against the reference in float64, machine-independent (tests/numerics.py)."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


def tiny_model(splits=(2, 2, 1), layers=None, img=(64, 64), frames=8, depth=3, **overrides):
    torch.manual_seed(0)
    config = VJEPA2AreaConfig(
        img_size=list(img), num_frames=frames, embed_dim=48, depth=depth, num_heads=2,
        area_splits=splits, area_layers=layers, **overrides,
    )
    return VJEPA2AreaModel(config).eval()


CPU_KERNELS = ["auto", "segment", "mask"]


def encode(model, video, ids=None, kernel=None):
    with torch.no_grad():
        return model.encode(video, masks=ids, area_kernel=kernel).last_hidden_state


def test_area_ids_follow_grid_positions_and_leftovers_join_last_area():
    grid = (3, 5, 4)
    ids = torch.arange(60)
    areas = area_ids_from_positions(token_positions(ids, grid), grid, (2, 2, 1))
    t, h = ids // 20, (ids % 20) // 4
    # time: 3 // 2 = 1 frame in area 0, frames 1-2 in area 1; height: rows 0-1 then rows 2-4
    expected = (t >= 1).long() * 2 + (h >= 2).long()
    assert torch.equal(areas, expected)


@pytest.mark.parametrize("kernel", CPU_KERNELS)
@pytest.mark.parametrize("splits", [(2, 2, 1), (1, 2, 2), (2, 1, 2), (2, 2, 2)])
def test_all_tokens_matches_reference(splits, kernel):
    model = tiny_model(splits)
    video = torch.randn(2, 3, 8, 64, 64)
    got = encode(model, video, kernel=kernel)
    assert_matches(got, reference_encoder(model, video))


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_uneven_masked_areas_match_reference(kernel):
    model = tiny_model((2, 2, 1))
    video = torch.randn(3, 3, 8, 64, 64)
    ids = random_masks(3, 64, 16, torch.Generator().manual_seed(3))  # 25% visible: areas hold different counts
    got = encode(model, video, ids, kernel)
    assert_matches(got, reference_encoder(model, video, ids))


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_empty_area_is_exact_and_finite(kernel):
    model = tiny_model((2, 2, 1))
    video = torch.randn(2, 3, 8, 64, 64)
    grid_tokens = torch.arange(64)
    first_frames = grid_tokens[grid_tokens // 16 < 2]  # only time-area 0: areas 2 and 3 are empty
    ids = torch.stack([first_frames[::2], first_frames[1::2]])
    got = encode(model, video, ids, kernel)
    assert torch.isfinite(got).all()
    assert_matches(got, reference_encoder(model, video, ids))


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_non_divisible_grid_and_non_square_input(kernel):
    model = tiny_model((2, 2, 2), img=(48, 80), frames=6)  # grid (3, 3, 5)
    video = torch.randn(2, 3, 6, 48, 80)
    got = encode(model, video, kernel=kernel)  # all tokens, unequal areas: one layout shared by the batch
    assert_matches(got, reference_encoder(model, video))
    ids = random_masks(2, 45, 20, torch.Generator().manual_seed(0))
    got = encode(model, video, ids, kernel)
    assert_matches(got, reference_encoder(model, video, ids))


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_unsorted_and_list_masks_keep_caller_order(kernel):
    model = tiny_model((2, 2, 1))
    video = torch.randn(2, 3, 8, 64, 64)
    gen = torch.Generator().manual_seed(5)
    first = random_masks(2, 64, 20, gen, sort=False)
    second = random_masks(2, 64, 20, gen, sort=False)
    got = encode(model, video, [first, second], kernel)
    expected = torch.cat([reference_encoder(model, video, first), reference_encoder(model, video, second)])
    assert got.shape == (4, 20, 48)
    assert_matches(got, expected)


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_gradients_match_reference(kernel):
    model = tiny_model((2, 2, 1)).train()
    video = torch.randn(2, 3, 8, 64, 64)
    ids = random_masks(2, 64, 24, torch.Generator().manual_seed(7))
    weight = torch.randn(2, 24, 48)

    def grads(fn):
        model.zero_grad()
        (fn() * weight).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    ours = grads(lambda: model.encode(video, masks=ids, area_kernel=kernel).last_hidden_state)
    ref = grads(lambda: reference_encoder(model, video, ids))
    for name in ref:
        assert_matches(ours[name], ref[name], msg=name)


def test_one_area_is_full_attention_bit_for_bit():
    full = tiny_model(None)
    one = tiny_model((1, 1, 1), layers="0:3")
    one.load_state_dict(full.state_dict())
    video = torch.randn(2, 3, 8, 64, 64)
    ids = random_masks(2, 64, 30, torch.Generator().manual_seed(1))
    assert torch.equal(encode(one, video), encode(full, video))
    assert torch.equal(encode(one, video, ids), encode(full, video, ids))


def test_full_attention_checkpoint_loads_into_area_model():
    full = tiny_model(None)
    area = tiny_model((2, 2, 1))
    missing, unexpected = area.load_state_dict(full.state_dict(), strict=True)
    assert not missing and not unexpected


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_area_only_model_outputs_of_an_area_do_not_depend_on_other_areas(kernel):
    model = tiny_model((2, 2, 1), layers="0:3")  # area attention in every block
    video = torch.randn(1, 3, 8, 64, 64)
    ids = torch.arange(64).unsqueeze(0)
    areas = area_ids_from_positions(token_positions(ids, (4, 4, 4)), (4, 4, 4), (2, 2, 1))
    everything = encode(model, video, kernel=kernel)
    for area in range(4):
        own = ids[areas == area].unsqueeze(0)
        got = encode(model, video, own, kernel)
        assert_matches(got, everything[:, own[0]])


def test_dense_and_mask_kernels_agree_and_dense_refuses_masks():
    model = tiny_model((2, 2, 1))
    video = torch.randn(2, 3, 8, 64, 64)
    assert_matches(encode(model, video, kernel="dense"), encode(model, video, kernel="mask"))
    with pytest.raises(ValueError, match="area_kernel='dense' needs all tokens"):
        encode(model, video, torch.arange(10).expand(2, -1), kernel="dense")


def test_bad_area_kernel_requests_raise():
    model = tiny_model((2, 2, 1))
    video = torch.randn(1, 3, 8, 64, 64)
    with pytest.raises(ValueError, match="area_kernel must be one of"):
        encode(model, video, kernel="flash")  # a typo is not silently run as "mask"
    with pytest.raises(ValueError, match="area_kernel='varlen' needs CUDA"):
        encode(model, video, torch.arange(10).expand(1, -1), kernel="varlen")


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_inputs_shorter_than_a_split_get_fewer_areas(kernel):
    model = tiny_model((2, 2, 1))
    clip = torch.randn(2, 3, 2, 64, 64)  # one tubelet: the time split of 2 becomes 1
    got = encode(model, clip, kernel=kernel)
    assert_matches(got, reference_encoder(model, clip))
    image = torch.randn(2, 3, 64, 64)
    got = encode(model, image, kernel=kernel)
    assert_matches(got, encode(model, image.unsqueeze(2).repeat(1, 1, 2, 1, 1), kernel=kernel))


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_image_model_splits_height_and_width(kernel):
    """An image model's grid has one time row: splits (1, 2, 2) give four areas over its patches."""
    model = tiny_model((1, 2, 2), frames=1)
    assert model.config.grid_size == (1, 4, 4)
    image = torch.randn(2, 3, 64, 64)
    ids = random_masks(2, 16, 6, torch.Generator().manual_seed(4))
    got = encode(model, image, kernel=kernel)
    assert_matches(got, reference_encoder(model, image))
    got = encode(model, image, ids, kernel)
    assert_matches(got, reference_encoder(model, image, ids))
    with pytest.raises(ValueError, match="time split 2 exceeds"):
        VJEPA2AreaConfig(img_size=[64, 64], num_frames=1, embed_dim=48, depth=3, num_heads=2, area_splits=(2, 2, 1))


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_area_residual_scale_is_applied_in_area_blocks(kernel):
    model = tiny_model((2, 2, 1), area_residual_scale=0.5)
    video = torch.randn(1, 3, 8, 64, 64)
    ids = random_masks(1, 64, 20, torch.Generator().manual_seed(6))
    for mask in (None, ids):
        got = encode(model, video, mask, kernel)
        assert_matches(got, reference_encoder(model, video, mask))
    # An input with a single area (one tubelet in a time-only split) is still scaled in area blocks.
    time_only = tiny_model((2, 1, 1), area_residual_scale=0.5)
    clip = torch.randn(1, 3, 2, 64, 64)
    assert_matches(encode(time_only, clip), reference_encoder(time_only, clip))


def test_plan_offsets_count_tokens_per_batch_and_area():
    grid = (2, 2, 2)
    ids = torch.tensor([[0, 1, 2, 7], [4, 5, 6, 7]])
    plan = AreaPlan.build(token_positions(ids, grid), grid, (2, 1, 1), masked=True)
    assert plan.segment_offsets(2).tolist() == [0, 3, 4, 4, 8]  # sample 1 has an empty first area
    assert plan.segment_lengths() == [3, 1, 0, 4]
    q = torch.randn(2, 4, 2, 8)
    out = area_attention(q, q, q, plan)
    assert out.shape == q.shape
    # Without a mask every sample has the grid's layout: one row of lengths, whatever the batch.
    all_tokens = AreaPlan.build(token_positions(torch.arange(8)[None], grid), grid, (2, 1, 1))
    assert all_tokens.segment_lengths() == [4, 4]


@pytest.mark.parametrize("masked", [True, False], ids=["masked-empty-area", "all-tokens-uneven"])
def test_segment_kernel_equals_mask_kernel_forward_and_backward(masked):
    """Kernel level, B = 3: per-sample layouts with an empty (sample, area) segment, or one uneven layout."""
    grid, splits, batch = (3, 4, 5), (2, 2, 1), 3
    if masked:
        ids = random_masks(batch, 60, 21, torch.Generator().manual_seed(8))
        ids[0] = torch.arange(21) + 20  # sample 0: time rows 1-2 only, so its time-area 0 is empty
    else:
        ids = torch.arange(60)[None]
    positions = token_positions(ids, grid)
    qkv = torch.randn(batch, ids.shape[1], 3, 2, 16, generator=torch.Generator().manual_seed(9)).requires_grad_()
    grad = torch.randn(batch, ids.shape[1], 2, 16)
    results = []
    for kernel in ("segment", "mask"):
        plan = AreaPlan.build(positions, grid, splits, kernel=kernel, masked=masked)
        order = plan.order.expand(batch, -1)[..., None, None, None].expand_as(qkv)
        sorted_qkv = qkv.gather(1, order)
        out = area_attention(*sorted_qkv.unbind(2), plan)
        (gradient,) = torch.autograd.grad(out, qkv, grad.gather(1, order[:, :, 0]))
        results.append((out, gradient))
    if masked:
        assert 0 in plan.segment_lengths()
    (out, gradient), (expected, expected_gradient) = results
    assert_matches(out, expected)
    assert_matches(gradient, expected_gradient)


def test_auto_picks_segment_on_cpu_in_eager_mode_and_mask_under_compile(monkeypatch):
    grid = (3, 4, 4)  # 3 time rows: unequal areas even with all tokens
    ids = torch.tensor([[0, 1, 20, 40], [3, 17, 33, 47]])
    q = torch.randn(2, 4, 2, 8)
    masked = AreaPlan.build(token_positions(ids, grid), grid, (2, 1, 1), masked=True)
    uneven = AreaPlan.build(token_positions(torch.arange(48)[None], grid), grid, (2, 1, 1))
    divisible = AreaPlan.build(token_positions(torch.arange(48)[None], grid), grid, (1, 2, 2))
    assert [p.choose_kernel(q) for p in (masked, uneven, divisible)] == ["segment", "segment", "dense"]
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert [p.choose_kernel(q) for p in (masked, uneven, divisible)] == ["mask", "mask", "dense"]


def test_segment_kernel_reads_lengths_once_per_forward_and_runs_unmasked_sdpa_per_segment(monkeypatch):
    """Lengths go to the host once per forward (in the plan, shared by every area block), and each
    non-empty (sample, area) segment is one plain SDPA call: no K x K mask anywhere."""
    from tests.modeling.test_area_cuda_path import SdpaLog

    reads = []
    counts = AreaPlan._segment_counts
    monkeypatch.setattr(AreaPlan, "_segment_counts", lambda plan, rows: reads.append(rows) or counts(plan, rows))
    model = tiny_model((2, 2, 1), depth=3, layers="0:2")
    video = torch.randn(2, 3, 8, 64, 64)
    grid_tokens = torch.arange(64)
    first_frames = grid_tokens[grid_tokens // 16 < 2]  # sample 0: areas 2 and 3 empty
    ids = torch.stack([first_frames[:12], torch.tensor([0, 1, 2, 8, 9, 10, 32, 33, 34, 40, 41, 42])])
    sdpa = SdpaLog()
    with sdpa:
        encode(model, video, ids, "segment")
    assert reads == [2]
    area_calls, global_calls = sdpa.calls[:-1], sdpa.calls[-1:]
    segments = [8, 4, 3, 3, 3, 3]  # the non-empty (sample, area) segments: 2 of sample 0, 4 of sample 1
    assert area_calls == [((1, 2, n, 24), False) for n in segments] * 2
    assert global_calls == [((2, 2, 12, 24), False)]


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "all-tokens-uneven"])
def test_compiles_with_fullgraph(masked):
    """Eager `auto` runs the segment kernel on these inputs; compiled, it must pick a traceable one."""
    model = tiny_model((2, 2, 1), img=(80, 64))  # 5 rows of height: unequal areas with all tokens too
    video = torch.randn(2, 3, 8, 80, 64)
    ids = random_masks(2, 80, 16, torch.Generator().manual_seed(2)) if masked else None
    compiled = torch.compile(model.encode, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert_matches(compiled(video, ids).last_hidden_state, encode(model, video, ids))


def test_compiled_with_dynamic_shapes_does_not_recompile_when_the_visible_count_changes():
    """Mask generators differ in how many tokens they keep; with dynamic=True one graph serves them all
    (the plan's bounds are derived from K symbolically, never read from the ids)."""
    import torch._dynamo.testing

    model = tiny_model((2, 2, 1))
    video = torch.randn(2, 3, 8, 64, 64)
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(model.encode, backend=counter, fullgraph=True, dynamic=True)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for keep in (16, 21, 30):
            ids = random_masks(2, 64, keep, generator)
            assert_matches(compiled(video, ids).last_hidden_state, encode(model, video, ids))
    assert counter.frame_count == 1


def test_plan_moves_to_another_device_once_and_keeps_its_cache_per_device():
    """accelerate's device_map hooks call `.to(device)` on each block's arguments, the plan included."""
    from accelerate.utils import send_to_device

    grid = (2, 2, 2)
    ids = torch.tensor([[0, 1, 2, 7], [4, 5, 6, 7]])
    plan = AreaPlan.build(token_positions(ids, grid), grid, (2, 1, 1), masked=True)
    assert plan.to("cpu") is plan and send_to_device(plan, torch.device("cpu")) is plan
    moved = send_to_device(plan, "meta")
    assert moved is not plan and moved is plan.to(torch.device("meta"))  # built once, then reused
    assert moved.order.device.type == moved.area_ids.device.type == "meta"
    assert (moved.kernel, moved.num_areas, moved.max_area_len) == (plan.kernel, plan.num_areas, plan.max_area_len)
    assert moved.segment_offsets(2).device.type == "meta" and plan.segment_offsets(2).tolist() == [0, 3, 4, 4, 8]
