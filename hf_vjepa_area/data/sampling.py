"""Which frames make up each clip, which items make up each batch, and each item's seed.

Frames: V-JEPA 2's `VideoDataset` sampling, reproduced index for index.

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

import math

import numpy as np
import torch
from torch.utils.data import Sampler


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


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of item `index` in `epoch` of a run seeded `seed`: a pure function of the three numbers, so an
    item's random draws depend on neither DataLoader workers, processes, nor where a run was resumed."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0])


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded with `item_seed(seed, epoch, index)`."""
    return torch.Generator().manual_seed(item_seed(seed, epoch, index))


class GlobalBatchSampler(Sampler):
    """Global batches of `batch_size * num_replicas` items split across processes: process `rank` takes
    its contiguous slice of each.

    Epoch e orders the items (a permutation seeded by (seed, e) with `shuffle`, else in order) and cuts
    the order into global batches; global batch k of the run is step `e * steps_per_epoch + k`. A step's
    items depend only on (seed, step, global batch): 1 process x 8 sees what 2 x 4 see, and a resumed
    run what an uninterrupted one sees.

    `drop_last=False` (the probe): an epoch's last global batch may be short and a process whose slice is
    empty yields an empty batch, so every item is seen once, without the repeated items accelerate's own
    sharding pads with, and every process runs the same number of steps. `drop_last=True` (pretraining,
    as V-JEPA 2's loader): an epoch's tail that does not fill a global batch is dropped.

    Iterating yields the batches of the epoch given to `set_epoch`; `indices(step)` those of any step.
    """

    def __init__(self, num_samples: int, batch_size: int, *, rank: int = 0, num_replicas: int = 1,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False):  # fmt: skip
        if batch_size < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"bad sharding: batch_size={batch_size}, rank={rank}, num_replicas={num_replicas}")
        self.num_samples, self.batch_size, self.rank, self.num_replicas = num_samples, batch_size, rank, num_replicas
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        global_batch = batch_size * num_replicas
        self.steps_per_epoch = num_samples // global_batch if drop_last else math.ceil(num_samples / global_batch)
        self._order = (None, None)  # (epoch, order) of the last epoch asked for

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> torch.Tensor:
        """The items of `epoch` in the order the global batches take them."""
        if self._order[0] != epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._order = (epoch, torch.randperm(self.num_samples, generator=generator))
            else:
                self._order = (epoch, torch.arange(self.num_samples))
        return self._order[1]

    def indices(self, step: int) -> tuple[int, list[int]]:
        """The epoch of global batch `step` and this process's items of it."""
        epoch, position = divmod(step, self.steps_per_epoch)
        start = (position * self.num_replicas + self.rank) * self.batch_size
        return epoch, self.order(epoch)[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):
        first = self.epoch * self.steps_per_epoch
        for step in range(first, first + self.steps_per_epoch):
            yield self.indices(step)[1]
