"""A slow, independent reference of the V-JEPA 2 encoder with area attention.

Written from V-JEPA 2's formulas with explicit loops: per sample, per area, plain
softmax attention over the tokens whose grid position falls in that area. It shares only the
weights with the model under test, none of its position, RoPE, partition or kernel code.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch


def rotate_slice(x: torch.Tensor, pos: torch.Tensor, interleave: bool = False) -> torch.Tensor:
    """x [heads, N, d], pos [N]: V-JEPA 2 rotation of one axis slice (tiled sin/cos, adjacent pairs)."""
    d = x.shape[-1]
    omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
    freq = pos.double()[:, None] * omega[None]
    if interleave:
        sin, cos = freq.sin().repeat_interleave(2, -1), freq.cos().repeat_interleave(2, -1)
    else:
        sin, cos = freq.sin().repeat(1, 2), freq.cos().repeat(1, 2)
    pairs = x.double().reshape(*x.shape[:-1], d // 2, 2)
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(x.shape)
    return (x.double() * cos + rotated * sin).to(x.dtype)


def rope(x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor, interleave=False) -> torch.Tensor:
    head_dim = x.shape[-1]
    s = 2 * ((head_dim // 3) // 2)
    parts = [
        rotate_slice(x[..., 0:s], t, interleave),
        rotate_slice(x[..., s : 2 * s], h, interleave),
        rotate_slice(x[..., 2 * s : 3 * s], w, interleave),
        x[..., 3 * s :],
    ]
    return torch.cat(parts, dim=-1)


def area_of(t: int, h: int, w: int, grid, splits) -> int:
    index = []
    splits = [min(split, size) for size, split in zip(grid, splits)]  # short axes: one area per row
    for pos, size, split in zip((t, h, w), grid, splits):
        step = size // split
        index.append(min(pos // step, split - 1))
    return (index[0] * splits[1] + index[1]) * splits[2] + index[2]


def reference_blocks(blocks, x: torch.Tensor, ids: torch.Tensor, grid, config, attentions=None) -> torch.Tensor:
    """One sample's tokens x [N, D] with token ids [N] (any order) through `blocks`: RoPE from the ids'
    grid positions, plain softmax attention over all tokens or, in `config.area_layers`, per area.
    A list passed as `attentions` receives each block's weights [heads, N, N] (zero between areas)."""
    dim = x.shape[-1]
    heads = dim // config.head_dim
    t = ids // (grid[1] * grid[2])
    h = (ids % (grid[1] * grid[2])) // grid[2]
    w = ids % grid[2]
    if config.area_splits:
        areas = torch.tensor([area_of(int(a), int(c), int(e), grid, config.area_splits) for a, c, e in zip(t, h, w)])
    for i, block in enumerate(blocks):
        y = block.norm1(x)
        q, k, v = block.attn.qkv(y).reshape(len(x), 3, heads, -1).permute(1, 2, 0, 3)
        q = rope(q, t, h, w, config.rope_interleave)
        k = rope(k, t, h, w, config.rope_interleave)
        out = torch.zeros_like(q)
        weights = q.new_zeros(heads, len(x), len(x))
        groups = [torch.arange(len(x))]
        if i in config.area_layers:
            groups = [torch.nonzero(areas == a).flatten() for a in torch.unique(areas)]
        for g in groups:
            scores = (q[:, g] @ k[:, g].transpose(-1, -2)) / (q.shape[-1] ** 0.5)
            weights[:, g[:, None], g[None, :]] = scores.softmax(-1)
            out[:, g] = scores.softmax(-1) @ v[:, g]
        if attentions is not None:
            attentions.append(weights)
        if i in config.area_layers:
            out = out * config.area_residual_scale
        x = x + block.attn.proj(out.transpose(0, 1).reshape(len(x), dim))
        x = x + block.mlp(block.norm2(x))
    return x


def reference_encoder(model, video: torch.Tensor, ids: torch.Tensor | None = None, attentions=None) -> torch.Tensor:
    """video [B, C, T, H, W] (or an image model's [B, C, H, W]); ids [B, K] visible token ids (or None).
    Returns [B, K, D] in ids' order; a list passed as `attentions` receives each block's [B, heads, K, K]."""
    config = model.config
    p, tub = config.patch_size, config.tubelet_size
    frames = video.shape[2] // tub if video.ndim == 5 else 1
    grid = (frames, video.shape[-2] // p, video.shape[-1] // p)
    tokens = model.patch_embed.proj(video).flatten(2).transpose(1, 2)
    batch, num_tokens, dim = tokens.shape
    if ids is None:
        ids = torch.arange(num_tokens).expand(batch, -1)
    outputs, maps = [], []
    for b in range(batch):
        maps.append([])
        x = reference_blocks(model.blocks, tokens[b, ids[b]], ids[b], grid, config, maps[-1])
        outputs.append(model.norm(x))
    if attentions is not None:
        attentions.extend(torch.stack(layer) for layer in zip(*maps))
    return torch.stack(outputs)


def reference_predictor(predictor, config, context, context_ids, target_ids, grid, mask_index):
    """Per sample, unsorted: embed, append the mask token, dense (per-area) blocks, norm, keep the targets."""
    block_fields = SimpleNamespace(
        head_dim=config.predictor_embed_dim // config.predictor_num_heads,
        area_splits=config.predictor_area_splits,
        area_layers=config.predictor_area_layers,
        area_residual_scale=config.area_residual_scale,
        rope_interleave=config.rope_interleave,
    )
    outputs = []
    for b in range(context.shape[0]):
        token = predictor.mask_tokens[mask_index].reshape(1, -1)
        x = torch.cat([predictor.predictor_embed(context[b]), token.expand(len(target_ids[b]), -1)])
        ids = torch.cat([context_ids[b], target_ids[b]])
        x = reference_blocks(predictor.predictor_blocks, x, ids, grid, block_fields)
        outputs.append(predictor.predictor_proj(predictor.predictor_norm(x)[len(context_ids[b]):]))
    return torch.stack(outputs)


def randomize(module: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    """Every parameter random (mask tokens, biases and norms included), so no zero or one hides an error."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)


def random_masks(batch: int, num_tokens: int, keep: int, generator: torch.Generator, sort: bool = True):
    ids = torch.stack([torch.randperm(num_tokens, generator=generator)[:keep] for _ in range(batch)])
    return ids.sort(dim=-1).values if sort else ids
