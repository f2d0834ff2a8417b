"""V-JEPA 2-AC's action-conditioned predictor: the world model that predicts the next frame's encoder
tokens from the frames so far and the robot's actions and states.

Self-contained (torch + transformers, sibling-relative imports only). Key names are Meta's
(`predictor_embed`, `action_encoder`, `state_encoder`, `extrinsics_encoder`, `predictor_blocks.{i}.*`,
`predictor_norm`, `predictor_proj`), so the `predictor` entry of `vjepa2-ac-vitg.pt` loads by prefix
stripping.

Each frame's tokens are laid out as `[action, state, (extrinsics), patch tokens of the frame]`; attention
is frame-causal (a token sees every token of its own frame and of earlier frames). RoPE as Meta's AC
blocks apply it: patch tokens rotate by (frame, row, column), with rows and columns rescaled onto the
configured grid (`pos * grid_height / H` for rows and `pos * grid_height / W` for columns, as Meta's
`ACRoPEAttention` does); the conditioning tokens rotate only their depth slice, by their frame index.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig

from .modeling_vjepa2_area import MLP, DropPath, SwiGLU, init_weights, mark_residual_output, set_blocks_checkpointing
from .rope import RopeTables, apply_rope, build_rope_tables, rope_axis_dim

# Files of a converted folder holding the AC predictor (Meta's key names; its sizes in config.json).
AC_PREDICTOR_WEIGHTS_NAME = "ac_predictor.safetensors"
AC_PREDICTOR_CONFIG_KEY = "ac_predictor"  # the key of config.json holding the AC predictor's config

# The released V-JEPA 2-AC predictor (`vjepa2-ac-vitg.pt`; `configs/train/vitg16/droid-256px-8f.yaml`):
# its head count is the one size its tensors do not store, read by predictor width.
RELEASED_AC_PREDICTOR_HEADS: dict[int, int] = {1024: 16}


class VJEPA2ACPredictorConfig(PreTrainedConfig):
    r"""
    Sizes of the action-conditioned predictor. Defaults are the released ViT-g V-JEPA 2-AC predictor.

    embed_dim (`int`): width of the encoder tokens it reads and predicts (ViT-g: 1408).
    predictor_embed_dim, depth, num_heads, mlp_ratio: the predictor's transformer.
    action_embed_dim (`int`): size of an action and of a state (7: end-effector xyz, euler angles, gripper);
        extrinsics have `action_embed_dim - 1` values.
    use_extrinsics (`bool`): add a camera-extrinsics token per frame (the released model does not).
    is_frame_causal (`bool`): frame-causal attention (the released model) or full attention.
    img_size, patch_size: the frame size the predictor was trained at; its token grid is the grid RoPE
        positions are rescaled onto for other frame sizes.
    """

    model_type = "vjepa2_ac_predictor"

    embed_dim: int = 1408
    predictor_embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    action_embed_dim: int = 7
    use_extrinsics: bool = False
    is_frame_causal: bool = True
    img_size: int | list[int] | tuple[int, int] = 256
    patch_size: int = 16
    qkv_bias: bool = True
    use_silu: bool = False
    wide_silu: bool = True
    rope_interleave: bool = False
    layer_norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    init_std: float = 0.02

    def __post_init__(self, **kwargs):
        size = self.img_size
        self.img_size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
        for name in ("embed_dim", "predictor_embed_dim", "depth", "num_heads", "action_embed_dim", "patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.action_embed_dim < 2:
            raise ValueError(
                f"action_embed_dim must be at least 2 (extrinsics have action_embed_dim - 1 values), got {self.action_embed_dim}"
            )
        if self.predictor_embed_dim % self.num_heads:
            raise ValueError(f"predictor_embed_dim ({self.predictor_embed_dim}) must be divisible by num_heads ({self.num_heads})")
        head_dim = self.predictor_embed_dim // self.num_heads
        if rope_axis_dim(head_dim) == 0 or head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim of at least 6, got {head_dim} (predictor_embed_dim / num_heads)")
        if len(self.img_size) != 2 or any(s % self.patch_size or s < self.patch_size for s in self.img_size):
            raise ValueError(f"img_size {self.img_size} must be two multiples of patch_size {self.patch_size}")
        super().__post_init__(**kwargs)

    def hyperparameters(self) -> dict:
        """The fields above, as written under `ac_predictor` in a converted folder's config.json."""
        return {name: getattr(self, name) for name in VJEPA2ACPredictorConfig.__annotations__}

    @property
    def grid_size(self) -> tuple[int, int]:
        """The configured frame's token grid (height, width)."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size


def ac_token_positions(frames: int, grid: tuple[int, int], ref_height: int, num_cond: int) -> torch.Tensor:
    """(t, h, w) RoPE positions [frames * (num_cond + H*W), 3], float64, in the predictor's token order.

    Conditioning tokens sit at (t, 0, 0): a zero angle leaves the height and width slices unrotated, so
    only their depth slice turns, as in Meta's AC attention. Patch rows and columns are rescaled by
    `ref_height / H` and `ref_height / W` (Meta snaps both onto its configured grid height).
    """
    height, width = grid
    t = torch.arange(frames, dtype=torch.float64)
    rows = torch.arange(height, dtype=torch.float64) * (ref_height / height)
    cols = torch.arange(width, dtype=torch.float64) * (ref_height / width)
    patch = torch.stack(torch.meshgrid(t, rows, cols, indexing="ij"), dim=-1).reshape(frames, height * width, 3)
    cond = torch.zeros(frames, num_cond, 3, dtype=torch.float64)
    cond[..., 0] = t.unsqueeze(-1)
    return torch.cat([cond, patch], dim=1).reshape(-1, 3)


def frame_causal_mask(frames: int, tokens_per_frame: int, device=None) -> torch.Tensor:
    """Boolean [K, K], True where attention is allowed: a token sees its own and all earlier frames."""
    frame = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)
    return frame.unsqueeze(1) >= frame.unsqueeze(0)


class ACAttention(nn.Module):
    """Fused-qkv attention with precomputed RoPE tables and an optional boolean attention mask."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RopeTables, attn_mask: torch.Tensor | None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, -1)
        q, k = apply_rope(qkv[:, :, :2].flatten(2, 3), rope).unflatten(2, (2, self.num_heads)).unbind(2)
        v = qkv[:, :, 2]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class ACBlock(nn.Module):
    """Pre-norm block: `x + attn(norm1 x)`, `x + mlp(norm2 x)`, with drop path."""

    def __init__(self, config: VJEPA2ACPredictorConfig, layer_id: int, drop_path_rate: float = 0.0):
        super().__init__()
        dim = config.predictor_embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = ACAttention(dim, config.num_heads, qkv_bias=config.qkv_bias)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        hidden = int(dim * config.mlp_ratio)
        self.mlp = SwiGLU(dim, hidden, wide_silu=config.wide_silu) if config.use_silu else MLP(dim, hidden)
        mark_residual_output(self.attn.proj, layer_id + 1)
        mark_residual_output(self.mlp.fc2, layer_id + 1)
        self.gradient_checkpointing = False

    def _forward(self, x: torch.Tensor, rope: RopeTables, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), rope, attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor, rope: RopeTables, attn_mask: torch.Tensor | None) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(self._forward, x, rope, attn_mask)
        return self._forward(x, rope, attn_mask)


