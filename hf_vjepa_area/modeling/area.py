"""Spatiotemporal area partition and the attention kernels that use it.

A token's area comes from its (t, h, w) grid position, never from its index in the visible list.
Once per forward, `AreaPlan.build` computes area ids, the permutation that sorts tokens into
area-major order and what each kernel needs (segment offsets, the same-area mask). All blocks then
run on the sorted sequence: area blocks attend within contiguous segments, global blocks attend to
everything (attention is permutation-invariant because RoPE positions travel with the tokens), and
the encoder unsorts once at the end.

Kernels (all exact; they differ in speed and where they run):
- "dense": no masked tokens and every axis divisible by its split, so all areas hold the same
  number of tokens in the same order and `[B, A*L, ...]` is a free view as `[B*A, L, ...]`:
  plain SDPA without a mask (flash/cuDNN on GPU).
- "varlen": packed variable-length attention over (batch, area) segments, `torch.nn.attention.
  varlen.varlen_attn` (CUDA, fp16/bf16). Empty areas are empty segments. No padding, no host sync.
- "mask": SDPA with a boolean same-area mask. Works everywhere and supports backward: the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

try:  # torch >= 2.10
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # pragma: no cover - older torch
    varlen_attn = None


def area_ids_from_positions(positions: torch.Tensor, grid: tuple[int, int, int], splits) -> torch.Tensor:
    """Area index of each token from its (t, h, w) position [..., 3].

    Each axis of size g is cut into `s` areas of `g // s` rows; the leftover rows join the last area
    (the prototype's rule for grids the split does not divide).
    """
    area = None
    for axis, (size, split) in enumerate(zip(grid, splits)):
        step = size // split
        index = torch.clamp(positions[..., axis] // step, max=split - 1)
        area = index if area is None else area * split + index
    return area


def effective_splits(grid: tuple[int, int, int], splits) -> list[int]:
    """Splits for this input: an axis shorter than its split gets one area per row.

    The config refuses splits larger than its own grid; at run time a smaller input (an image in a
    video model is one tubelet) simply has fewer areas along that axis.
    """
    return [min(int(split), size) for size, split in zip(grid, splits)]


def largest_area(grid: tuple[int, int, int], splits) -> int:
    """Token count of the biggest area (the last one, which takes the leftovers): a static bound."""
    return math.prod([size - (split - 1) * (size // split) for size, split in zip(grid, splits)])


@dataclass
class AreaPlan:
    """Everything area attention needs for one forward, shared by all blocks."""

    kernel: str
    num_areas: int
    order: torch.Tensor  # [B or 1, K] indices sorting tokens area-major
    area_ids: torch.Tensor  # [B or 1, K], in sorted order
    max_area_len: int  # static bound on tokens per (sample, area) for varlen, known without reading the ids
    equal_areas: bool
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, positions: torch.Tensor, grid, splits, kernel: str = "auto", masked: bool = False) -> "AreaPlan":
        num_tokens = positions.shape[-2]
        num_areas = math.prod(splits)
        area_ids = area_ids_from_positions(positions, grid, splits)
        equal_areas = not masked and all(size % split == 0 for size, split in zip(grid, splits))
        if kernel == "dense" and not equal_areas:
            raise ValueError(
                "area_kernel='dense' needs all tokens present and every grid axis divisible by its split "
                f"(grid {tuple(grid)}, splits {tuple(splits)}, masked={masked}); use 'auto', 'varlen' or 'mask'"
            )
        # Unique sort keys (area, then original index) give a stable area-major order in one sort.
        index = torch.arange(num_tokens, device=positions.device)
        order = torch.argsort(area_ids * num_tokens + index, dim=-1)
        return cls(
            kernel=kernel,
            num_areas=num_areas,
            order=order,
            area_ids=torch.gather(area_ids, -1, order),
            # Masks may repeat ids, so only K bounds an area then; with all tokens, the grid does.
            max_area_len=num_tokens if masked else min(num_tokens, largest_area(grid, splits)),
            equal_areas=equal_areas,
        )

    def to(self, device, non_blocking: bool = False) -> "AreaPlan":
        """The plan on `device`; made once per device and kept, so a model split over devices (accelerate's
        `device_map`, whose hooks call `.to` on every block argument) still builds its offsets and mask
        once per device rather than once per block."""
        device = torch.device(device)
        here = self.order.device
        if device.type == here.type and device.index in (None, here.index):
            return self
        key = ("device", str(device))
        if key not in self._cache:
            self._cache[key] = replace(
                self,
                order=self.order.to(device, non_blocking=non_blocking),
                area_ids=self.area_ids.to(device, non_blocking=non_blocking),
                _cache={},
            )
        return self._cache[key]

    def choose_kernel(self, q: torch.Tensor) -> str:
        if self.kernel != "auto":
            return self.kernel
        if self.equal_areas:
            return "dense"
        if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and varlen_attn is not None:
            return "varlen"
        return "mask"

    def same_area_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """[B, 1, K, K] additive mask (0 within an area, -inf across), built once per dtype and reused
        by every area block: SDPA would otherwise convert a boolean mask in each of them. No row is
        fully masked, since every token shares its own area."""
        key = ("mask", dtype)
        if key not in self._cache:
            ids = self.area_ids
            same = (ids.unsqueeze(-1) == ids.unsqueeze(-2)).unsqueeze(1)
            self._cache[key] = torch.zeros(same.shape, dtype=dtype, device=ids.device).masked_fill_(~same, float("-inf"))
        return self._cache[key]

    def segment_offsets(self, batch_size: int) -> torch.Tensor:
        """int32 cumulative lengths of the (batch, area) segments of the packed sequence."""
        if "cu_seqlens" not in self._cache:
            ids = self.area_ids.expand(batch_size, -1)
            segment = ids + self.num_areas * torch.arange(batch_size, device=ids.device).unsqueeze(-1)
            counts = torch.zeros(batch_size * self.num_areas, dtype=torch.int32, device=ids.device)
            counts.scatter_add_(0, segment.flatten(), torch.ones_like(segment, dtype=torch.int32).flatten())
            self._cache["cu_seqlens"] = F.pad(counts.cumsum(0, dtype=torch.int32), (1, 0))
        return self._cache["cu_seqlens"]


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k, v [B, K, heads, d] -> [B, K, heads, d]."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def area_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AreaPlan) -> torch.Tensor:
    """Attention within areas for area-major sorted q, k, v [B, K, heads, d]."""
    batch, num_tokens, heads, head_dim = q.shape
    kernel = plan.choose_kernel(q)
    if kernel == "dense":
        areas = plan.num_areas
        shape = (batch * areas, num_tokens // areas, heads, head_dim)
        out = global_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape))
        return out.reshape(batch, num_tokens, heads, head_dim)
    if kernel == "varlen":
        if varlen_attn is None:
            raise RuntimeError("area_kernel='varlen' needs torch >= 2.10 (torch.nn.attention.varlen)")
        if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(
                f"area_kernel='varlen' needs CUDA fp16/bf16 tensors, got {q.device.type} {q.dtype}; "
                "use 'auto' or 'mask'"
            )
        offsets = plan.segment_offsets(batch)
        # Tightly packed rows: q/k/v are strided views of the fused projection, and the cuDNN varlen
        # path (areas > 128 tokens) has computed offsets assuming packed tokens in some torch builds.
        q, k, v = [t.reshape(batch * num_tokens, heads, head_dim).contiguous() for t in (q, k, v)]
        out = varlen_attn(q, k, v, offsets, offsets, plan.max_area_len, plan.max_area_len)
        return out.reshape(batch, num_tokens, heads, head_dim)
    mask = plan.same_area_mask(q.dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


__all__ = [
    "AreaPlan",
    "area_ids_from_positions",
    "area_attention",
    "global_attention",
    "largest_area",
    "effective_splits",
]
