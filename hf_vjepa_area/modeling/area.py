"""Spatiotemporal area partition and the attention kernels that use it.

A token's area comes from its (t, h, w) grid position, never from its index in the visible list.
Once per forward, `AreaPlan.build` computes area ids, the permutation that sorts tokens into
area-major order and what each kernel needs (segment offsets or lengths, the same-area mask). All blocks then
run on the sorted sequence: area blocks attend within contiguous segments, global blocks attend to
everything (attention is permutation-invariant because RoPE positions travel with the tokens), and
the encoder unsorts once at the end.

Kernels (all exact; they differ in speed and where they run):
- "dense": no masked tokens and every axis divisible by its split, so all areas hold the same
  number of tokens in the same order and `[B, A*L, ...]` is a free view as `[B*A, L, ...]`:
  plain SDPA without a mask (flash/cuDNN on GPU).
- "varlen": packed variable-length attention over (batch, area) segments, `torch.nn.attention.
  varlen.varlen_attn` (CUDA, fp16/bf16). Empty areas are empty segments. No padding, no host sync.
- "segment": one SDPA call per non-empty (sample, area) segment, on contiguous slices of the sorted
  sequence: the cost of the areas, any dtype, with backward. Slicing needs the segment lengths as
  Python ints, read once per forward: free on CPU, a host sync on a GPU, untraceable by torch.compile.
- "mask": SDPA with a same-area additive mask over all K tokens (the FLOPs of full attention). Works
  everywhere, compiles, never syncs: the reference.

`auto` picks dense, else varlen where it runs (CUDA, fp16/bf16, torch >= 2.10), else segment on CPU in
eager mode, else mask. Mask rather than segment on CUDA (fp32, or torch without varlen): even one host
read per forward stalls the CPU until the GPU has drained everything queued before it (in a training
loop, the previous step's backward and optimizer step), so the launches of the next kernels no longer
overlap GPU work, and it forbids CUDA-graph capture; mask keeps the GPU path sync-free at the FLOPs of
full attention. `area_kernel="segment"` trades that for A-fold fewer attention FLOPs on large inputs.
Under torch.compile, mask too: a loop over lengths read from tensor values cannot be in one graph.
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
        if q.device.type == "cpu" and not torch.compiler.is_compiling():
            return "segment"
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

    def _segment_counts(self, rows: int) -> torch.Tensor:
        """int32 token counts of the (row, area) segments, row-major: [rows * num_areas]."""
        ids = self.area_ids.expand(rows, -1)
        segment = ids + self.num_areas * torch.arange(rows, device=ids.device).unsqueeze(-1)
        counts = torch.zeros(rows * self.num_areas, dtype=torch.int32, device=ids.device)
        return counts.scatter_add_(0, segment.flatten(), torch.ones_like(segment, dtype=torch.int32).flatten())

    def segment_offsets(self, batch_size: int) -> torch.Tensor:
        """int32 cumulative lengths of the (batch, area) segments of the packed sequence."""
        if "cu_seqlens" not in self._cache:
            counts = self._segment_counts(batch_size)
            self._cache["cu_seqlens"] = F.pad(counts.cumsum(0, dtype=torch.int32), (1, 0))
        return self._cache["cu_seqlens"]

    def segment_lengths(self) -> list[int]:
        """Tokens per (row, area) segment as Python ints, one row per row of `area_ids` (1 when every sample
        has the same layout, i.e. no mask; else B). Read to the host once per forward: a sync off CPU."""
        if "lengths" not in self._cache:
            self._cache["lengths"] = self._segment_counts(self.area_ids.shape[0]).tolist()
        return self._cache["lengths"]


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k, v [B, K, heads, d] -> [B, K, heads, d]."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AreaPlan) -> torch.Tensor:
    """Plain SDPA per non-empty segment of the sorted sequence, outputs concatenated back in place.

    With one layout for all samples (no mask), a segment is one area of every sample, attended as a batch;
    otherwise the samples are laid end to end and each (sample, area) segment is its own call. Slices are
    views, so backward only scatters gradients back through one concatenation.
    """
    batch, num_tokens, heads, head_dim = q.shape
    lengths = plan.segment_lengths()
    if plan.area_ids.shape[0] != 1:  # per-sample layouts: [B, K] as one row of B*K
        q, k, v = [t.reshape(1, batch * num_tokens, heads, head_dim) for t in (q, k, v)]
    segments = zip(lengths, *(t.split(lengths, dim=1) for t in (q, k, v)))
    out = torch.cat([global_attention(*qkv) for length, *qkv in segments if length], dim=1)
    return out.reshape(batch, num_tokens, heads, head_dim)


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
    if kernel == "segment":
        return segment_attention(q, k, v, plan)
    if kernel != "mask":
        raise ValueError(f"unknown area kernel {kernel!r}; use 'auto', 'dense', 'varlen', 'segment' or 'mask'")
    mask = plan.same_area_mask(q.dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AreaPlan | None = None):
    """Attention with explicit weights, for `attn_implementation="eager"` and `output_attentions`.

    q, k, v [B, K, heads, d] -> (out [B, K, heads, d], weights [B, heads, K, K]). With a plan, scores across
    areas are -inf, so each row's weights are its own area's (exact zeros elsewhere). The softmax runs in
    at least float32, as transformers' eager attention does.
    """
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if plan is not None:
        scores = scores + plan.same_area_mask(scores.dtype)
    weights = scores.softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(q.dtype)
    return (weights @ v).transpose(1, 2), weights


__all__ = [
    "AreaPlan",
    "eager_attention",
    "area_ids_from_positions",
    "area_attention",
    "global_attention",
    "segment_attention",
    "largest_area",
    "effective_splits",
]
