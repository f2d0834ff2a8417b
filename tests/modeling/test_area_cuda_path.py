"""The CUDA code path of area attention, traced on any machine with fake CUDA tensors.

torch's FakeTensorMode runs the model's real CUDA branch (kernel choice, varlen packing, the plan) on
shapes alone, so CPU-only CI checks what otherwise only a GPU could:
- no host synchronisation in the forward: a fake tensor has no values, so `.item()`, `nonzero`, a
  value-dependent Python branch or a `.tolist()` raises `DataDependentOutputException` here (on a GPU,
  test_area_gpu's sync-debug test checks the same);
- the plan is computed once per forward and shared: one sort, one set of segment offsets, one
  same-area mask, whatever the number of area layers;
- which kernel `auto` runs where, and with what shapes: varlen on packed contiguous [B*K, heads, d] rows
  with one segment per (sample, area); full tokens on a divisible grid as plain SDPA on [B*A, L] with no
  mask; fp32 (varlen needs half precision) via the shared additive mask, never the segment kernel that
  `auto` runs on CPU (it reads segment lengths on the host, which would raise here).
Numerics are not checked here (fake tensors have none): test_area.py and test_area_gpu.py do that.
"""

import collections
import math

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaModel
from hf_vjepa_area.modeling.area import largest_area, varlen_attn

pytestmark = pytest.mark.skipif(varlen_attn is None, reason="varlen attention needs torch >= 2.10")

HEADS, DIM, DEPTH, AREA_LAYERS, SPLITS = 2, 64, 3, 2, (2, 2, 1)


class OpLog(TorchDispatchMode):
    """Counts every aten op; keeps the arguments of varlen calls."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()
        self.varlen_args = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.counts[name] += 1
        if "varlen_attn" in name and "backward" not in name:
            self.varlen_args.append(args)
        return func(*args, **(kwargs or {}))


class SdpaLog(TorchFunctionMode):
    """Records (q shape, has mask) of each scaled_dot_product_attention call, whatever backend runs it."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.calls.append((tuple(args[0].shape), kwargs.get("attn_mask") is not None))
        return func(*args, **kwargs)


def fake_cuda_run(img=(64, 64), frames=8, batch=2, keep=None, dtype=torch.bfloat16, training=False):
    """One forward of a small area model on fake CUDA tensors; returns the output and both logs."""
    torch.manual_seed(0)
    config = VJEPA2AreaConfig(
        img_size=list(img), num_frames=frames, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
        area_splits=SPLITS, area_layers=f"0:{AREA_LAYERS}",
    )
    model = VJEPA2AreaModel(config).train(training)  # real weights, built on CPU
    num_tokens = math.prod(config.grid_size)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to("cuda", dtype)
        video = torch.randn(batch, frames, 3, *img, device="cuda", dtype=dtype)
        masks = None
        if keep is not None:  # V-JEPA style: sorted visible ids per sample, made on the device
            masks = torch.stack([torch.randperm(num_tokens, device="cuda")[:keep].sort().values for _ in range(batch)])
        ops, sdpa = OpLog(), SdpaLog()
        with torch.set_grad_enabled(training), sdpa, ops:
            out = model(pixel_values_videos=video, masks=masks).last_hidden_state
    return out, ops, sdpa, config


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_masked_bf16_runs_varlen_once_per_area_layer_on_one_plan(training):
    batch, keep = 2, 24
    out, ops, sdpa, config = fake_cuda_run(batch=batch, keep=keep, training=training)
    assert out.shape == (batch, keep, DIM) and out.device.type == "cuda" and out.dtype == torch.bfloat16

    assert ops.counts["aten.sort"] == 1  # the area-major order, once per forward
    assert ops.counts["aten.cumsum"] == 1  # the segment offsets, once, shared by every area layer
    assert len(ops.varlen_args) == AREA_LAYERS
    assert sdpa.calls == [((batch, HEADS, keep, DIM // HEADS), False)] * (DEPTH - AREA_LAYERS)  # global layers

    areas = math.prod(SPLITS)
    for q, k, v, cu_q, cu_k, max_q, max_k, *_ in ops.varlen_args:
        for packed in (q, k, v):  # one row per token, no padding, contiguous as the cuDNN path needs
            assert packed.shape == (batch * keep, HEADS, DIM // HEADS) and packed.is_contiguous()
        assert cu_q is cu_k and cu_q.shape == (batch * areas + 1,) and cu_q.dtype == torch.int32
        assert max_q == max_k == keep  # a static bound: masks may leave any area with every visible token


@pytest.mark.parametrize("keep", [24, None], ids=["masked", "all-tokens-uneven"])
def test_fp32_shares_one_additive_mask_across_area_layers(keep):
    """Where varlen does not run on CUDA, auto takes the sync-free mask kernel (not segment, as on CPU)."""
    batch = 2
    _, ops, sdpa, config = fake_cuda_run(img=(80, 64), batch=batch, keep=keep, dtype=torch.float32)
    assert not ops.varlen_args  # varlen kernels take half precision only
    assert ops.counts["aten.masked_fill_"] == 1  # built once, reused by both area layers
    q_shape = (batch, HEADS, keep or math.prod(config.grid_size), DIM // HEADS)
    assert sdpa.calls == [(q_shape, True)] * AREA_LAYERS + [(q_shape, False)] * (DEPTH - AREA_LAYERS)


def test_full_tokens_on_divisible_grid_are_plain_sdpa_over_areas():
    batch = 2
    out, ops, sdpa, config = fake_cuda_run(batch=batch)
    tokens, areas = math.prod(config.grid_size), math.prod(SPLITS)
    assert out.shape == (batch, tokens, DIM)
    assert not ops.varlen_args and ops.counts["aten.masked_fill_"] == 0
    per_area = (batch * areas, HEADS, tokens // areas, DIM // HEADS)  # a free reshape: flash/cuDNN, no mask
    assert sdpa.calls == [(per_area, False)] * AREA_LAYERS + [((batch, HEADS, tokens, DIM // HEADS), False)]


def test_full_tokens_on_uneven_grid_use_varlen_bounded_by_the_largest_area():
    # 80x64 pixels at patch 16 -> a 5-row height axis: rows 0-1 and 2-4, so areas differ in size.
    _, ops, _, config = fake_cuda_run(img=(80, 64), batch=1)
    assert len(ops.varlen_args) == AREA_LAYERS
    bound = largest_area(config.grid_size, SPLITS)
    assert bound < math.prod(config.grid_size)
    assert all(args[5] == args[6] == bound for args in ops.varlen_args)