class VJEPA2ACPredictor(nn.Module):
    """Encoder tokens of T frames, with an action, a state (and extrinsics) per frame -> the predicted
    encoder tokens of the frames that follow each of them (output frame t predicts input frame t + 1)."""

    def __init__(self, config: VJEPA2ACPredictorConfig):
        super().__init__()
        self.config = config
        width, action_dim = config.predictor_embed_dim, config.action_embed_dim
        self.predictor_embed = nn.Linear(config.embed_dim, width)
        self.action_encoder = nn.Linear(action_dim, width)
        self.state_encoder = nn.Linear(action_dim, width)
        # Present in the released file whether or not extrinsics are used.
        self.extrinsics_encoder = nn.Linear(action_dim - 1, width)
        rates = torch.linspace(0, config.drop_path_rate, config.depth, device="cpu").tolist()
        self.predictor_blocks = nn.ModuleList([ACBlock(config, i, rates[i]) for i in range(config.depth)])
        self.predictor_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.predictor_proj = nn.Linear(width, config.embed_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """The released init: trunc normal (init_std), zero biases, depth-scaled residual outputs."""
        self.apply(functools.partial(init_weights, std=self.config.init_std))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        set_blocks_checkpointing(self.predictor_blocks, enable)

    def forward(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        states: torch.Tensor,
        extrinsics: torch.Tensor | None = None,
        grid: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """tokens [B, T*H*W, embed_dim] (frame-major, raster order), actions and states [B, T, action_embed_dim],
        extrinsics [B, T, action_embed_dim - 1] when `use_extrinsics` -> predictions [B, T*H*W, embed_dim].
        `grid` is the frames' token grid (H, W), by default the configured one."""
        config = self.config
        height, width = grid or config.grid_size
        per_frame = height * width
        batch, num_tokens, _ = tokens.shape
        if num_tokens % per_frame:
            raise ValueError(f"tokens [B, {num_tokens}, D] are not whole frames of the {height}x{width} grid ({per_frame} tokens each)")
        frames = num_tokens // per_frame
        conditions = {"actions": actions, "states": states}
        if config.use_extrinsics:
            if extrinsics is None:
                raise ValueError("this predictor uses extrinsics (use_extrinsics=True): pass extrinsics [B, T, action_embed_dim - 1]")
            conditions["extrinsics"] = extrinsics
        elif extrinsics is not None:
            raise ValueError("this predictor has use_extrinsics=False: pass extrinsics=None")
        for name, value in conditions.items():
            size = config.action_embed_dim - (name == "extrinsics")
            if value.shape != (batch, frames, size):
                raise ValueError(f"{name} must be [B, T, {size}] = {[batch, frames, size]} for {frames} frames, got {list(value.shape)}")

        x = self.predictor_embed(tokens).view(batch, frames, per_frame, -1)
        cond = [self.action_encoder(actions), self.state_encoder(states)]
        if config.use_extrinsics:
            cond.append(self.extrinsics_encoder(extrinsics))
        num_cond = len(cond)
        x = torch.cat([torch.stack(cond, dim=2).to(x.dtype), x], dim=2).flatten(1, 2)

        positions = ac_token_positions(frames, (height, width), config.grid_size[0], num_cond).to(x.device)
        rope = build_rope_tables(positions.unsqueeze(0), x.shape[-1] // config.num_heads, config.rope_interleave, dtype=x.dtype)
        attn_mask = frame_causal_mask(frames, num_cond + per_frame, x.device) if config.is_frame_causal else None
        for block in self.predictor_blocks:
            x = block(x, rope, attn_mask)

        x = x.view(batch, frames, num_cond + per_frame, -1)[:, :, num_cond:].flatten(1, 2)
        return self.predictor_proj(self.predictor_norm(x))


__all__ = [
    "VJEPA2ACPredictor",
    "VJEPA2ACPredictorConfig",
    "AC_PREDICTOR_WEIGHTS_NAME",
    "AC_PREDICTOR_CONFIG_KEY",
    "RELEASED_AC_PREDICTOR_HEADS",
    "ac_token_positions",
    "frame_causal_mask",
]
