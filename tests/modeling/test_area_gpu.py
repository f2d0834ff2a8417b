"""CUDA-only checks of the fast area kernels (skipped without a GPU).

The CPU suite proves the "mask" kernel exact against an independent reference; here the kernels that only
run on CUDA ("dense" via flash/cuDNN SDPA, "varlen", "segment", and what "auto" picks) are checked against it in
bf16 on uneven and empty areas with B > 1, forward and gradients; plus the whole encoder, torch.compile
with fullgraph=True, and the absence of host syncs on the varlen hot path.
"""

import dataclasses
import math

import pytest
import torch

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaModel
from hf_vjepa_area.modeling.area import AreaPlan, area_attention, area_ids_from_positions, varlen_attn
from hf_vjepa_area.modeling.rope import token_positions

from tests.numerics import BFLOAT16_RTOL

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_varlen = pytest.mark.skipif(
    varlen_attn is None or not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
    reason="varlen attention needs torch >= 2.10 and an sm80+ GPU",
)

HEADS, HEAD_DIM = 4, 64
DEVICE = "cuda"


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """||got - expected|| / ||expected||, bounded by BFLOAT16_RTOL for bf16 inputs."""
    return ((got.float() - expected.float()).norm() / expected.float().norm()).item()


def uneven_masks(batch: int, grid, splits, keep: int, seed: int = 0) -> torch.Tensor:
    """[B, K] sorted visible ids; sample 0 keeps nothing of area 0 (an empty area), the others are random."""
    generator = torch.Generator().manual_seed(seed)
    num_tokens = math.prod(grid)
    area_of_token = area_ids_from_positions(token_positions(torch.arange(num_tokens), grid), grid, splits)
    rows = []
    for b in range(batch):
        allowed = torch.nonzero(area_of_token != 0).flatten() if b == 0 else torch.arange(num_tokens)
        rows.append(allowed[torch.randperm(len(allowed), generator=generator)[:keep]].sort().values)
    return torch.stack(rows)


