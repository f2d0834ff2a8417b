"""A slow, independent reference of V-JEPA 2-AC's action-conditioned predictor, written from Meta's
`VisionTransformerPredictorAC.forward`, `ACBlock` and `ACRoPEAttention` (src/models/ac_predictor.py,
src/models/utils/modules.py): the conditioning tokens get their own qkv pass and a depth-only rotation
by `arange(T)`, the patch tokens the 3-axis rotation with rows and columns snapped onto the configured
grid, the mask is Meta's block loop, attention is an explicit softmax. It shares only the weights
(a state dict in Meta's names) with the model under test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Meta's `rotate_queries_or_keys`: tiled sin/cos, adjacent-pair rotation; pos [N], x [..., N, d]."""
    d = x.shape[-1]
    omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=x.dtype) / (d / 2.0))
    freq = pos.to(x.dtype)[:, None] * omega[None]
    sin, cos = freq.sin().repeat(1, 2), freq.cos().repeat(1, 2)
    y = x.unflatten(-1, (-1, 2))
    y = torch.stack((-y[..., 1], y[..., 0]), dim=-1).flatten(-2)
    return x * cos + y * sin


def block_causal_mask(frames: int, height: int, width: int, add_tokens: int) -> torch.Tensor:
    per_frame = add_tokens + height * width
    mask = torch.zeros(frames * per_frame, frames * per_frame, dtype=torch.bool)
    for t1 in range(frames):
        for t2 in range(t1 + 1):
            mask[t1 * per_frame : (t1 + 1) * per_frame, t2 * per_frame : (t2 + 1) * per_frame] = True
    return mask


def linear(state: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, state[name + ".weight"], state.get(name + ".bias"))


def attention(state: dict, prefix: str, x, heads, frames, height, width, grid_size, cond, mask):
    batch, n, c = x.shape
    head_dim = c // heads
    s = 2 * ((head_dim // 3) // 2)

    def qkv_of(tokens):
        out = linear(state, prefix + "qkv", tokens).unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)
        return out[0], out[1], out[2]  # [B, heads, N, d]

    ids = torch.arange(frames * height * width)
    d_pos = (ids // (height * width)).double()
    h_pos = ((ids % (height * width)) // width).double() * (grid_size / height)
    w_pos = (ids % width).double() * (grid_size / width)

    x = x.view(batch, frames, cond + height * width, c)
    cond_q, cond_k, cond_v = [], [], []
    for i in range(cond):
        q, k, v = qkv_of(x[:, :, i])  # [B, heads, T, d]
        t = torch.arange(frames)
        cond_q.append(torch.cat([rotate(q[..., :s], t), q[..., s:]], -1))
        cond_k.append(torch.cat([rotate(k[..., :s], t), k[..., s:]], -1))
        cond_v.append(v)
    q, k, v = qkv_of(x[:, :, cond:].flatten(1, 2))
    q = torch.cat([rotate(q[..., :s], d_pos), rotate(q[..., s : 2 * s], h_pos), rotate(q[..., 2 * s : 3 * s], w_pos), q[..., 3 * s :]], -1)
    k = torch.cat([rotate(k[..., :s], d_pos), rotate(k[..., s : 2 * s], h_pos), rotate(k[..., 2 * s : 3 * s], w_pos), k[..., 3 * s :]], -1)

    def merge(frame_part, cond_parts):
        frame_part = frame_part.view(batch, heads, frames, height * width, -1)
        cond_part = torch.stack(cond_parts, dim=3)  # [B, heads, T, cond, d]
        return torch.cat([cond_part, frame_part], dim=3).flatten(2, 3)

    q, k, v = merge(q, cond_q), merge(k, cond_k), merge(v, cond_v)
    scores = q @ k.transpose(-2, -1) / head_dim**0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = scores.softmax(-1) @ v
    return linear(state, prefix + "proj", out.transpose(1, 2).reshape(batch, n, c))


def reference_ac_predictor(state: dict, config, tokens, actions, states, extrinsics=None, grid=None) -> torch.Tensor:
    """Meta's forward with `state` (Meta's key names) and the sizes of `config`; `grid` (H, W) is the token
    grid its blocks are called with (Meta's predictor always passes the configured one)."""
    grid_size = config.img_size[0] // config.patch_size
    height, width = grid or (grid_size, config.img_size[1] // config.patch_size)
    heads, eps = config.num_heads, config.layer_norm_eps
    x = linear(state, "predictor_embed", tokens)
    batch, n, dim = x.shape
    frames = n // (height * width)
    s = linear(state, "state_encoder", states).unsqueeze(2)
    a = linear(state, "action_encoder", actions).unsqueeze(2)
    x = x.view(batch, frames, height * width, dim)
    if config.use_extrinsics:
        e = linear(state, "extrinsics_encoder", extrinsics).unsqueeze(2)
        x = torch.cat([a, s, e, x], dim=2).flatten(1, 2)
    else:
        x = torch.cat([a, s, x], dim=2).flatten(1, 2)
    cond = 3 if config.use_extrinsics else 2
    mask = block_causal_mask(frames, height, width, cond) if config.is_frame_causal else None

    def norm(name, y):
        return F.layer_norm(y, (dim,), state[name + ".weight"], state[name + ".bias"], eps)

    for i in range(config.depth):
        p = f"predictor_blocks.{i}."
        x = x + attention(state, p + "attn.", norm(p + "norm1", x), heads, frames, height, width, grid_size, cond, mask)
        y = linear(state, p + "mlp.fc2", F.gelu(linear(state, p + "mlp.fc1", norm(p + "norm2", x))))
        x = x + y
    x = x.view(batch, frames, cond + height * width, dim)[:, :, cond:].flatten(1, 2)
    return linear(state, "predictor_proj", norm("predictor_norm", x))
