"""V-JEPA 2 video ViT encoders with Spatiotemporal Area Attention (ST-A²).

Self-contained (torch + transformers, sibling-relative imports only) so that `save_pretrained` can
copy it into a Hub folder for `trust_remote_code=True`. State-dict keys are the original encoder's
(`patch_embed.proj.*`, `blocks.{i}.*`, `norm.*`), so released checkpoints load by prefix stripping
and one `model.safetensors` serves transformers and timm alike.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import ModelOutput

from .area import AreaPlan, area_attention, area_ids_from_positions, eager_attention, effective_splits, global_attention
from .configuration_vjepa2_area import AREA_KERNELS, VJEPA2AreaConfig
from .rope import RopeTables, apply_rope, build_rope_tables, token_positions

# ----------------------------------------------------------------------------------------------
# Position embeddings for models without RoPE (frozen 3D / 2D sincos, as in the original code)
# ----------------------------------------------------------------------------------------------


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.reshape(-1, 1).double() * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_3d(dim: int, grid: tuple[int, int, int], uniform_power: bool = False) -> torch.Tensor:
    """[T*H*W, dim] in (t, h, w) raster order; time gets half the channels unless uniform_power."""
    t, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")
    if uniform_power:
        t_dim = h_dim = w_dim = int(math.ceil(dim / 6) * 2)
    else:
        t_dim, h_dim, w_dim = dim // 2, dim // 4, dim // 4
    emb = torch.cat([sincos_1d(t_dim, t), sincos_1d(h_dim, h), sincos_1d(w_dim, w)], dim=1)
    return emb[:, :dim].float()


def sincos_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """[H*W, dim] in (h, w) raster order; the first half encodes the height coordinate, the second the
    width (V-JEPA's `get_2d_sincos_pos_embed`; MAE's table has them the other way round)."""
    h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, h), sincos_1d(dim // 2, w)], dim=1).float()


def interpolate_pos_embed(pos_embed: torch.Tensor, source_grid: tuple, target_grid: tuple) -> torch.Tensor:
    """Resample a [1, N, D] table to another grid: trilinear for video, bicubic for images."""
    if tuple(source_grid) == tuple(target_grid):
        return pos_embed
    dim = pos_embed.shape[-1]
    table = pos_embed.reshape(1, *source_grid, dim).movedim(-1, 1)
    mode = "trilinear" if len(source_grid) == 3 else "bicubic"
    table = F.interpolate(table.float(), size=tuple(target_grid), mode=mode, align_corners=False)
    return table.movedim(1, -1).reshape(1, -1, dim).to(pos_embed.dtype)


# ----------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------


def mark_residual_output(linear: nn.Linear, depth: int) -> None:
    """Tag a linear that writes into the residual stream of the `depth`-th block (from 1).

    The released init divides its weights by sqrt(2 * depth); the tag lets `init_weights` do that on
    the linear itself, since transformers' init skips container modules that own no parameters.
    """
    linear.residual_depth = depth


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """`fc3(silu(fc1 x) * fc2 x)`; `wide_silu` keeps the parameter count of a GELU MLP of `hidden`."""

    def __init__(self, dim: int, hidden: int, wide_silu: bool = True):
        super().__init__()
        if wide_silu:
            hidden = (int(2 * hidden / 3) + 7) // 8 * 8
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(dim, hidden)
        self.fc3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.silu(self.fc1(x)) * self.fc2(x))


class Attention(nn.Module):
    """Fused-qkv self-attention over token-major [B, K, D]; RoPE and area plan come from the encoder."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, area: bool = False, area_scale: float = 1.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.area = area
        self.area_scale = area_scale

    def forward(
        self, x: torch.Tensor, rope: RopeTables | None = None, plan: AreaPlan | None = None, eager: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns `(output, weights)`; `weights` [B, heads, K, K] (in x's token order) only when `eager`."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, -1)
        if rope is not None:  # q and k rotated together: one pass over both
            q, k = apply_rope(qkv[:, :, :2].flatten(2, 3), rope).unflatten(2, (2, self.num_heads)).unbind(2)
            v = qkv[:, :, 2]
        else:
            q, k, v = qkv.unbind(2)
        # No plan: this input has a single area (e.g. one tubelet in a time-only split), i.e. all tokens.
        plan = plan if self.area else None
        weights = None
        if eager:
            out, weights = eager_attention(q, k, v, plan)
        else:
            out = area_attention(q, k, v, plan) if plan is not None else global_attention(q, k, v)
        if self.area and self.area_scale != 1.0:
            out = out * self.area_scale
        return self.proj(out.reshape(batch, tokens, dim)), weights


class Block(GradientCheckpointingLayer):
    """Pre-norm transformer block; `attn.area` says whether it attends within areas."""

    def __init__(self, config: VJEPA2AreaConfig, layer_id: int, drop_path_rate: float = 0.0):
        super().__init__()
        dim = config.embed_dim
        self.layer_id = layer_id
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = Attention(
            dim,
            config.num_heads,
            qkv_bias=config.qkv_bias,
            area=layer_id in config.area_layers,
            area_scale=config.area_residual_scale,
        )
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        hidden = int(dim * config.mlp_ratio)
        if config.use_silu:
            self.mlp = SwiGLU(dim, hidden, wide_silu=config.wide_silu)
        else:
            self.mlp = MLP(dim, hidden)
        mark_residual_output(self.attn.proj, layer_id + 1)
        # `mlp.fc2` as released, also for SwiGLU, where it is a gate input rather than the output (fc3).
        mark_residual_output(self.mlp.fc2, layer_id + 1)

    def forward(
        self,
        x: torch.Tensor,
        rope: RopeTables | None = None,
        plan: AreaPlan | None = None,
        eager: bool = False,
        output_attentions: bool = False,
    ):
        """The block's output; with `output_attentions`, `(output, attention weights)` (eager attention)."""
        out, weights = self.attn(self.norm1(x), rope, plan, eager=eager or output_attentions)
        x = x + self.drop_path(out)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return (x, weights) if output_attentions else x


def set_blocks_checkpointing(blocks, enable: bool = True) -> None:
    """Recompute each block in the backward pass instead of keeping its activations (any transformers
    version: the flags `GradientCheckpointingLayer` reads, with torch's non-reentrant checkpoint)."""
    for block in blocks:
        block.gradient_checkpointing = enable
        block._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)


class PatchEmbed(nn.Module):
    """Conv patchify: Conv3d over (tubelet, p, p) tubelets for video models, Conv2d for image models."""

    def __init__(self, config: VJEPA2AreaConfig):
        super().__init__()
        p = config.patch_size
        if config.num_frames > 1:
            kernel = (config.tubelet_size, p, p)
            self.proj = nn.Conv3d(config.in_chans, config.embed_dim, kernel_size=kernel, stride=kernel)
        else:
            self.proj = nn.Conv2d(config.in_chans, config.embed_dim, kernel_size=p, stride=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


# ----------------------------------------------------------------------------------------------
# Attentive probe (structure and key names of V-JEPA 2's AttentiveClassifier)
# ----------------------------------------------------------------------------------------------


class PoolerBlock(nn.Module):
    """Plain pre-norm self-attention block (no RoPE) of the probe."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))[0]
        return x + self.mlp(self.norm2(x))


class CrossAttention(nn.Module):
    """Queries attend to tokens; no output projection (as released)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)

    def forward(self, queries: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        batch, num_queries, dim = queries.shape
        q = self.q(queries).view(batch, num_queries, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv(x).view(batch, x.shape[1], 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(batch, num_queries, dim)


class CrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.xattn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, queries: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        queries = queries + self.xattn(queries, self.norm1(x))
        return queries + self.mlp(self.norm2(queries))


class AttentivePooler(nn.Module):
    """A learned query reads the tokens after `depth - 1` self-attention blocks."""

    def __init__(self, dim: int, num_heads: int = 16, depth: int = 4, mlp_ratio: float = 4.0, eps: float = 1e-5,
                 num_queries: int = 1):
        super().__init__()
        if dim % num_heads:  # checked here, not in the config: a plain encoder builds no probe
            raise ValueError(
                f"the attentive probe needs embed_dim ({dim}) divisible by its number of heads ({num_heads}); "
                "set probe_num_heads to a divisor of embed_dim"
            )
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, dim))
        self.cross_attention_block = CrossAttentionBlock(dim, num_heads, mlp_ratio, eps)
        self.blocks = nn.ModuleList([PoolerBlock(dim, num_heads, mlp_ratio, eps) for _ in range(depth - 1)])
        for layer_id, block in enumerate(self.blocks, start=1):
            mark_residual_output(block.attn.proj, layer_id)
            mark_residual_output(block.mlp.fc2, layer_id)
        # The original reuses its loop's last id here (1 when there are no self-attention blocks).
        mark_residual_output(self.cross_attention_block.mlp.fc2, max(len(self.blocks), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.cross_attention_block(self.query_tokens.expand(x.shape[0], -1, -1), x)


class AttentiveClassifier(nn.Module):
    """V-JEPA 2's probe head: `pooler.*` and `linear.*` keys, 16 heads and depth 4 by default."""

    def __init__(self, dim: int, num_classes: int, num_heads: int = 16, depth: int = 4, mlp_ratio: float = 4.0,
                 eps: float = 1e-5):
        super().__init__()
        self.pooler = AttentivePooler(dim, num_heads=num_heads, depth=depth, mlp_ratio=mlp_ratio, eps=eps)
        self.linear = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.pooler(x).squeeze(1)
        return pooled if pre_logits else self.linear(pooled)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Released init: trunc-normal weights, zero biases, residual outputs scaled by 1/sqrt(2 * depth).

    Uses transformers' init functions, which skip tensors that `from_pretrained` already loaded.
    """
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
        depth = getattr(module, "residual_depth", None)
        init.trunc_normal_(module.weight, std=std if depth is None else std / math.sqrt(2.0 * depth))
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)
    elif isinstance(module, AttentivePooler):
        init.trunc_normal_(module.query_tokens, std=std)


# ----------------------------------------------------------------------------------------------
# The encoder, shared by the transformers and timm classes
# ----------------------------------------------------------------------------------------------


@dataclass
class VJEPA2AreaModelOutput(ModelOutput):
    """Output of the encoder (`encode`, `VJEPA2AreaModel`).

    `last_hidden_state`: final normed tokens in the caller's order.
    `hidden_states`: the embeddings and each block's (un-normed) output, when asked for.
    `attentions`: each block's attention weights [B, heads, N, N], when asked for (`output_attentions`); an
    area block's row holds its token's own area, zero elsewhere.
    `intermediate_states`: normed outputs of the blocks in `out_layers` (V-JEPA 2 multi-level probing)."""

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    intermediate_states: tuple[torch.Tensor, ...] | None = None


EncoderOutput = VJEPA2AreaModelOutput


def normalize_masks(masks, batch_size: int, num_tokens: int) -> torch.Tensor | None:
    """V-JEPA 2 masks (LongTensor [B, K] of visible token ids, or a list of them) -> [len*B, K] ids.

    Ids may be unsorted or repeated: positions come from the ids, and outputs keep the caller's order.
    Out-of-range ids raise here on CPU in eager mode; on CUDA (and under torch.compile) the check would
    sync the host or break the graph, so they surface as the gather's index error instead (as in the
    original code).
    """
    if masks is None:
        return None
    mask_list = list(masks) if isinstance(masks, (list, tuple)) else [masks]
    if not mask_list:
        raise ValueError("masks is an empty list: pass None for all tokens, or LongTensors [B, K] of token ids")
    for i, mask in enumerate(mask_list):
        if not isinstance(mask, torch.Tensor) or mask.dtype not in (torch.int64, torch.int32):
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"masks[{i}] must be an integer (int64) tensor of visible token ids, got {got}")
        if mask.ndim == 1:
            mask = mask.unsqueeze(0).expand(batch_size, -1)
        if mask.ndim != 2 or mask.shape[0] != batch_size:
            raise ValueError(
                f"masks[{i}] must have shape [batch_size={batch_size}, K] (or [K]), got {tuple(mask.shape)}"
            )
        if mask.shape[1] == 0:
            raise ValueError(f"masks[{i}] keeps no token (shape {tuple(mask.shape)}): each sample needs at least one id")
        if mask.shape[1] != mask_list[0].shape[-1]:
            raise ValueError(
                f"all masks must keep the same number of tokens to be concatenated on the batch dim; "
                f"masks[0] keeps {mask_list[0].shape[-1]}, masks[{i}] keeps {mask.shape[1]}"
            )
        checkable = not mask.is_cuda and not torch.compiler.is_compiling()  # the check reads values
        if checkable and mask.numel() and (mask.min() < 0 or mask.max() >= num_tokens):
            raise ValueError(
                f"masks[{i}] has token ids outside [0, {num_tokens}) for this input "
                f"(min {int(mask.min())}, max {int(mask.max())})"
            )
        mask_list[i] = mask.long()
    return torch.cat(mask_list, dim=0)


def arrange_tokens(tokens: torch.Tensor, ids: torch.Tensor, grid: tuple[int, int, int], config: VJEPA2AreaConfig,
                   area_kernel: str | None = None, masked: bool = True, sort: bool = True):
    """Everything the blocks share, computed once from the tokens' ids on the (t, h, w) grid.

    Returns `(tokens, rope, plan, restore)`: the tokens sorted area-major when `config` has area layers, the
    RoPE tables (None without RoPE), the area plan (None for full attention) and a function that puts
    tokens back in the input's order. `ids` is [B or 1, K]; the encoder and the predictor both use this.
    `sort=False` (eager attention) keeps the input's order: the plan then holds the same-area mask only,
    which needs no sorting, and the blocks' outputs and attention maps are in the caller's order as computed.
    """
    positions = token_positions(ids, grid)
    plan = None
    splits = effective_splits(grid, config.area_splits) if config.area_layers else [1]
    if math.prod(splits) > 1 and not sort:
        area_ids = area_ids_from_positions(positions, grid, splits)
        order = torch.arange(area_ids.shape[-1], device=area_ids.device).unsqueeze(0)
        plan = AreaPlan("mask", math.prod(splits), order, area_ids, area_ids.shape[-1], equal_areas=False)
    elif math.prod(splits) > 1:
        plan = AreaPlan.build(positions, grid, splits, kernel=area_kernel or config.area_kernel, masked=masked)
        positions = positions.gather(1, plan.order.unsqueeze(-1).expand(-1, -1, 3))
        tokens = tokens.gather(1, plan.order.expand(tokens.shape[0], -1).unsqueeze(-1).expand_as(tokens))
    rope = (
        build_rope_tables(positions, config.head_dim, config.rope_interleave, dtype=tokens.dtype)
        if config.use_rope
        else None
    )

    inverse = None
    if plan is not None and sort:  # the permutation's inverse, by scatter rather than a second sort
        inverse = torch.empty_like(plan.order).scatter_(
            -1, plan.order, torch.arange(plan.order.shape[-1], device=plan.order.device).expand_as(plan.order)
        )

    def restore(t: torch.Tensor) -> torch.Tensor:  # back to the input's token order
        if inverse is None:
            return t
        index = inverse.to(t.device)  # a no-op unless device_map put the last blocks elsewhere
        return t.gather(1, index.expand(t.shape[0], -1).unsqueeze(-1).expand_as(t))

    return tokens, rope, plan, restore


class VJEPA2AreaEncoderMixin:
    """Builds and runs the encoder on the module it is mixed into.

    Shared by `VJEPA2AreaModel` (transformers) and the timm model so that both own `patch_embed`,
    `blocks`, `norm` (and `pos_embed` without RoPE) at the top of their state dict.
    """

    def _build_encoder(self, config: VJEPA2AreaConfig) -> None:
        beyond = [i for i in config.area_layers if i >= config.depth]
        if beyond:  # e.g. `config.num_hidden_layers = 4` after the default area layers were derived for 24 blocks
            raise ValueError(
                f"area_layers {beyond} lie beyond the encoder's {config.depth} blocks: they were set for another "
                "depth; after changing depth (num_hidden_layers) set area_layers again, e.g. to parse_area_layers(None, depth)"
            )
        self.patch_embed = PatchEmbed(config)
        if not config.use_rope:
            grid = config.grid_size if config.num_frames > 1 else config.grid_size[1:]
            self.register_buffer("pos_embed", torch.zeros(1, math.prod(grid), config.embed_dim))
        else:
            self.pos_embed = None
        rates = torch.linspace(0, config.drop_path_rate, config.depth, device="cpu").tolist()  # works under a meta device
        self.blocks = nn.ModuleList([Block(config, i, rates[i]) for i in range(config.depth)])
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)

    def _fill_pos_embed(self) -> None:
        """Frozen sincos table; also called after loading, since it is a function of the config."""
        config = self.config
        if self.pos_embed is None:
            return
        if config.num_frames > 1:
            table = sincos_3d(config.embed_dim, config.grid_size, config.uniform_power)
        else:
            table = sincos_2d(config.embed_dim, config.grid_size[1:])
        init.copy_(self.pos_embed, table.unsqueeze(0).to(self.pos_embed.device, self.pos_embed.dtype))

    def _input_grid(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        config = self.config
        if x.ndim not in (4, 5):
            raise ValueError(
                f"expected video [B, C, T, H, W] or image [B, C, H, W] pixels, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != config.in_chans:
            raise ValueError(
                f"expected {config.in_chans} channels at dim 1 (layout [B, C, T, H, W]), got shape {tuple(x.shape)}; "
                "transformers inputs `pixel_values_videos` are [B, T, C, H, W]"
            )
        height, width = x.shape[-2:]
        p = config.patch_size
        if height % p or width % p:
            raise ValueError(f"height and width ({height}, {width}) must be multiples of patch_size {p}")
        if config.num_frames == 1:  # image model
            if x.ndim == 5:
                raise ValueError("this is an image model (num_frames=1): pass [B, C, H, W] pixels")
            return x, (1, height // p, width // p)
        if x.ndim == 4:
            x = x.unsqueeze(2)
        frames = x.shape[2]
        if frames < config.tubelet_size:  # an image or too-short clip: repeat to one tubelet
            x = x.repeat(1, 1, math.ceil(config.tubelet_size / frames), 1, 1)[:, :, : config.tubelet_size]
            frames = config.tubelet_size
        if frames % config.tubelet_size:
            raise ValueError(f"the number of frames ({frames}) must be a multiple of tubelet_size {config.tubelet_size}")
        return x, (frames // config.tubelet_size, height // p, width // p)

    def _embed(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        tokens = self.patch_embed(x.to(self.patch_embed.proj.weight.dtype))
        if self.pos_embed is not None:
            config = self.config
            if config.num_frames > 1 and grid[1:] == config.grid_size[1:] and grid[0] < config.grid_size[0]:
                # Fewer frames at the configured size: the first frames' rows, as the released code does.
                table = self.pos_embed[:, : math.prod(grid)]
            elif config.num_frames > 1:
                table = interpolate_pos_embed(self.pos_embed, config.grid_size, grid)
            else:
                table = interpolate_pos_embed(self.pos_embed, config.grid_size[1:], grid[1:])
            tokens = tokens + table.to(tokens.dtype)
        return tokens

    def _prepare_tokens(self, x: torch.Tensor, masks=None, area_kernel: str | None = None, sort: bool = True):
        """Everything computed once per forward, before the blocks.

        Returns `(tokens, rope, plan, restore, grid)`: the embedded (visible, area-sorted) tokens, the RoPE
        tables, the area plan, a function that puts tokens back in the caller's order, and the input's
        token grid (t, h, w).
        """
        config = self.config
        if area_kernel is not None and area_kernel not in AREA_KERNELS:
            raise ValueError(
                f"area_kernel must be one of {AREA_KERNELS} (or None for config.area_kernel), got {area_kernel!r}"
            )
        x, grid = self._input_grid(x)
        tokens = self._embed(x, grid)
        batch, num_tokens, _ = tokens.shape

        # Once per forward: visible ids, positions, RoPE tables, the area partition and its sort.
        ids = normalize_masks(masks, batch, num_tokens)
        if ids is None:
            ids = torch.arange(num_tokens, device=tokens.device).unsqueeze(0)
        else:
            if ids.shape[0] != batch:  # several mask sets: one copy of the tokens per set
                tokens = tokens.repeat(ids.shape[0] // batch, 1, 1)
            tokens = tokens.gather(
                1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
            )
        tokens, rope, plan, restore = arrange_tokens(
            tokens, ids, grid, config, area_kernel, masked=masks is not None, sort=sort
        )
        return tokens, rope, plan, restore, grid

    def encode(
        self,
        x: torch.Tensor,
        masks=None,
        out_layers: Sequence[int] | None = None,
        output_hidden_states: bool = False,
        area_kernel: str | None = None,
        output_attentions: bool = False,
    ) -> EncoderOutput:
        """Pixels [B, C, T, H, W] (or [B, C, H, W]) -> tokens, optionally only the visible ones.

        Attention runs SDPA and the area kernels unless `config._attn_implementation` is "eager" or
        `output_attentions` asks for the weights, which only the eager path computes.
        """
        eager = output_attentions or getattr(self.config, "_attn_implementation", None) == "eager"
        tokens, rope, plan, restore, _ = self._prepare_tokens(x, masks, area_kernel, sort=not eager)

        out_layers = set(out_layers) if out_layers is not None else set()
        bad = [i for i in out_layers if not 0 <= i < len(self.blocks)]
        if bad:
            raise ValueError(f"out_layers {sorted(bad)} out of range: the encoder has blocks 0..{len(self.blocks) - 1}")
        # Hidden states are returned as computed, in the caller's order, so that they belong to the autograd
        # graph as transformers' do: on area-sorted tokens each one is unsorted and the next block reads it
        # sorted again (two gathers per block, only when hidden states are asked for).
        resort = output_hidden_states and plan is not None and not eager

        def keep(t: torch.Tensor) -> torch.Tensor:
            if not resort:
                hidden_states.append(t)
                return t
            hidden_states.append(restore(t))
            index = plan.order.to(t.device)
            return hidden_states[-1].gather(1, index.expand(t.shape[0], -1).unsqueeze(-1).expand_as(t))

        hidden_states = [] if output_hidden_states else None
        if output_hidden_states:
            tokens = keep(tokens)
        attentions = [] if output_attentions else None
        intermediates = []
        for i, block in enumerate(self.blocks):
            if output_attentions:
                tokens, weights = block(tokens, rope, plan, eager, True)
                attentions.append(weights)
            else:
                tokens = block(tokens, rope, plan, eager)
            if hidden_states is not None:
                tokens = keep(tokens)
            if i in out_layers:
                intermediates.append(self.norm(tokens))
        tokens = self.norm(tokens)
        return EncoderOutput(
            last_hidden_state=restore(tokens),
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
            intermediate_states=tuple(restore(h) for h in intermediates) if out_layers else None,
        )


# ----------------------------------------------------------------------------------------------
# transformers classes
# ----------------------------------------------------------------------------------------------


# Written into config.json so that a saved folder carries its own code (files copied flat beside it).
AUTO_MAP = {
    "AutoConfig": "configuration_vjepa2_area.VJEPA2AreaConfig",
    "AutoModel": "modeling_vjepa2_area.VJEPA2AreaModel",
    "AutoModelForVideoClassification": "modeling_vjepa2_area.VJEPA2AreaForVideoClassification",
}


class VJEPA2AreaPreTrainedModel(PreTrainedModel):
    config_class = VJEPA2AreaConfig
    config: VJEPA2AreaConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values_videos"
    input_modalities = "video"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block", "PoolerBlock", "CrossAttentionBlock"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module, std=self.config.init_std)
        if isinstance(module, VJEPA2AreaEncoderMixin):
            module._fill_pos_embed()

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        # "sdpa" (default): torch SDPA in global layers, config.area_kernel's kernel in area layers. "eager":
        # explicit softmax weights in every layer (what `output_attentions` returns). Flash/flex requests
        # would not reach the area kernels, so they are refused rather than ignored.
        implementation = super().get_correct_attn_implementation(requested_attention, is_init_check)
        if implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"{type(self).__name__} supports attn_implementation 'sdpa' (global layers use torch SDPA, area "
                f"layers the kernel chosen by config.area_kernel) or 'eager'; got {requested_attention!r}"
            )
        return implementation

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # transformers guesses from the module's source; the encoder reads config._attn_implementation at
        # every forward, so switching with `set_attn_implementation` takes effect at once.
        return True

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`save_pretrained` that always writes the full `auto_map` (config, encoder and classifier), so the
        folder loads with `trust_remote_code=True` through any of the auto classes."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)


class VJEPA2AreaModel(VJEPA2AreaEncoderMixin, VJEPA2AreaPreTrainedModel):
    """The encoder. Input `pixel_values_videos` [B, T, C, H, W] like transformers' V-JEPA 2."""

    # A classifier checkpoint (encoder keys + `head.*`) loads into the encoder without noise.
    _keys_to_ignore_on_load_unexpected = [r"^head\."]

    def __init__(self, config: VJEPA2AreaConfig):
        super().__init__(config)
        self._build_encoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The patch projection (Conv3d, or Conv2d for an image model): its output is the token embedding that
        `enable_input_require_grads` hooks."""
        return self.patch_embed.proj

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        masks: torch.Tensor | list[torch.Tensor] | None = None,
        out_layers: Sequence[int] | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        area_kernel: str | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> VJEPA2AreaModelOutput | tuple:
        r"""
        masks (`torch.LongTensor` [B, K] or a list of them): ids of the visible tokens (V-JEPA 2 convention;
            a list is concatenated on the batch dim). Outputs keep the ids' order.
        out_layers (`list[int]`): also return the normed outputs of these blocks as `intermediate_states`.
        area_kernel (`str`): override `config.area_kernel` for this call.
        output_attentions (`bool`): also return each block's attention weights (computed eagerly for this
            call whatever `attn_implementation` is).
        """
        if kwargs:
            raise TypeError(f"VJEPA2AreaModel.forward got unexpected arguments: {sorted(kwargs)}")
        if pixel_values_videos is None:
            raise ValueError("pixel_values_videos is required: a [B, T, C, H, W] float tensor")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if return_dict is None:
            return_dict = self.config.return_dict
        pixels = pixel_values_videos
        if pixels.ndim == 5:
            if pixels.shape[2] != self.config.in_chans:  # checked here: the encoder would report the transposed shape
                raise ValueError(
                    f"pixel_values_videos must be [B, T, C, H, W] with C = {self.config.in_chans}, got shape "
                    f"{tuple(pixels.shape)}; for [B, C, T, H, W] tensors (timm layout) call `model.encode(pixels)`"
                )
            pixels = pixels.transpose(1, 2)  # [B, T, C, H, W] -> [B, C, T, H, W]
        out = self.encode(pixels, masks, out_layers, output_hidden_states, area_kernel, output_attentions)
        return out if return_dict else out.to_tuple()


class VJEPA2AreaForVideoClassification(VJEPA2AreaPreTrainedModel):
    """Encoder + V-JEPA 2 attentive probe (`head.pooler.*`, `head.linear.*`).

    The probe reads the last block's tokens, or with `config.probe_out_layers` the tokens of those
    blocks (each through the final norm) concatenated along the token axis, block by block.
    """

    # The loss is a per-video mean: Trainer scales it for gradient accumulation itself and passes no
    # `num_items_in_batch` (which `forward` would refuse as an unexpected argument).
    accepts_loss_kwargs = False

    def __init__(self, config: VJEPA2AreaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder = VJEPA2AreaModel(config)
        self.head = AttentiveClassifier(
            config.embed_dim,
            config.num_labels,
            num_heads=config.probe_num_heads,
            depth=config.probe_depth,
            mlp_ratio=4.0,
            eps=config.probe_layer_norm_eps,
        )
        self.post_init()

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        labels: torch.Tensor | None = None,
        masks=None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        if kwargs:
            raise TypeError(f"VJEPA2AreaForVideoClassification.forward got unexpected arguments: {sorted(kwargs)}")
        if return_dict is None:
            return_dict = self.config.return_dict
        out_layers = self.config.probe_out_layers
        outputs = self.encoder(
            pixel_values_videos,
            masks=masks,
            out_layers=out_layers,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        tokens = outputs.last_hidden_state if out_layers is None else torch.cat(outputs.intermediate_states, dim=1)
        logits = self.head(tokens)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        result = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return result if return_dict else result.to_tuple()


# `save_pretrained` copies this file and its sibling imports into the folder (remote code).
VJEPA2AreaModel.register_for_auto_class("AutoModel")
VJEPA2AreaForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")

__all__ = [
    "AUTO_MAP",
    "VJEPA2AreaPreTrainedModel",
    "VJEPA2AreaModel",
    "VJEPA2AreaForVideoClassification",
    "VJEPA2AreaEncoderMixin",
    "AttentiveClassifier",
    "AttentivePooler",
    "EncoderOutput",
    "VJEPA2AreaModelOutput",
    "init_weights",
    "arrange_tokens",
    "set_blocks_checkpointing",
]