def random_qkv(batch: int, tokens: int, seed: int = 0):
    """bf16 q, k, v [B, K, heads, d] as views of one fused tensor, like the model's qkv projection."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, tokens, 3, HEADS, HEAD_DIM, generator=generator).to(DEVICE).bfloat16()
    return qkv.requires_grad_()


def forward_backward(qkv: torch.Tensor, plan: AreaPlan, grad_out: torch.Tensor):
    qkv.grad = None
    out = area_attention(*qkv.unbind(2), plan)
    out.backward(grad_out)
    return out.detach(), qkv.grad.clone()


def check_against_mask_reference(plan: AreaPlan, batch: int, tokens: int, expected_kernel: str):
    """The kernel vs the "mask" kernel on float32 copies of the same bf16 inputs (the exact answer)."""
    qkv = random_qkv(batch, tokens)
    assert plan.choose_kernel(qkv) == expected_kernel
    grad_out = torch.randn(batch, tokens, HEADS, HEAD_DIM, device=DEVICE, dtype=torch.bfloat16)
    out, grad = forward_backward(qkv, plan, grad_out)
    reference_plan = dataclasses.replace(plan, kernel="mask", _cache={})
    qkv32 = qkv.detach().float().requires_grad_()
    expected, expected_grad = forward_backward(qkv32, reference_plan, grad_out.float())
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    assert relative_error(out, expected) <= BFLOAT16_RTOL
    for name, got, want in zip("qkv", grad.unbind(2), expected_grad.unbind(2)):
        assert relative_error(got, want) <= BFLOAT16_RTOL, f"d{name}"


@needs_varlen
@pytest.mark.parametrize("kernel", ["varlen", "auto"])
@pytest.mark.parametrize(
    "grid, splits",
    # varlen_attn runs flash for max_q <= 128 and cuDNN above that (sm90+, cuDNN >= 9.18): cover both.
    [((5, 7, 6), (2, 2, 1)), ((4, 6, 9), (2, 3, 2)), ((8, 12, 12), (2, 2, 1))],
    ids=["uneven-flash", "12areas-flash", "uneven-cudnn-size"],
)
def test_masked_kernels_match_mask_reference(kernel, grid, splits):
    batch, keep = 3, math.prod(grid) // 3
    ids = uneven_masks(batch, grid, splits, keep).to(DEVICE)
    plan = AreaPlan.build(token_positions(ids, grid), grid, splits, kernel=kernel, masked=True)
    counts = plan.segment_offsets(batch).diff().view(batch, -1)
    assert counts[0, 0].item() == 0 and counts.max().item() > counts[counts > 0].min().item()  # empty, uneven
    check_against_mask_reference(plan, batch, keep, expected_kernel="varlen")


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "all-tokens-uneven"])
def test_segment_kernel_on_cuda_matches_mask_reference_and_auto_never_picks_it(masked):
    """`segment` runs on CUDA when asked (one host read per forward); `auto` keeps it off the GPU."""
    grid, splits, batch = (5, 7, 6), (2, 2, 1), 3
    ids = uneven_masks(batch, grid, splits, math.prod(grid) // 3) if masked else torch.arange(math.prod(grid))[None]
    positions = token_positions(ids.to(DEVICE), grid)
    auto = AreaPlan.build(positions, grid, splits, kernel="auto", masked=masked)
    assert auto.choose_kernel(random_qkv(batch, ids.shape[1]).float()) == "mask"
    plan = AreaPlan.build(positions, grid, splits, kernel="segment", masked=masked)
    check_against_mask_reference(plan, batch, ids.shape[1], expected_kernel="segment")


@pytest.mark.parametrize("kernel", ["dense", "auto"])
def test_dense_kernel_matches_mask_reference(kernel):
    grid, splits = (4, 8, 8), (2, 2, 2)
    positions = token_positions(torch.arange(math.prod(grid), device=DEVICE)[None], grid)
    plan = AreaPlan.build(positions, grid, splits, kernel=kernel, masked=False)
    check_against_mask_reference(plan, 2, math.prod(grid), expected_kernel="dense")


@needs_varlen
def test_unmasked_uneven_grid_auto_picks_varlen():
    grid, splits = (3, 5, 5), (2, 2, 1)
    positions = token_positions(torch.arange(math.prod(grid), device=DEVICE)[None], grid)
    plan = AreaPlan.build(positions, grid, splits, kernel="auto", masked=False)
    check_against_mask_reference(plan, 2, math.prod(grid), expected_kernel="varlen")


def small_model(dtype=torch.bfloat16) -> VJEPA2AreaModel:
    """head_dim 64 like the released models; areas of up to 4 x 5 x 10 = 200 tokens (> 128: cuDNN varlen)."""
    torch.manual_seed(0)
    config = VJEPA2AreaConfig(img_size=160, num_frames=14, embed_dim=256, depth=4, num_heads=4, area_splits=(2, 2, 1))
    return VJEPA2AreaModel(config).to(DEVICE).to(dtype)


def video_and_masks(batch=3, keep=280):
    grid = (7, 10, 10)  # 14 frames / 2, 160px / 16: uneven along time
    video = torch.randn(batch, 14, 3, 160, 160, generator=torch.Generator().manual_seed(1)).to(DEVICE).bfloat16()
    return video, uneven_masks(batch, grid, (2, 2, 1), keep, seed=2).to(DEVICE)


@needs_varlen
def test_encoder_varlen_matches_mask_in_bf16():
    model = small_model().eval()
    video, ids = video_and_masks()
    with torch.no_grad():
        got = model(video, masks=ids, area_kernel="varlen").last_hidden_state
        expected = model(video, masks=ids, area_kernel="mask").last_hidden_state
    assert relative_error(got, expected) <= BFLOAT16_RTOL


@needs_varlen
def test_compile_fullgraph_runs_masked_training_step():
    model = small_model()
    video, ids = video_and_masks()
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    out = compiled(video, masks=ids).last_hidden_state
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in model.blocks.parameters())
    with torch.no_grad():
        expected = model(video, masks=ids).last_hidden_state
    assert relative_error(out.detach(), expected) <= BFLOAT16_RTOL


@needs_varlen
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_varlen_forward_makes_no_host_sync(training):
    """`set_sync_debug_mode("error")` raises on any op that waits for the GPU (.item(), a value-dependent
    branch, a blocking host<->device copy such as torch.tensor(list, device=DEVICE)); the message and
    traceback name the op. Warm-up first, so one-time setup (cuDNN/flash handles) is not counted."""
    model = small_model().train(training)
    video, ids = video_and_masks()

    def step():
        with torch.set_grad_enabled(training):
            out = model(video, masks=ids, area_kernel="varlen").last_hidden_state
            if training:
                out.float().pow(2).mean().backward()

    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
