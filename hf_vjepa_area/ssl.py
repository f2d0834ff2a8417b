"""V-JEPA 2 self-supervised training pieces: the step's loss, EMA, optimizer, schedules and model loading.

One step, as in Meta's `app/vjepa/train.py`:
  targets = layer_norm(target_encoder(clips))            all tokens, no grad, non-affine norm
  for each mask config: z = encoder(clips, context ids); p = predictor(z, context ids, target ids)
                        loss_i = mean |p - targets[target ids]|
  loss = mean_i loss_i;  backward;  AdamW step;  target_encoder <- EMA of encoder
No run management here (the example script owns arguments, logging, checkpoints). Autocast, devices
and process groups are the caller's: nothing here assumes a device or a dtype.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers.utils import SAFE_WEIGHTS_NAME as ENCODER_WEIGHTS_NAME

from .modeling import CONTEXT_ENCODER_WEIGHTS_NAME, PREDICTOR_WEIGHTS_NAME, VJEPA2AreaConfig, VJEPA2AreaModel
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


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


class SSLModels(NamedTuple):
    encoder: VJEPA2AreaModel  # the context encoder (trained)
    target_encoder: VJEPA2AreaModel  # EMA of the encoder, frozen; what an anneal publishes
    predictor: VJEPA2AreaPredictor


def _config(config_dict: dict, overrides: dict) -> VJEPA2AreaConfig:
    unknown = sorted(set(overrides) - set(VJEPA2AreaConfig.__annotations__))
    if unknown:
        raise ValueError(f"{unknown} are not VJEPA2AreaConfig fields")
    config_dict = {**config_dict, **overrides}
    # New splits without layers: the default layers for them, not the (possibly empty) saved list.
    for splits, layers in (("area_splits", "area_layers"), ("predictor_area_splits", "predictor_area_layers")):
        if splits in overrides and layers not in overrides:
            config_dict[layers] = None
    return VJEPA2AreaConfig.from_dict(config_dict)


def _load_into(model_class, config, state: dict, what: str):
    """Build on the meta device and take the tensors as they are (no random init, no second copy);
    strict: a missing, unexpected or mis-shaped tensor is an error, never a silent partial load."""
    with torch.device("meta"):
        model = model_class(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise ValueError(f"{what} does not fit the model of config.json: {error}") from None
    return model.float()


def _read_weights(source, read_options: dict) -> tuple[dict, dict, dict | None, dict | None, str]:
    """(config dict, encoder state, predictor state, context-encoder state, what) of any source we take."""
    if isinstance(source, VJEPA2AreaModel):
        state = {key: value.detach().clone() for key, value in source.state_dict().items()}
        return source.config.to_dict(), state, None, None, "a model instance"
    path = Path(source)
    config_file = path / "config.json"
    released = path.is_file() or (
        config_file.is_file() and json.loads(config_file.read_text(encoding="utf-8")).get("model_type") == "vjepa2"
    )
    if released:  # Meta's .pt or a transformers facebook/vjepa2-* folder, read by the conversion's reader
        from .conversion.load import read_source

        read = read_source(path, **read_options)
        return read.config.to_dict(), read.encoder, read.predictor or None, read.context_encoder or None, str(path)
    given = sorted(name for name, value in read_options.items() if value and name != "with_predictor")
    if given:
        raise ValueError(f"{path}: {', '.join(given)} are for a .pt or transformers source; our folders' config.json says")
    for name in ("config.json", ENCODER_WEIGHTS_NAME):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path / name} not found: expected one of our folders (config.json, {ENCODER_WEIGHTS_NAME}), "
                "a transformers V-JEPA 2 folder or a released .pt"
            )
    predictor, context = (path / PREDICTOR_WEIGHTS_NAME, path / CONTEXT_ENCODER_WEIGHTS_NAME)
    return (
        json.loads(config_file.read_text(encoding="utf-8")),
        load_file(path / ENCODER_WEIGHTS_NAME),
        load_file(predictor) if predictor.is_file() else None,
        load_file(context) if context.is_file() else None,
        str(path),
    )


def load_ssl_models(source: str | os.PathLike | VJEPA2AreaModel, *, init_predictor: str = "checkpoint",
                    read_options: dict | None = None, **overrides) -> SSLModels:
    """Encoder, target encoder and predictor for V-JEPA 2 training, all float32.

    `source`: one of our folders (`config.json`, `model.safetensors` = the target encoder, optional
    `predictor.safetensors` and `context_encoder.safetensors`), a released source as `load_released` takes
    it (Meta's `.pt`: `target_encoder`, `predictor`, `encoder`; a transformers `facebook/vjepa2-*` folder:
    encoder and predictor), or a `VJEPA2AreaModel`. The context encoder starts from the source's context
    encoder when it has one, else from the target encoder.
    `init_predictor`: "checkpoint" (the source's predictor; its mask-token count wins over the config's)
    or "random" (released init). `read_options`: what a `.pt` does not store (`variant`, `predictor_heads`,
    `img_size`, `num_frames`), as for `load_released`. `overrides`: config fields, e.g. `area_splits=(2, 2, 1),
    area_layers="0:18"`, applied to the encoder and the target encoder alike (and `predictor_*` fields).
    """
    if init_predictor not in ("checkpoint", "random"):
        raise ValueError(f"init_predictor must be 'checkpoint' or 'random', got {init_predictor!r}")
    read_options = {**(read_options or {}), "with_predictor": init_predictor == "checkpoint"}
    config_dict, encoder_state, predictor_state, context_state, what = _read_weights(source, read_options)
    # A classifier's file holds its probe as `head.*` beside the encoder: not part of SSL training.
    encoder_state = {key: value for key, value in encoder_state.items() if not key.startswith("head.")}

    if init_predictor == "random":
        predictor_state = None
    elif predictor_state is None:
        raise FileNotFoundError(
            f"{what} has no predictor weights: use a released .pt or facebook/vjepa2-* folder, convert the source "
            f"with its predictor (conversion writes {PREDICTOR_WEIGHTS_NAME}), or start a fresh predictor with "
            "init_predictor='random' (--init-predictor random)"
        )
    else:
        # The released files carry 10 mask tokens whatever the training that follows uses.
        overrides = {**overrides, "predictor_num_mask_tokens": sum(key.startswith("mask_tokens.") for key in predictor_state)}
    config = _config(config_dict, overrides)

    target_encoder = _load_into(VJEPA2AreaModel, config, encoder_state, ENCODER_WEIGHTS_NAME)
    if context_state is not None:
        encoder = _load_into(VJEPA2AreaModel, config, context_state, CONTEXT_ENCODER_WEIGHTS_NAME)
    else:
        encoder = copy.deepcopy(target_encoder)
    if predictor_state is not None:
        predictor = _load_into(VJEPA2AreaPredictor, config, predictor_state, PREDICTOR_WEIGHTS_NAME)
    else:
        predictor = VJEPA2AreaPredictor(config)
    target_encoder.requires_grad_(False).eval()
    return SSLModels(encoder.train(), target_encoder, predictor.train())


__all__ = [
    "JEPA",
    "SSLLoss",
    "SSLModels",
    "target_tokens",
    "ema_update",
    "param_groups",
    "make_optimizer",
    "learning_rate",
    "ema_momentum",
    "load_ssl_models",
]
