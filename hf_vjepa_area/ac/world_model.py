"""V-JEPA 2-AC as a world model: encode frames, roll the action-conditioned predictor forward over actions.

As Meta's planning code (`notebooks/utils/world_model_wrapper.py`, `mpc_utils.py`) and post-training
(`app/vjepa_droid/train.py`) use it: every frame is encoded on its own as a clip of `tubelet_size` copies
of itself, latents are layer-normed (no affine) over channels, and a rollout feeds each normed prediction
back as the next frame, with the robot state advanced by the action (`next_state`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint_keys import ConversionError
from ..conversion.load import build_ac_predictor, build_model, read_source
from ..modeling import VJEPA2AreaModel
from ..modeling.ac_predictor_vjepa2_area import (
    AC_PREDICTOR_CONFIG_KEY,
    AC_PREDICTOR_WEIGHTS_NAME,
    VJEPA2ACPredictor,
    VJEPA2ACPredictorConfig,
)
from ..sources import load_model, resolve


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Extrinsic x-y-z Euler angles [..., 3] (scipy's "xyz", as DROID states) -> rotation matrices [..., 3, 3]."""
    cos, sin = angles.cos().unbind(-1), angles.sin().unbind(-1)
    one, zero = torch.ones_like(cos[0]), torch.zeros_like(cos[0])

    def mat(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    rx = mat([(one, zero, zero), (zero, cos[0], -sin[0]), (zero, sin[0], cos[0])])
    ry = mat([(cos[1], zero, sin[1]), (zero, one, zero), (-sin[1], zero, cos[1])])
    rz = mat([(cos[2], -sin[2], zero), (sin[2], cos[2], zero), (zero, zero, one)])
    return rz @ ry @ rx


def matrix_to_euler(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> extrinsic x-y-z Euler angles [..., 3] (y in [-pi/2, pi/2])."""
    x = torch.atan2(matrix[..., 2, 1], matrix[..., 2, 2])
    y = torch.asin((-matrix[..., 2, 0]).clamp(-1.0, 1.0))
    z = torch.atan2(matrix[..., 1, 0], matrix[..., 0, 0])
    return torch.stack([x, y, z], -1)


def next_state(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Robot state [..., 7] (xyz, Euler angles, gripper) after action [..., 7] (xyz delta, rotation delta as
    Euler angles applied on the left, gripper delta): Meta's `compute_new_pose`; the gripper stays in [0, 1]."""
    xyz = state[..., :3] + action[..., :3]
    angles = matrix_to_euler(euler_to_matrix(action[..., 3:6]) @ euler_to_matrix(state[..., 3:6]))
    gripper = (state[..., 6:] + action[..., 6:]).clamp(0.0, 1.0)
    return torch.cat([xyz, angles, gripper], -1)


def normalize(latents: torch.Tensor) -> torch.Tensor:
    """Layer norm over channels without affine parameters (`normalize_reps` in Meta's code)."""
    return F.layer_norm(latents, (latents.shape[-1],))


def predict(predictor: nn.Module, latents: torch.Tensor, actions: torch.Tensor, states: torch.Tensor,
            extrinsics: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """One predictor call (`predictor` may be DDP-wrapped): latents [B, T, h, w, D] with an action and a
    state per frame -> normed predictions [B, T, h, w, D] (output frame t is the prediction of frame t + 1)."""
    batch, num_frames, height, width, dim = latents.shape
    out = predictor(latents.reshape(batch, -1, dim), actions, states, extrinsics, grid=(height, width))
    return normalize(out.view(latents.shape))


class WorldModel(nn.Module):
    """A frozen V-JEPA 2 encoder and a V-JEPA 2-AC predictor.

    `encode` turns frames into normed latents [B, T, h, w, D] (h, w: the frames' token grid, which the
    predictor reads from the shape); `rollout` predicts the latents the actions lead to; `energy` is the
    planning objective (mean absolute difference to a goal's latents)."""

    def __init__(self, encoder: VJEPA2AreaModel, predictor: VJEPA2ACPredictor):
        super().__init__()
        if encoder.config.embed_dim != predictor.config.embed_dim:
            raise ValueError(f"the predictor reads width {predictor.config.embed_dim} tokens, the encoder writes {encoder.config.embed_dim}")
        self.encoder = encoder
        self.predictor = predictor

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised frames [B, C, T, H, W] -> normed latents [B, T, H/p, W/p, D], each frame encoded alone
        (repeated to one tubelet) as in Meta's post-training and planning."""
        batch, channels, num_frames, height, width = frames.shape
        patch = self.encoder.config.patch_size
        clips = frames.transpose(1, 2).reshape(batch * num_frames, channels, 1, height, width)
        clips = clips.expand(-1, -1, self.encoder.config.tubelet_size, -1, -1)
        tokens = self.encoder.encode(clips).last_hidden_state
        return normalize(tokens.view(batch, num_frames, height // patch, width // patch, tokens.shape[-1]))

    def step(self, latents: torch.Tensor, actions: torch.Tensor, states: torch.Tensor, extrinsics=None) -> torch.Tensor:
        """`predict` with this world model's predictor."""
        return predict(self.predictor, latents, actions, states, extrinsics)

    def rollout(self, latents: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Autoregressive prediction, as Meta's planning runs it.

        latents [B, Tc, h, w, D]: the context frames' normed latents (`encode`); states [B, Tc, 7]: the robot
        state at each of them; actions [B, Tc - 1 + K, 7]: the actions between the context frames, then K
        actions to imagine. B may be 1 with actions for S candidate sequences ([S, ..., 7]): the context is
        shared. Each step runs the predictor over every frame so far and keeps the last frame's prediction;
        the state advances by `next_state`. Returns (predicted latents [B, K, h, w, D], states [B, K, 7]).
        """
        context = latents.shape[1]
        steps = actions.shape[1] - (context - 1)
        if states.shape[1] != context or steps < 1:
            raise ValueError(f"rollout needs a state per context frame ({context}) and at least {context} actions "
                             f"(the {context - 1} between context frames, then one per step); got states "
                             f"{list(states.shape)}, actions {list(actions.shape)}")  # fmt: skip
        if latents.shape[0] == 1 and actions.shape[0] > 1:  # one context, many candidate sequences
            latents = latents.expand(actions.shape[0], -1, -1, -1, -1)
            states = states.expand(actions.shape[0], -1, -1)
        predicted, new_states = [], []
        for k in range(steps):
            known = context + k
            state = next_state(states[:, -1], actions[:, known - 1])
            out = self.step(latents, actions[:, :known], states)[:, -1:]
            latents = torch.cat([latents, out], dim=1)
            states = torch.cat([states, state.unsqueeze(1)], dim=1)
            predicted.append(out)
            new_states.append(state)
        return torch.cat(predicted, dim=1), torch.stack(new_states, dim=1)

    def forward(self, frames: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the context frames [B, C, Tc, H, W] (normalised pixels) and imagine what the actions do:
        `rollout(encode(frames), states, actions)` -> (predicted latents [B, K, h, w, D], states [B, K, 7])."""
        return self.rollout(self.encode(frames), states, actions)

    @staticmethod
    def energy(predicted: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Mean absolute difference over tokens and channels: predicted [S, h, w, D], goal [h, w, D] or
        [S, h, w, D] -> [S]."""
        return (predicted - goal).abs().flatten(1).mean(dim=1)


def load_world_model(source: str | Path, *, predictor_heads: int | None = None, revision: str | None = None,
                     **options) -> WorldModel:  # fmt: skip
    """A `WorldModel` (eval mode) from Meta's `vjepa2-ac-vitg.pt` (read by the converter's reader; options as
    `read_source`'s, plus `predictor_heads` for a predictor width not in the released table) or from a
    folder written by `vjepa2-area-convert` from it (`ac_predictor.safetensors` and its config)."""
    path = Path(source).expanduser()
    if path.is_file():
        read = read_source(path, predictor_heads=predictor_heads, **options)
        if not read.ac_predictor:
            raise ConversionError(f"{path.name} has no action-conditioned predictor (action_encoder.*): not a V-JEPA 2-AC checkpoint")
        predictor = build_ac_predictor(read.ac_config(), read.ac_predictor)
        return WorldModel(build_model(VJEPA2AreaModel, read.config, read.encoder), predictor).eval()
    if predictor_heads is not None or options:
        raise ConversionError(f"{', '.join(['predictor_heads'] * (predictor_heads is not None) + sorted(options))}: "
                              "only for a .pt source; a converted folder's config.json holds its sizes")  # fmt: skip
    from safetensors.torch import load_file

    found = resolve(source, revision)  # config.json read once, a Hub id resolved offline-aware
    config, folder = found.config or {}, found.where
    if found.kind != "ours" or AC_PREDICTOR_CONFIG_KEY not in config or not (folder / AC_PREDICTOR_WEIGHTS_NAME).is_file():
        raise ConversionError(f"{source}: no {AC_PREDICTOR_WEIGHTS_NAME} with its {AC_PREDICTOR_CONFIG_KEY!r} config: "
                              "convert vjepa2-ac-vitg.pt with vjepa2-area-convert, or pass the .pt")  # fmt: skip
    encoder = load_model(found)
    predictor = build_ac_predictor(VJEPA2ACPredictorConfig(**config[AC_PREDICTOR_CONFIG_KEY]), load_file(folder / AC_PREDICTOR_WEIGHTS_NAME))
    return WorldModel(encoder, predictor).eval()


__all__ = ["WorldModel", "load_world_model", "predict", "next_state", "normalize", "euler_to_matrix", "matrix_to_euler"]
