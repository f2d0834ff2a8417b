"""3-axis rotary position embedding of V-JEPA 2, built once per forward.

The head dimension is split into depth, height and width slices of `2 * ((head_dim // 3) // 2)`
channels each, in that order; leftover channels at the end are not rotated. Within a slice of
width d, channel j uses frequency `omega[j mod d/2]` (sin/cos *tiled*), while the rotation pairs
*adjacent* channels (`rot(x) = [-x1, x0, -x3, x2, ...]`). The released weights were trained with
this mismatch; V-JEPA 2.1 interleaves sin/cos instead (`interleave=True`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class RopeTables(NamedTuple):
    """cos and signed sin, [B or 1, K, 1, head_dim] float32 (float64 for a float64 model), broadcast over
    heads (token-major layout).

    `sin` carries the rotation's signs (-sin on even channels, +sin on odd ones), so applying it is a
    pair swap and one fused multiply-add: `x * cos + swap_pairs(x) * sin`.
    """

    cos: torch.Tensor
    sin: torch.Tensor


def rope_axis_dim(head_dim: int) -> int:
    return 2 * ((head_dim // 3) // 2)


def token_positions(token_ids: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """(t, h, w) grid coordinates of raster-order token ids, stacked on a new last dim."""
    _, grid_h, grid_w = grid
    per_frame = grid_h * grid_w
    t = token_ids // per_frame
    rest = token_ids - t * per_frame
    h = rest // grid_w
    w = rest - h * grid_w
    return torch.stack((t, h, w), dim=-1)


def build_rope_tables(
    positions: torch.Tensor, head_dim: int, interleave: bool = False, dtype: torch.dtype = torch.float32
) -> RopeTables:
    """Tables for integer positions [..., K, 3]; leftover channels get cos=1, sin=0 (identity).

    Never below float32, whatever the autocast dtype; float64 when the model runs in float64.
    """
    dtype = torch.promote_types(dtype, torch.float32)
    axis_dim = rope_axis_dim(head_dim)
    half = axis_dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=dtype, device=positions.device) / half)
    freqs = positions.to(dtype).unsqueeze(-1) * omega  # [..., K, 3, half]
    if interleave:
        freqs = freqs.repeat_interleave(2, dim=-1)
    else:
        freqs = freqs.repeat(*([1] * (freqs.ndim - 1)), 2)
    freqs = freqs.flatten(-2)  # [..., K, 3 * axis_dim]: depth, height, width slices
    cos, sin = freqs.cos(), freqs.sin()
    sign = torch.arange(sin.shape[-1], device=sin.device) % 2 * 2 - 1  # -1, +1, ...; no host copy
    sin = sin * sign
    leftover = head_dim - 3 * axis_dim
    if leftover:
        cos = torch.nn.functional.pad(cos, (0, leftover), value=1.0)
        sin = torch.nn.functional.pad(sin, (0, leftover), value=0.0)
    return RopeTables(cos.unsqueeze(-2), sin.unsqueeze(-2))


def swap_pairs(x: torch.Tensor) -> torch.Tensor:
    """[x0, x1, x2, x3, ...] -> [x1, x0, x3, x2, ...]; with the signed sin this is `rot(x) * sin`."""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


def apply_rope(x: torch.Tensor, tables: RopeTables) -> torch.Tensor:
    """Rotate x [B, K, heads, head_dim] in at least float32 (autocast-safe) and return it in x's dtype."""
    wide = x.to(torch.promote_types(x.dtype, tables.cos.dtype))
    return torch.addcmul(wide * tables.cos, swap_pairs(wide), tables.sin).to(x.dtype)


__all__ = ["RopeTables", "token_positions", "build_rope_tables", "apply_rope", "rope_axis_dim"]
