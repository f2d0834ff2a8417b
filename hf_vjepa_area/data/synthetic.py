"""A tiny, real, encoded video data set whose classes a frozen probe can learn: motion direction.

Each video shows one bright square drifting in a fixed direction (class: right, left, down,
up, then the diagonals) over a random colour with a noisy texture and per-frame noise. Size,
colour, speed and start point are random, so a single frame says nothing about the class;
only motion does. The files are real H.264 (or MPEG-4 part 2) mp4s, so the whole pipeline
(decode, sample, preprocess) runs as it would on Kinetics.

Deterministic: video (c, i) draws from its own RNG seeded by (seed, c, i) and is encoded at a
constant quantiser by one thread, so its bytes depend on the seed alone. Idempotent: files are
written atomically and a complete file is reused, guarded by a spec file that records the
arguments, so a rerun with other arguments cannot mix two data sets.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .._files import write_atomically, write_text_atomically

DIRECTIONS = {
    "right": (0, 1),
    "left": (0, -1),
    "down": (1, 0),
    "up": (-1, 0),
    "down_right": (1, 1),
    "up_left": (-1, -1),
    "down_left": (1, -1),
    "up_right": (-1, 1),
}
SPEC_FILE = "synthetic.json"

# The examples' built-in demo set (the probe and the anneal share it): 4 motion classes x 40 videos of
# 48 frames at 64 px, under outputs/demo_data/CLASSESxVIDEOS.
DEMO_VIDEOS = dict(num_classes=4, videos_per_class=40, frames=48, size=64)


def demo_data_root(num_classes: int, videos_per_class: int) -> str:
    """One folder per demo set, so a set of another size never meets an old one."""
    return f"outputs/demo_data/{num_classes}x{videos_per_class}"


@dataclass(frozen=True)
class SyntheticVideoDataset:
    root: Path
    train_manifest: Path
    val_manifest: Path
    class_names: list[str]
    encoder: str


def video_encoder() -> str:
    """H.264 like Kinetics when this FFmpeg build has libx264, else MPEG-4 part 2 (always built in)."""
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except av.codec.codec.UnknownCodecError:
            continue
    raise RuntimeError("this PyAV build has neither libx264 nor mpeg4 encoders")


def render_moving_square(direction: tuple[int, int], frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 `[frames, size, size, 3]`: a bright square moving along `direction` over noise."""
    background = rng.integers(0, 140, size=3) + 20 * rng.standard_normal((size, size, 3), dtype=np.float32)
    side = int(rng.integers(size // 8, size // 4 + 1))
    colour = rng.integers(190, 256, size=3)
    room = size - side
    travel = rng.uniform(0.5, 1.0) * room  # total displacement along each moving axis
    position = []
    for axis_direction in direction:
        if axis_direction > 0:
            position.append(rng.uniform(0, room - travel))
        elif axis_direction < 0:
            position.append(rng.uniform(travel, room))
        else:
            position.append(rng.uniform(0, room))

    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        image = background + 6 * rng.standard_normal((size, size, 3), dtype=np.float32)
        progress = travel * t / max(frames - 1, 1)
        top, left = (round(p + d * progress) for p, d in zip(position, direction))
        image[top : top + side, left : left + side] = colour
        video[t] = image.clip(0, 255)
    return video


def write_video(path: Path, video: np.ndarray, fps: int, encoder: str) -> None:
    """Encode uint8 `[T, H, W, 3]` to an mp4 at `path`, atomically."""

    def encode(temp: Path) -> None:
        with av.open(str(temp), "w", format="mp4") as container:
            stream = container.add_stream(encoder, rate=fps)
            stream.height, stream.width = video.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1
            if encoder == "libx264":
                # Constant quantiser, one thread: x264's float rate control (crf, adaptive quantisation,
                # mb-tree) gave other bytes and pixels depending on what the process had run before.
                stream.options = {"qp": "18", "preset": "veryfast", "threads": "1"}
            for image in video:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())

    write_atomically(path, encode)


def make_synthetic_video_dataset(
    root: str | os.PathLike,
    num_classes: int = 4,
    videos_per_class: int = 12,
    frames: int = 32,
    size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.25,
    fps: int = 8,
) -> SyntheticVideoDataset:
    """Write (or reuse) the videos plus `train.csv`, `val.csv` and `classes.txt` under `root`.

    Layout is Kinetics-like, `root/videos/<class>/<class>_<i>.mp4`; the manifests use paths
    relative to `root`. The last `round(videos_per_class * val_fraction)` videos of each class
    (at least one) are validation. `size` must be even (yuv420p).
    """
    if not 1 <= num_classes <= len(DIRECTIONS):
        raise ValueError(f"num_classes must be in [1, {len(DIRECTIONS)}], got {num_classes}")
    if size % 2 or size < 16:
        raise ValueError(f"size must be even and >= 16, got {size}")
    num_val = max(1, round(videos_per_class * val_fraction))
    if videos_per_class - num_val < 1:
        raise ValueError(f"videos_per_class={videos_per_class} leaves no training video at val_fraction={val_fraction}")

    root = Path(root)
    encoder = video_encoder()
    spec = dict(num_classes=num_classes, videos_per_class=videos_per_class, frames=frames, size=size,
                seed=seed, val_fraction=val_fraction, fps=fps, encoder=encoder)  # fmt: skip
    spec_text = json.dumps(spec, indent=2, sort_keys=True) + "\n"
    spec_path = root / SPEC_FILE
    if spec_path.exists() and spec_path.read_text(encoding="utf-8") != spec_text:
        raise FileExistsError(f"{root} holds a synthetic data set made with other arguments ({spec_path})")
    write_text_atomically(spec_path, spec_text, overwrite=True)

    class_names = list(DIRECTIONS)[:num_classes]
    lines = {"train": [], "val": []}
    for label, name in enumerate(class_names):
        for i in range(videos_per_class):
            relative = Path("videos") / name / f"{name}_{i:03d}.mp4"
            if not (root / relative).exists():
                rng = np.random.default_rng([seed, label, i])
                write_video(root / relative, render_moving_square(DIRECTIONS[name], frames, size, rng), fps, encoder)
            split = "val" if i >= videos_per_class - num_val else "train"
            lines[split].append(f"{relative.as_posix()} {label}\n")

    for split, split_lines in lines.items():
        write_text_atomically(root / f"{split}.csv", "".join(split_lines), overwrite=True)
    write_text_atomically(root / "classes.txt", "".join(f"{name}\n" for name in class_names), overwrite=True)
    return SyntheticVideoDataset(root, root / "train.csv", root / "val.csv", class_names, encoder)
