"""Clip dataset over a V-JEPA 2 manifest, and the collate function that drops unreadable videos.

A bad video (missing, corrupt, too short) must not crash a multi-hour run or a DataLoader
worker, and must not vanish silently either. `__getitem__` therefore returns a `SkippedSample`
instead of raising; `collate_skip_none` drops those and reports them in the batch. Workers do not
log: the loop hands the batch's skipped samples to `runs.SkippedFiles`, which names each file once
across workers and processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from .decoding import VideoDecodeError, open_video
from .sampling import VideoTooShortError, clip_indices
from .transforms import EvalTransform, TrainTransform


class ManifestEntry(NamedTuple):
    path: str
    label: int


class SkippedSample(NamedTuple):
    """Stands in for a sample whose video could not be used."""

    index: int
    path: str
    reason: str


def read_manifest(manifest: str | os.PathLike) -> list[ManifestEntry]:
    """Parse a V-JEPA 2 manifest: one `path label` per line, space separated.

    Relative paths are taken from the manifest's folder. The label is the last field, so paths
    may contain spaces. Blank lines are ignored; anything else malformed raises `ValueError`
    naming the file and line. A UTF-8 byte-order mark (Windows editors) and spaces around a line
    are dropped: kept, they became part of the path and the video was reported missing.
    """
    manifest = Path(manifest)
    entries = []
    for line_number, line in enumerate(manifest.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.rsplit(maxsplit=1)
        if len(fields) != 2:
            raise ValueError(f"{manifest}:{line_number}: expected 'path label', got {line!r}")
        path, label = fields
        try:
            label = int(label)
        except ValueError:
            hint = " (a header row? V-JEPA 2 manifests have none: delete it)" if not entries else ""
            raise ValueError(f"{manifest}:{line_number}: label must be an integer class index, got {label!r}{hint}") from None
        if label < 0:
            raise ValueError(f"{manifest}:{line_number}: label must be >= 0, got {label}")
        entries.append(ManifestEntry(str(manifest.parent / path), label))
    if not entries:
        raise ValueError(f"{manifest}: manifest lists no videos")
    return entries


class VideoClipDataset(Dataset):
    """Clips of the videos in a manifest, sampled and preprocessed the V-JEPA 2 way. A manifest line names
    a video file or a folder of frames (`decoding.open_video`).

    Item `i` is `(clips, label, i)` with `clips` uint8 `[num_segments * num_views, C, T, H, W]`,
    segment-major (all views of segment 0, then segment 1, ...); training uses one view per
    segment. The same layout in both modes lets one probe loop serve training and evaluation.
    Pixels stay uint8 (a quarter of float32's bytes through the DataLoader's workers); the model's
    device normalizes them (`normalize(clips, channel_dim=-4)`, or `probing.encode_clips`).
    A video that cannot be used gives a `SkippedSample`; pair with `collate_skip_none`.
    `transform` maps one segment, uint8 `[T, C, H, W]`, to uint8 `[V, C, T, H, W]`; the default is
    `TrainTransform(crop_size)` or `EvalTransform(crop_size, num_views)`.

    V-JEPA 2's K400 frozen probe: 16 frames x step 4, 8 segments in both modes, 3 views in eval.
    """

    def __init__(
        self,
        manifest: str | os.PathLike,
        *,
        train: bool,
        frames_per_clip: int = 16,
        frame_step: int = 4,
        num_segments: int = 1,
        num_views: int = 1,
        crop_size: int = 256,
        min_frames: int = 1,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        backend: str = "auto",
        decode_threads: int = 1,
    ):
        if train and num_views != 1:
            raise ValueError("training uses one random view per segment; num_views must be 1")
        self.manifest = Path(manifest)
        self.entries = read_manifest(self.manifest)
        self.train = train
        self.frames_per_clip = frames_per_clip
        self.frame_step = frame_step
        self.num_segments = num_segments
        self.min_frames = min_frames
        self.transform = transform or (TrainTransform(crop_size) if train else EvalTransform(crop_size, num_views))
        self.backend = backend
        self.decode_threads = decode_threads

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[int]:
        return [entry.label for entry in self.entries]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | SkippedSample:
        path, label = self.entries[index]
        try:
            with open_video(path, self.backend, self.decode_threads) as video:
                indices = clip_indices(
                    video.info.num_frames,
                    self.frames_per_clip,
                    self.frame_step,
                    self.num_segments,
                    random_offset=self.train,
                    min_frames=self.min_frames,
                )
                frames = video.get_frames(indices.reshape(-1))
        except (VideoDecodeError, VideoTooShortError) as error:
            return SkippedSample(index, path, str(error))
        segments = frames.permute(0, 3, 1, 2).unflatten(0, indices.shape)  # [S, T, C, H, W]
        clips = torch.cat([self.transform(segment) for segment in segments])
        return clips, label, index


def collate_skip_none(batch: list) -> dict:
    """Stack usable samples; drop `None` and `SkippedSample` items and report them.

    Returns `clips` `[B, N, C, T, H, W]` (None when every item was skipped), `labels` and
    `indices` `[B]`, `skipped` (count), `skipped_paths` and `skipped_samples` (with their reasons).
    """
    kept = [item for item in batch if item is not None and not isinstance(item, SkippedSample)]
    skipped_samples = [item for item in batch if isinstance(item, SkippedSample)]
    skipped_paths = [item.path for item in skipped_samples]
    return {
        "clips": torch.stack([clips for clips, _, _ in kept]) if kept else None,
        "labels": torch.tensor([label for _, label, _ in kept], dtype=torch.long),
        "indices": torch.tensor([index for _, _, index in kept], dtype=torch.long),
        "skipped": len(batch) - len(kept),
        "skipped_paths": skipped_paths,
        "skipped_samples": skipped_samples,
    }
