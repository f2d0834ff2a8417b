"""V-JEPA 2-AC post-training: the step, the DROID recipe's settings and its learning-rate schedule.

One step, as in Meta's `app/vjepa_droid/train.py`:
  h = layer_norm(encoder(each frame alone))                 frozen encoder, no grad
  teacher forcing: z_tf = predict(h[:, :-1], actions, states[:, :-1])      frames 1..T-1
  rollout: z = [h_0, z_tf_0]; for n in 1..auto_steps-1: z += predict(z, actions[:, :n+1], states[:, :n+1])[last]
  loss = mean|z_tf - h[:, 1:]|^p / p + mean|z[1:] - h[:, 1:1+auto_steps]|^p / p      (p = loss_exp = 1)
Only the predictor trains (AdamW, no decay on biases and 1-D parameters). No run management here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .world_model import WorldModel, predict


@dataclass(frozen=True)
class DroidRecipe:
    """`configs/train/vitg16/droid-256px-8f.yaml`: 8 frames at 4 fps, 256 px (a centre crop: the random
    resized crop's scale 1.777 never fits, so its fallback applies, aspect clamped to [0.75, 1.35]), batch 4
    per GPU, teacher forcing + 2 rollout steps, L1 on layer-normed targets, AdamW with lr 7.5e-5 -> 4.25e-4
    (15 warmup epochs), constant, then -> 0 over the last 15 epochs, weight decay 0.04, 315 epochs of 300
    iterations, bf16, activation checkpointing, seed 239."""

    frames: int = 8
    fps: float = 4.0
    crop_size: int = 256
    crop_scale: tuple[float, float] = (1.777, 1.777)
    crop_ratio: tuple[float, float] = (0.75, 1.35)
    batch_size: int = 4
    auto_steps: int = 2
    loss_exp: float = 1.0
    start_lr: float = 7.5e-5
    lr: float = 4.25e-4
    final_lr: float = 0.0
    warmup_epochs: int = 15
    anneal_epochs: int = 15
    epochs: int = 315
    iterations_per_epoch: int = 300
    weight_decay: float = 0.04
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    mixed_precision: str = "bf16"
    activation_checkpointing: bool = True
    seed: int = 239


def wsd_learning_rate(step: int, total_steps: int, lr: float, start_lr: float, warmup_steps: int, anneal_steps: int,
                      final_lr: float = 0.0) -> float:  # fmt: skip
    """Learning rate of optimizer step `step` (from 0): Meta's warmup-stable-decay schedule (linear warmup from
    `start_lr` to `lr`, constant, linear decay to `final_lr` over the last `anneal_steps`), the value its
    scheduler returns on its (step + 1)-th call, made before that step."""
    n = step + 1
    if n < warmup_steps:
        return start_lr + n / max(1, warmup_steps) * (lr - start_lr)
    stable_end = total_steps - anneal_steps
    if n < stable_end:
        return lr
    return lr + (n - stable_end) / max(1, anneal_steps) * (final_lr - lr)


class ACLoss(NamedTuple):
    loss: torch.Tensor  # teacher_forcing + rollout
    teacher_forcing: torch.Tensor
    rollout: torch.Tensor


@torch.no_grad()
def target_latents(world_model: WorldModel, clips: torch.Tensor) -> torch.Tensor:
    """The frozen encoder's normed latents [B, T, h, w, D] of clips [B, C, T, H, W], in float32."""
    return world_model.encode(clips).float()


def ac_loss(predictor: nn.Module, latents: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
            extrinsics: torch.Tensor | None = None, auto_steps: int = 2, loss_exp: float = 1.0) -> ACLoss:  # fmt: skip
    """The post-training loss of one batch: latents [B, T, h, w, D] (`target_latents`), actions [B, T-1, 7],
    states [B, T, 7] (extrinsics [B, T, 6] for a predictor that uses them). `predictor` may be DDP-wrapped."""
    num_frames = latents.shape[1]
    if actions.shape[1] != num_frames - 1 or states.shape[1] != num_frames:
        raise ValueError(f"{num_frames} frames need {num_frames - 1} actions and {num_frames} states, "
                         f"got {list(actions.shape)} and {list(states.shape)}")  # fmt: skip
    auto_steps = max(1, min(auto_steps, num_frames - 1))

    def distance(z: torch.Tensor, start: int) -> torch.Tensor:
        return (z - latents[:, start : start + z.shape[1]]).abs().pow(loss_exp).mean() / loss_exp

    def conditions(n):
        return actions[:, :n], states[:, :n], None if extrinsics is None else extrinsics[:, :n]

    z_tf = predict(predictor, latents[:, :-1], *conditions(num_frames - 1))
    z = torch.cat([latents[:, :1], z_tf[:, :1]], dim=1)
    for n in range(1, auto_steps):
        z = torch.cat([z, predict(predictor, z, *conditions(n + 1))[:, -1:]], dim=1)
    teacher_forcing, rollout = distance(z_tf, 1), distance(z[:, 1:], 1)
    return ACLoss(teacher_forcing + rollout, teacher_forcing, rollout)


__all__ = ["DroidRecipe", "ACLoss", "ac_loss", "target_latents", "wsd_learning_rate"]
