"""The frozen forward and the token layout the probe reads: uint8 clips normalized on the device, encoded
in bounded chunks under no_grad, the last block's or multi-level tokens, segments joined per view."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch
from torch import nn

from ..data import normalize
from ..modeling import VJEPA2AreaConfig
from ..modeling.released import resolve_out_layers  # noqa: F401  (the probe's blocks, re-exported)

# Clips per encoder forward unless the caller says otherwise: bounds the frozen forward's activations
# (an eval batch of 4 videos x 8 segments x 3 views is 96 clips).
ENCODER_CHUNK = 8


def encoder_fingerprint(encoder: nn.Module) -> str:
    """A cheap digest of the encoder's config and weights (first values of every tensor), for the cache."""
    digest = hashlib.sha256(json.dumps(encoder.config.to_dict(), sort_keys=True, default=str).encode())
    for key, value in encoder.state_dict().items():
        head = value.detach().flatten()[:16].float().cpu().numpy()
        digest.update(key.encode() + str(tuple(value.shape)).encode() + head.tobytes())
    return digest.hexdigest()[:16]


def tokens_per_clip(config: VJEPA2AreaConfig, frames_per_clip: int, crop_size: int,
                    out_layers: Sequence[int] | None = None) -> int:  # fmt: skip
    """Tokens the probe reads from one `[C, frames_per_clip, crop, crop]` clip (the encoder's tokens,
    once per block of `out_layers` for a multi-level probe)."""
    frames = max(frames_per_clip, config.tubelet_size)
    return (frames // config.tubelet_size) * (crop_size // config.patch_size) ** 2 * len(out_layers or [None])


OUT_LAYERS_HELP = ("encoder blocks the probe reads: 'last' (the last block's tokens), 'multilevel' (V-JEPA 2's "
                   "Diving48/Jester input: four blocks per encoder size, e.g. ViT-L 17,19,21,23, each through the "
                   "final norm, joined along the token axis) or block indices such as '17,19,21,23'")


def probe_tokens(encoder: nn.Module, clips: torch.Tensor, out_layers: Sequence[int] | None = None) -> torch.Tensor:
    """What a probe reads from normalized clips `[B, C, T, H, W]`: the last block's tokens `[B, N, D]`, or
    with `out_layers` (V-JEPA 2's multi-level probe) those blocks' outputs, each through the final norm,
    concatenated along the token axis in block order `[B, L*N, D]`, as `VJEPA2AreaForVideoClassification`
    reads them with `config.probe_out_layers`."""
    if out_layers is None:
        return encoder.encode(clips).last_hidden_state
    return torch.cat(encoder.encode(clips, out_layers=out_layers).intermediate_states, dim=1)

def group_views(tokens: torch.Tensor, num_segments: int, num_views: int) -> torch.Tensor:
    """Encoder tokens of segment-major clips `[B*S*V, N, D]` -> per view, segments concatenated:
    `[B, V, S*N, D]` (V-JEPA 2's `ClipAggregation`: clip tokens joined along time)."""
    clips, n, d = tokens.shape
    if clips % (num_segments * num_views):
        raise ValueError(f"{clips} clips is not a multiple of segments x views = {num_segments} x {num_views}")
    batch = clips // (num_segments * num_views)
    return tokens.view(batch, num_segments, num_views, n, d).transpose(1, 2).reshape(batch, num_views, num_segments * n, d)


@torch.no_grad()
def encode_clips(
    encoder: nn.Module,
    clips: torch.Tensor,
    num_segments: int,
    num_views: int,
    *,
    autocast_dtype: torch.dtype | None = None,
    chunk_size: int | None = ENCODER_CHUNK,
    out_layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Frozen forward of a batch: clips `[B, S*V, C, T, H, W]` (the dataset's segment-major layout; uint8
    pixels, normalized here chunk by chunk on their device, or already-normalized floats) -> float32
    tokens `[B, V, S*N, D]` (`N` per clip as `probe_tokens` makes them, `out_layers` for multi-level).
    Under `no_grad`, with autocast to `autocast_dtype` when given (bf16 on GPU); at most `chunk_size`
    clips go through the encoder at once (None: all)."""
    if clips.ndim != 6 or clips.shape[1] != num_segments * num_views:
        raise ValueError(
            f"clips must be [B, S*V, C, T, H, W] with S*V = {num_segments * num_views}, got {tuple(clips.shape)}"
        )
    flat = clips.flatten(0, 1)
    outputs = []
    for chunk in flat.split(chunk_size or flat.shape[0]):
        if chunk.dtype == torch.uint8:
            chunk = normalize(chunk, channel_dim=1)
        with torch.autocast(chunk.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            outputs.append(probe_tokens(encoder, chunk, out_layers).float())
    return group_views(torch.cat(outputs), num_segments, num_views)


def batch_tokens(encoder: nn.Module, device: torch.device, num_segments: int, num_views: int, *,
                 autocast_dtype: torch.dtype | None = None, chunk_size: int | None = ENCODER_CHUNK,
                 out_layers: Sequence[int] | None = None):  # fmt: skip
    """The `tokens_of` of `train_one_epoch` / `evaluate`: a loader batch's probe tokens on `device`, the
    cached `features` as they are or the `clips` through `encode_clips`; None when every video of the
    batch was skipped."""

    def tokens(batch: dict) -> torch.Tensor | None:
        if "features" in batch:
            return None if batch["features"] is None else batch["features"].to(device)
        if batch["clips"] is None:
            return None
        return encode_clips(encoder, batch["clips"].to(device), num_segments, num_views, autocast_dtype=autocast_dtype,
                            chunk_size=chunk_size, out_layers=out_layers)  # fmt: skip

    return tokens
