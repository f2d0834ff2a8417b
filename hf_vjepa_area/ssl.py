"""V-JEPA 2 self-supervised training pieces: the step's loss, EMA, optimizer and schedules (the models come
from `sources.load_ssl_models`).

One step, as in Meta's `app/vjepa/train.py`:
  targets = layer_norm(target_encoder(clips))            all tokens, no grad, non-affine norm
  for each mask config: z = encoder(clips, context ids); p = predictor(z, context ids, target ids)
                        loss_i = mean |p - targets[target ids]|
  loss = mean_i loss_i;  backward;  AdamW step;  target_encoder <- EMA of encoder
No run management here (the example script owns arguments, logging, checkpoints). Autocast, devices
and process groups are the caller's: nothing here assumes a device or a dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .modeling import VJEPA2AreaModel
from .modeling.modeling_vjepa2_area import set_blocks_checkpointing
from .modeling.predictor_vjepa2_area import VJEPA2AreaPredictor


# ----------------------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def target_tokens(target_encoder: VJEPA2AreaModel, clips: torch.Tensor) -> torch.Tensor:
    """What the predictor regresses: the target encoder's tokens for the whole clip [B, C, T, H, W],
    layer-normed again without affine parameters (on top of the encoder's own final norm)."""
    tokens = target_encoder(clips.transpose(1, 2)).last_hidden_state  # the model takes [B, T, C, H, W]
    # at least float32 under any autocast, as on CUDA; float64 stays float64
    return F.layer_norm(tokens.to(torch.promote_types(tokens.dtype, torch.float32)), tokens.shape[-1:])


class SSLLoss(NamedTuple):
    loss: torch.Tensor  # mean over the mask configs
    per_config: list[torch.Tensor]  # one L1 loss per mask config, for logging


class JEPA(nn.Module):
    """The trained part: context encoder + predictor. Wrap this one module with DDP / FSDP; the target
    encoder stays outside (no gradients) and is updated by `ema_update`.

    Only mask token `mask_index` takes part (Meta's training uses 0 for single-length clips), so the
    others are frozen here: AdamW would not touch them anyway (no gradient), and DDP needs every trained
    parameter to receive one.
    """

    def __init__(self, encoder: VJEPA2AreaModel, predictor: VJEPA2AreaPredictor, mask_index: int = 0):
        super().__init__()
        if not 0 <= mask_index < len(predictor.mask_tokens):
            raise ValueError(f"mask_index {mask_index} out of range: the predictor has {len(predictor.mask_tokens)} mask tokens")
        self.encoder = encoder
        self.predictor = predictor
        self.mask_index = mask_index
        for i, token in enumerate(predictor.mask_tokens):
            token.requires_grad_(i == mask_index)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every encoder and predictor block."""
        set_blocks_checkpointing(self.encoder.blocks, enable)
        set_blocks_checkpointing(self.predictor.predictor_blocks, enable)

    def forward(self, clips: torch.Tensor, masks_context: list[torch.Tensor], masks_target: list[torch.Tensor],
                targets: torch.Tensor) -> SSLLoss:
        """clips: normalized float [B, C, T, H, W]; masks: one [B, K] id tensor per mask config (from
        `MultiBlockMaskCollator`); targets: `target_tokens(target_encoder, clips)`."""
        if clips.ndim != 5:
            raise ValueError(f"clips must be [B, C, T, H, W], got shape {tuple(clips.shape)}")
        config = self.encoder.config
        grid = (clips.shape[2] // config.tubelet_size, clips.shape[3] // config.patch_size,
                clips.shape[4] // config.patch_size)
        losses = []
        for context_ids, target_ids in zip(masks_context, masks_target, strict=True):
            context = self.encoder(clips.transpose(1, 2), masks=context_ids).last_hidden_state
            prediction = self.predictor(context, context_ids, target_ids, grid, mask_index=self.mask_index)
            target = targets.gather(1, target_ids.unsqueeze(-1).expand(-1, -1, targets.shape[-1]))
            losses.append((prediction.to(torch.promote_types(prediction.dtype, torch.float32)) - target).abs().mean())
        return SSLLoss(torch.stack(losses).mean(), losses)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, over all parameters in one fused pass.
    Call it after the optimizer step."""
    target_params, online_params = list(target.parameters()), list(online.parameters())
    if [p.shape for p in target_params] != [p.shape for p in online_params]:
        raise ValueError("ema_update: target and online models must have the same parameters (shapes, order)")
    torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)


# ----------------------------------------------------------------------------------------------
# Optimizer and schedules
# ----------------------------------------------------------------------------------------------


def param_groups(model: nn.Module, weight_decay: float = 0.04) -> list[dict]:
    """AdamW groups as V-JEPA 2: biases and other 1-D parameters (norms) without weight decay; the rest,
    mask tokens included, with it. Frozen parameters are left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.04, betas=(0.9, 0.999), eps: float = 1e-8):
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


def learning_rate(step: int, total_steps: int, lr: float, final_lr: float = 0.0, warmup_steps: int = 0,
                  start_lr: float = 0.0, decay: str = "linear") -> float:
    """Learning rate of optimizer step `step` (from 0) of `total_steps`.

    Warmup from `start_lr` to `lr` over `warmup_steps`, then `decay` ("linear": V-JEPA 2's anneal, or
    "cosine": its pretraining) to `final_lr` at the last step. As in Meta's schedulers, the value for step
    i is the one their scheduler returns on its (i + 1)-th call, made before that step. Unlike Meta's
    anneal (whose horizon is 1.25x the steps run), the decay ends at the run's last step.
    """
    if decay not in ("linear", "cosine"):
        raise ValueError(f"decay must be 'linear' or 'cosine', got {decay!r}")
    n = step + 1
    if n < warmup_steps:
        return start_lr + n / warmup_steps * (lr - start_lr)
    progress = min(1.0, (n - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "linear":
        return lr + progress * (final_lr - lr)
    return final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_momentum(step: int, total_steps: int, ema: tuple[float, float] = (0.99925, 0.99925)) -> float:
    """EMA momentum after optimizer step `step` (from 0): linear from ema[0] to ema[1] over the run."""
    return ema[0] + step * (ema[1] - ema[0]) / max(1, total_steps)


__all__ = [
    "JEPA",
    "SSLLoss",
    "target_tokens",
    "ema_update",
    "param_groups",
    "make_optimizer",
    "learning_rate",
    "ema_momentum",
]
