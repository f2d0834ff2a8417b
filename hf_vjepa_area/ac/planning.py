"""Planning with V-JEPA 2-AC: the cross-entropy method over action sequences, as Meta's `cem`
(`notebooks/utils/mpc_utils.py`) with the world-model wrapper's settings (`world_model_wrapper.py`).

Only the end-effector translation (3) and the gripper (1) are searched; the rotation deltas stay 0. Each
iteration samples `samples` sequences of `rollout` actions from a per-step Gaussian (translations clipped
to +-`max_translation`, gripper to +-`max_gripper`), scores them, and moves the mean and standard deviation
towards those of the `topk` best with momentum. The plan is the final mean, with gripper commands smaller
than `gripper_deadband` in magnitude set to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .world_model import WorldModel

ACTION_DIM = 7  # xyz delta, Euler-angle delta, gripper delta
SEARCHED = [0, 1, 2, 6]  # translation and gripper; the rotation deltas are not searched


@dataclass(frozen=True)
class CEMConfig:
    """Meta's planning settings (world-model wrapper's `mpc_args`; gripper momenta, clip and deadband from `cem`)."""

    rollout: int = 2
    samples: int = 400
    topk: int = 10
    cem_steps: int = 10
    momentum_mean: float = 0.15
    momentum_std: float = 0.15
    momentum_mean_gripper: float = 0.15
    momentum_std_gripper: float = 0.15
    max_translation: float = 0.05  # `maxnorm`: clip of the xyz deltas, and their initial standard deviation
    max_gripper: float = 0.75
    initial_gripper_std: float = 1.0
    gripper_deadband: float = 0.25

    def __post_init__(self):
        if not 0 < self.topk <= self.samples or self.topk < 2:
            raise ValueError(f"topk must be in [2, samples={self.samples}] (a standard deviation needs two), got {self.topk}")
        if self.rollout < 1 or self.cem_steps < 1:
            raise ValueError(f"rollout and cem_steps must be positive, got {self.rollout} and {self.cem_steps}")


def full_actions(searched: torch.Tensor) -> torch.Tensor:
    """[..., 4] (xyz, gripper) -> [..., 7] actions with zero rotation deltas."""
    out = searched.new_zeros(*searched.shape[:-1], ACTION_DIM)
    out[..., SEARCHED] = searched
    return out


def cem(energy: Callable[[torch.Tensor], torch.Tensor], config: CEMConfig = CEMConfig(), seed: int = 0,
        device: torch.device | str = "cpu", history: list | None = None) -> torch.Tensor:  # fmt: skip
    """Minimise `energy` (actions [S, rollout, 7] -> [S]) over action sequences; returns the plan [rollout, 7].

    Deterministic for a given seed (a private generator; the global RNG is untouched). `history`, if given,
    receives the (mean, std) of the searched dimensions after each iteration."""
    generator = torch.Generator(device=device).manual_seed(seed)
    momentum_mean = torch.tensor([config.momentum_mean] * 3 + [config.momentum_mean_gripper], device=device)
    momentum_std = torch.tensor([config.momentum_std] * 3 + [config.momentum_std_gripper], device=device)
    low = torch.tensor([-config.max_translation] * 3 + [-config.max_gripper], device=device)
    mean = torch.zeros(config.rollout, 4, device=device)
    std = torch.tensor([config.max_translation] * 3 + [config.initial_gripper_std], device=device).expand(config.rollout, 4)
    for _ in range(config.cem_steps):
        noise = torch.randn(config.samples, config.rollout, 4, generator=generator, device=device)
        samples = torch.maximum(torch.minimum(noise * std + mean, -low), low)
        scores = energy(full_actions(samples))
        best = samples[scores.topk(config.topk, largest=False).indices]
        mean = best.mean(0) * (1 - momentum_mean) + mean * momentum_mean
        std = best.std(0) * (1 - momentum_std) + std * momentum_std
        if history is not None:
            history.append((mean.clone(), std.clone()))
    plan = mean.clone()
    plan[:, 3] = torch.where(plan[:, 3].abs() < config.gripper_deadband, 0.0, plan[:, 3])
    return full_actions(plan)


def rollout_energy(world_model: WorldModel, latents: torch.Tensor, states: torch.Tensor, goal: torch.Tensor,
                   past_actions: torch.Tensor | None = None, chunk: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:  # fmt: skip
    """The planning energy of candidate sequences [S, K, 7]: roll the world model from the context (latents
    [1, Tc, h, w, D], states [1, Tc, 7], the Tc - 1 actions between context frames) and compare the last
    predicted frame with the goal's latents [h, w, D] (mean absolute difference). `chunk` bounds how many
    candidates run at once."""
    past = past_actions if past_actions is not None else latents.new_zeros(1, latents.shape[1] - 1, ACTION_DIM)

    @torch.no_grad()
    def energy(actions: torch.Tensor) -> torch.Tensor:
        out = []
        for part in actions.split(chunk or actions.shape[0]):
            sequence = torch.cat([past.expand(part.shape[0], -1, -1), part.to(latents.dtype)], dim=1)
            predicted, _ = world_model.rollout(latents, states, sequence)
            out.append(WorldModel.energy(predicted[:, -1], goal))
        return torch.cat(out)

    return energy


def plan_actions(world_model: WorldModel, frames: torch.Tensor, state: torch.Tensor, goal_frame: torch.Tensor,
                 config: CEMConfig = CEMConfig(), seed: int = 0, chunk: int | None = None) -> torch.Tensor:  # fmt: skip
    """The planned actions [rollout, 7] that take the scene in `frames` [1, C, T, H, W] (normalised pixels;
    the robot at `state` [7] in the last frame) towards `goal_frame` [1, C, 1, H, W]. Only the last context
    frame conditions the plan, as in Meta's planning."""
    with torch.no_grad():
        latents = world_model.encode(frames[:, :, -1:])
        goal = world_model.encode(goal_frame)[0, -1]
    energy = rollout_energy(world_model, latents, state.view(1, 1, -1).to(latents.dtype), goal, chunk=chunk)
    return cem(energy, config, seed=seed, device=latents.device)


__all__ = ["CEMConfig", "cem", "rollout_energy", "plan_actions", "full_actions", "ACTION_DIM"]
