"""V-JEPA 2's predictor: from the context tokens, predict the encoder's tokens at the target ids.

Self-contained (torch + transformers, sibling-relative imports only), like the encoder. Key names are
Meta's (`predictor_embed`, `mask_tokens.{i}`, `predictor_blocks.{i}.*`, `predictor_norm`, `predictor_proj`),
so a released `.pt`'s predictor loads by prefix stripping. The blocks are the encoder's (`Block`), built
at the predictor's width; positions come from the token ids on the input's actual (t, h, w) grid, where
Meta's code assumes a square crop.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .configuration_vjepa2_area import VJEPA2AreaConfig
from .modeling_vjepa2_area import Block, arrange_tokens, init_weights, normalize_masks, set_blocks_checkpointing

# Files of a converted folder beside config.json / model.safetensors (the encoder).
PREDICTOR_WEIGHTS_NAME = "predictor.safetensors"
CONTEXT_ENCODER_WEIGHTS_NAME = "context_encoder.safetensors"


# The predictor's blocks are the encoder's `Block`s, built from a config with the encoder's grid, RoPE and
# area settings and the predictor's sizes and area fields.
_ENCODER_FIELDS = ("img_size", "patch_size", "num_frames", "tubelet_size", "rope_interleave", "layer_norm_eps",
                   "drop_path_rate", "init_std", "area_residual_scale", "area_kernel")
_PREDICTOR_FIELDS = {name: f"predictor_{name}" for name in ("embed_dim", "depth", "num_heads", "mlp_ratio",
                                                            "area_splits", "area_layers")}


def predictor_block_config(config: VJEPA2AreaConfig) -> VJEPA2AreaConfig:
    """The config the predictor's blocks and token plan read. The released predictor is a GELU MLP with
    qkv bias whatever the encoder uses."""
    fields = {name: getattr(config, name) for name in _ENCODER_FIELDS}
    fields.update({name: getattr(config, source) for name, source in _PREDICTOR_FIELDS.items()})
    return VJEPA2AreaConfig(**fields, qkv_bias=True, use_rope=True, use_silu=False)


class VJEPA2AreaPredictor(nn.Module):
    """`predictor_embed` -> mask tokens appended at the target ids -> RoPE blocks over context and targets
    sorted by id -> `predictor_norm` -> targets in the caller's order -> `predictor_proj`."""

    def __init__(self, config: VJEPA2AreaConfig):
        super().__init__()
        self.config = config
        self.block_config = block_config = predictor_block_config(config)
        width = config.predictor_embed_dim
        self.predictor_embed = nn.Linear(config.embed_dim, width)
        # Zero-init as released; one per (mask config x frame-count group) in Meta's training.
        self.mask_tokens = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, 1, width)) for _ in range(config.predictor_num_mask_tokens)]
        )
        rates = torch.linspace(0, config.drop_path_rate, config.predictor_depth, device="cpu").tolist()
        self.predictor_blocks = nn.ModuleList([Block(block_config, i, rates[i]) for i in range(config.predictor_depth)])
        self.predictor_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.predictor_proj = nn.Linear(width, config.embed_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """The released init: trunc normal (init_std) with depth-scaled residual outputs; zero mask tokens."""
        self.apply(functools.partial(init_weights, std=self.config.init_std))
        for token in self.mask_tokens:
            nn.init.zeros_(token)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        set_blocks_checkpointing(self.predictor_blocks, enable)

    def forward(
        self,
        context: torch.Tensor,
        context_ids: torch.Tensor,
        target_ids: torch.Tensor,
        grid: tuple[int, int, int],
        mask_index: int = 0,
        area_kernel: str | None = None,
    ) -> torch.Tensor:
        """context [B, Kc, D] (the encoder's tokens at `context_ids` [B, Kc]) -> predictions [B, Kt, D] at
        `target_ids` [B, Kt], in that order. `grid` is the clip's token grid (t, h, w). `mask_index` picks
        the mask token: Meta's training uses 0 for the released configs, transformers' `VJEPA2Predictor` 1.
        """
        batch, num_context, _ = context.shape
        if not 0 <= mask_index < len(self.mask_tokens):
            raise ValueError(f"mask_index {mask_index} out of range: this predictor has {len(self.mask_tokens)} mask tokens")
        if context_ids.shape != (batch, num_context):
            raise ValueError(
                f"context_ids must be [B, Kc] = {[batch, num_context]} to match context {list(context.shape)}, "
                f"got {list(context_ids.shape)}"
            )
        num_tokens = grid[0] * grid[1] * grid[2]
        checked = []
        for name, token_ids in (("context_ids", context_ids), ("target_ids", target_ids)):
            try:
                checked.append(normalize_masks(token_ids, batch, num_tokens))
            except ValueError as error:
                raise ValueError(f"{name}: {error} (grid {tuple(grid)})") from None
        ids = torch.cat(checked, dim=1)

        x = self.predictor_embed(context)
        # Under autocast the embedded context is bf16 and the mask tokens fp32: the concatenation (and the
        # residual stream through the blocks) is fp32, as in Meta's predictor.
        targets = self.mask_tokens[mask_index].expand(batch, target_ids.shape[1], -1)
        x = torch.cat([x, targets], dim=1)
        # Context and targets sorted together by id, as Meta's predictor runs them.
        order = ids.argsort(dim=1)
        ids = ids.gather(1, order)
        x = x.gather(1, order.unsqueeze(-1).expand_as(x))

        x, rope, plan, restore = arrange_tokens(x, ids, grid, self.block_config, area_kernel, masked=True)
        for block in self.predictor_blocks:
            x = block(x, rope, plan)
        x = restore(self.predictor_norm(x))

        # Where each target landed in the sorted sequence: the inverse permutation, read at the targets.
        where = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        where = where[:, num_context:]
        x = x.gather(1, where.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return self.predictor_proj(x)


__all__ = ["VJEPA2AreaPredictor", "PREDICTOR_WEIGHTS_NAME", "CONTEXT_ENCODER_WEIGHTS_NAME", "predictor_block_config"]
