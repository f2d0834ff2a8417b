"""Which frames make up each clip: V-JEPA 2's `VideoDataset` sampling, reproduced index for index.

The released probes were trained and scored on exactly these frames, so this follows the
reference (`src/datasets/video_dataset.py`, `allow_clip_overlap=True` as in its frozen evals),
quirks included:

- the video is cut into `num_segments` equal partitions. If a partition is longer than one clip
  span `L = frames_per_clip * frame_step`, clip i lies inside partition i: at its start (eval) or
  at a random offset (train). Otherwise the clips overlap, start `(N - L) // (num_segments - 1)`
  frames apart, and have no random offset even in training;
- frames inside a clip come from `linspace`, not `arange`, so the stride is about
  `frame_step * frames_per_clip / (frames_per_clip - 1)` (e.g. 0, 4, 8, 12, 17, ... for 16x4)
  and the overlapping case repeats its last index at least once;
- a video shorter than one span keeps its frames up to the second-to-last one and pads by
  repeating that index (V-JEPA 2's "repeat the last frame"; its `np.clip` drops the very last).

Too-short policy: the reference pads any non-empty video. `min_frames` rejects shorter videos
with `VideoTooShortError`; `min_frames=frames_per_clip * frame_step` equals the reference's
`filter_short_videos=True`. A video with no frames is always rejected.
"""

from __future__ import annotations

import numpy as np
import torch


class VideoTooShortError(ValueError):
    """The video has fewer frames than the sampling policy accepts; loaders skip it."""


def clip_indices(
    num_frames: int,
    frames_per_clip: int = 16,
    frame_step: int = 4,
    num_segments: int = 1,
    *,
    random_offset: bool = False,
    min_frames: int = 1,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Frame indices of `num_segments` clips as an int64 array `[num_segments, frames_per_clip]`.

    `random_offset=True` is training (V-JEPA 2's `random_clip_sampling`); it draws from torch's
    RNG (or `generator`) because DataLoader workers reseed torch, not NumPy.
    """
    if frames_per_clip < 1 or frame_step < 1 or num_segments < 1:
        raise ValueError(
            f"frames_per_clip, frame_step, num_segments must be >= 1; got {frames_per_clip, frame_step, num_segments}"
        )
    if num_frames < max(min_frames, 1):
        needed = max(min_frames, 1)
        raise VideoTooShortError(f"video has {num_frames} frames, the sampling policy needs at least {needed}")

    clip_span = frames_per_clip * frame_step
    partition_len = num_frames // num_segments
    clips = []
    for segment in range(num_segments):
        if partition_len > clip_span:
            end = clip_span
            if random_offset:
                end = int(torch.randint(clip_span, partition_len, (), generator=generator))
            start = end - clip_span
            indices = np.linspace(start, end, num=frames_per_clip).clip(start, end - 1)
            indices = indices.astype(np.int64) + segment * partition_len
        else:
            last = min(clip_span, num_frames) - 1
            num_spread = last // frame_step
            padding = np.full(frames_per_clip - num_spread, last)
            indices = np.concatenate([np.linspace(0, last, num=num_spread), padding])
            # The reference clips to last - 1; for a 1-frame video that is -1, i.e. frame 0.
            indices = indices.clip(0, max(last - 1, 0)).astype(np.int64)
            if num_frames > clip_span:
                indices += segment * ((num_frames - clip_span) // (num_segments - 1))
        clips.append(indices)
    return np.stack(clips)
