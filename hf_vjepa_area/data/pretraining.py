"""V-JEPA 2 pretraining clips: one random clip per video, random resized crop and flip, left in uint8.

Follows V-JEPA 2's pretraining data path (`src/datasets/video_dataset.py` with `fps=4`,
`app/vjepa/transforms.py` with the pretraining configs' `random_resize_scale [0.3, 1.0]`,
`random_resize_aspect_ratio [0.75, 1.35]`, horizontal flip, no RandAugment, no erasing):

- frame step from the video's own frame rate, `ceil(video_fps) // fps` (at least 1), or a fixed
  `frame_step`; one clip per video at a random offset (`sampling.clip_indices`, index for index V-JEPA 2's
  for videos longer than one clip span; a shorter one is padded by repeating its last frames, spread over
  frames 0..N-2 as in the probe's sampling, where V-JEPA 2's pretraining loader spreads over 0..N-1);
- one crop box for all frames (`TrainTransform.crop_box`: log-uniform aspect, 10 tries, then a centre
  crop), cut from the uint8 frames, only the crop converted to float, resized with plain bilinear
  (no antialias, as V-JEPA 2) and rounded back to uint8; then the flip.

Clips stay uint8 `[C, T, H, W]` (4x less to move from DataLoader workers and to the device);
normalization (`transforms.normalize`) happens on the device in the training loop. The rounding
to uint8 after the resize is the one difference from V-JEPA 2, which resizes floats: at most half a
grey level.

A video that cannot be used (missing, corrupt, shorter than `min_frames`, no frame rate) is
replaced by another one drawn at random, as V-JEPA 2's loader does, so batches stay full and every
process steps in lockstep; the item lists what it skipped (workers do not log), so runs can name and count it. Every random
choice (clip offset, crop, flip, replacements) comes from a generator seeded by (seed, epoch,
index): an item depends on neither workers, processes nor where a run was resumed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .dataset import SkippedSample, read_manifest
from .decoding import VideoDecodeError, open_video
from .kinetics import VIDEO_EXTENSIONS
from .sampling import GlobalBatchSampler, VideoTooShortError, clip_indices, item_generator
from .transforms import TrainTransform, resize_rounded

# V-JEPA 2's pretraining configs (configs/train/vit*/pretrain-256px-16f.yaml).
PRETRAIN_FRAMES = 16
PRETRAIN_FPS = 4
PRETRAIN_CROP_SCALE = (0.3, 1.0)
PRETRAIN_CROP_RATIO = (0.75, 1.35)

class NoUsableVideoError(RuntimeError):
    """Draw after draw of videos could not be read: the data, not one file, is broken."""


def list_videos(source: str | os.PathLike) -> list[str]:
    """Video paths of a V-JEPA 2 manifest (`path label` lines, labels unused) or, recursively, of a folder."""
    source = Path(source)
    if source.is_dir():
        videos = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if not videos:
            raise ValueError(f"{source}: no videos ({', '.join(VIDEO_EXTENSIONS)}) in this folder or below")
        return videos
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such manifest or folder")
    return [entry.path for entry in read_manifest(source)]


def frame_step_for(video_fps: float, fps: float) -> int:
    """V-JEPA 2's frame step for sampling at `fps` from a video at `video_fps`: `ceil(video_fps) // fps`, >= 1."""
    return max(1, int(math.ceil(video_fps) // fps))


class PretrainingClipDataset(Dataset):
    """V-JEPA 2 pretraining clips of the videos in a manifest or folder.

    Item `i` is a dict: `clip` uint8 `[C, T, crop_size, crop_size]`, `index` (the video used: `i`, or the
    replacement when `i` could not be read) and `skipped` (a `SkippedSample` per video tried and skipped
    for this item, usually none). Call `set_epoch` each epoch, or index with `StepBatchSampler`'s keys.
    `collate_clips` batches items (`examples/ssl_anneal.py` adds the masks of the global batch).
    """

    def __init__(
        self,
        source: str | os.PathLike,
        *,
        frames_per_clip: int = PRETRAIN_FRAMES,
        fps: float = PRETRAIN_FPS,
        frame_step: int | None = None,
        crop_size: int = 256,
        scale: tuple[float, float] = PRETRAIN_CROP_SCALE,
        ratio: tuple[float, float] = PRETRAIN_CROP_RATIO,
        horizontal_flip: bool = True,
        min_frames: int = 1,
        seed: int = 0,
        backend: str = "auto",
        decode_threads: int = 1,
        max_tries: int = 100,
    ):
        if frames_per_clip < 1 or crop_size < 1 or fps <= 0 or (frame_step is not None and frame_step < 1):
            raise ValueError(f"frames_per_clip, crop_size, fps and frame_step must be positive; got "
                             f"{frames_per_clip}, {crop_size}, {fps}, {frame_step}")  # fmt: skip
        self.source = Path(source)
        self.paths = list_videos(source)
        self.frames_per_clip = frames_per_clip
        self.fps = fps
        self.frame_step = frame_step
        self.crop_size = crop_size
        self.scale, self.ratio = scale, ratio
        self.horizontal_flip = horizontal_flip
        self.min_frames = min_frames
        self.seed = seed
        self.epoch = 0
        self.backend = backend
        self.decode_threads = decode_threads
        self.max_tries = max_tries

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def clip(self, path: str, generator: torch.Generator) -> torch.Tensor:
        """One training clip of `path`, uint8 `[C, T, H, W]`; raises `VideoDecodeError` / `VideoTooShortError`."""
        with open_video(path, self.backend, self.decode_threads) as video:
            step = self.frame_step
            if step is None:
                if not video.info.fps:
                    raise VideoDecodeError(f"{path}: no frame rate (a frame folder, or a container without one); use a fixed frame step")
                step = frame_step_for(video.info.fps, self.fps)
            indices = clip_indices(video.info.num_frames, self.frames_per_clip, step, 1, random_offset=True,
                                   min_frames=self.min_frames, generator=generator)  # fmt: skip
            frames = video.get_frames(indices[0])  # [T, H, W, C]
        crop = TrainTransform(self.crop_size, scale=self.scale, ratio=self.ratio, generator=generator)
        top, left, height, width = crop.crop_box(*frames.shape[1:3])
        box = frames[:, top : top + height, left : left + width].permute(0, 3, 1, 2)  # [T, C, h, w], still uint8
        clip = resize_rounded(box, self.crop_size, self.crop_size)
        if self.horizontal_flip and float(torch.rand((), generator=generator)) < 0.5:
            clip = clip.flip(-1)
        return clip.transpose(0, 1).contiguous()  # [C, T, H, W]

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict:
        """`key`: an index (drawn with the epoch of `set_epoch`), or `(step, epoch, index)` from a
        `StepBatchSampler`; then the item carries `step` too."""
        extra = {}
        if isinstance(key, tuple):
            step, epoch, index = key
            extra["step"] = step
        else:
            epoch, index = self.epoch, key
        generator = item_generator(self.seed, epoch, index)
        skipped = []
        for _ in range(self.max_tries):
            path = self.paths[index]
            try:
                return {"clip": self.clip(path, generator), "index": index, "skipped": skipped, **extra}
            except (VideoDecodeError, VideoTooShortError) as error:
                skipped.append(SkippedSample(index, path, str(error)))
                index = int(torch.randint(len(self.paths), (), generator=generator))
        raise NoUsableVideoError(
            f"{self.max_tries} videos in a row could not be read (e.g. {[item.path for item in skipped[:3]]}): most of "
            f"{self.source} is missing or broken; check the paths and files"
        )


class StepBatchSampler(GlobalBatchSampler):
    """Batches for optimizer steps `[start_step, stop_step)` of a step-counted run, as `(step, epoch, index)` keys.

    The run's clips are an endless sequence of epochs, each cut into global batches by `GlobalBatchSampler`'s
    rule (shuffled; the tail of an epoch that does not fill a global batch dropped, as V-JEPA 2's loader
    does): step s takes global batch s, so a resumed run starts at its step.
    """

    def __init__(self, num_samples: int, batch_size: int, *, rank: int = 0, num_replicas: int = 1, seed: int = 0,
                 start_step: int = 0, stop_step: int | None = None):  # fmt: skip
        super().__init__(num_samples, batch_size, rank=rank, num_replicas=num_replicas, shuffle=True, seed=seed,
                         drop_last=True)  # fmt: skip
        if self.steps_per_epoch == 0:
            raise ValueError(f"{num_samples} videos cannot fill one global batch of {batch_size * num_replicas} "
                             f"({batch_size} per process x {num_replicas}); use a smaller batch or more videos")  # fmt: skip
        self.start_step, self.stop_step = start_step, stop_step

    def __len__(self) -> int:
        if self.stop_step is None:
            raise TypeError("an endless StepBatchSampler has no length; give stop_step")
        return max(0, self.stop_step - self.start_step)

    def batch(self, step: int) -> list[tuple[int, int, int]]:
        epoch, indices = self.indices(step)
        return [(step, epoch, index) for index in indices]

    def __iter__(self):
        step = self.start_step
        while self.stop_step is None or step < self.stop_step:
            yield self.batch(step)
            step += 1


def split_skipped(samples: list[dict]) -> tuple[list[dict], list[SkippedSample]]:
    """Items without their `skipped` lists, and those lists joined: what was skipped for this batch."""
    skipped = [item for sample in samples for item in sample["skipped"]]
    return [{k: v for k, v in sample.items() if k != "skipped"} for sample in samples], skipped


def collate_clips(samples: list[dict]) -> dict:
    """`clips` uint8 `[B, C, T, H, W]`, `indices` `[B]`, `skipped` (the `SkippedSample`s of this batch)."""
    samples, skipped = split_skipped(samples)
    clips = torch.stack([sample["clip"] for sample in samples])
    return {"clips": clips, "indices": torch.tensor([sample["index"] for sample in samples]), "skipped": skipped}
