"""Spatial preprocessing: uint8 frames `[T, C, H, W]` -> uint8 views `[V, C, T, H, W]`; `normalize`
turns them into the encoder's float input.

Views stay uint8 until the model's device normalizes them: a DataLoader worker ships a quarter of the
bytes, and nothing at full frame size is ever converted to float.

Eval follows V-JEPA 2's frozen-eval transforms (`evals/video_classification_frozen/utils.py`), which
resize the decoder's uint8 frames with OpenCV (`cv2.resize`, `INTER_LINEAR`: bilinear, no
antialiasing, in 11-bit fixed point). `resize_opencv_bilinear` reproduces that resize bit for bit
(NumPy integer arithmetic), so eval views equal V-JEPA 2's pixels without OpenCV at run time. Several views
(`EvalVideoTransform`): short side to `crop`, then `num_views` crops evenly spaced along the long
side (left/centre/right for 3). One view (`VideoTransform(training=False)`): short side to
`int(crop * 256 / 224)`, centre crop. `EvalTransform(..., resize="antialias")` with one view instead
equals transformers' `VJEPA2VideoProcessor` (antialiased bilinear, same sizes and crop).

Training follows V-JEPA 2's `VideoTransform`: optional RandAugment on the full frames, random resized
crop (one box for all frames), an optional horizontal flip, optional random erasing of one box
through all frames ("cube"); each with one draw per clip from one `torch.Generator` (or torch's
global RNG), so a clip's augmentation is a pure function of the seed.

`[C, T, H, W]` per view is the layout of timm and of the original code.
"""

from __future__ import annotations

import math
import platform

import numpy as np
import torch
import torch.nn.functional as F

from .randaugment import VideoRandAugment, int_draw, uniform_draw
from ..modeling.timm_metadata import IMAGENET_MEAN, IMAGENET_STD  # the released preprocessing's, one place


def _resizes_uint8_natively(device: torch.device) -> bool:
    """Whether torchvision (hence `VJEPA2VideoProcessor`) resizes uint8 without a float round trip.

    Both paths are legitimate but differ by one grey level in ~20% of pixels; following the same
    rule as torchvision keeps the result bit-identical to the transformers processor.
    """
    if device.type != "cpu":
        return False
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


RESIZE_METHODS = ("opencv", "antialias")
_OPENCV_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: 11-bit fixed-point weights for uint8


def _opencv_linear_taps(src: int, dst: int, clamp_weights: bool) -> tuple[np.ndarray, ...]:
    """Source indices and fixed-point weights of `cv2.resize(INTER_LINEAR)` along one axis.

    OpenCV maps output `d` to `(d + 0.5) * scale - 0.5` (double, then float32), with
    `scale = 1 / (dst / src)`, and rounds each weight to a multiple of 1/2048 separately. Along x it
    also moves taps outside the image onto the edge pixel with weight 0; along y it keeps the weight
    and clamps the row index only, which the rounding of the vertical pass can tell apart.
    """
    scale = 1.0 / (dst / src)
    position = ((torch.arange(dst, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)
    first = torch.floor(position)
    frac = position - first
    first = first.to(torch.int64)
    if clamp_weights:
        outside = (first < 0) | (first >= src - 1)
        frac = torch.where(outside, torch.zeros_like(frac), frac)
        first = first.clamp(0, src - 1)
    weight0 = torch.round((1.0 - frac) * _OPENCV_COEF_SCALE).to(torch.int32)  # round half to even, as cvRound
    weight1 = torch.round(frac * _OPENCV_COEF_SCALE).to(torch.int32)
    taps = first.clamp(0, src - 1), (first + 1).clamp(0, src - 1), weight0, weight1
    return tuple(tap.numpy() for tap in taps)


def resize_opencv_bilinear(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 `[..., H, W]` -> uint8 `[..., height, width]`, bit-identical to OpenCV's
    `cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)` on each channel.

    The arithmetic is OpenCV's for 8-bit images: a horizontal pass in integers (weights out of
    2048), then a vertical pass that rounds the way its vectorised kernel does (`>> 4`, a 16-bit
    high multiply, `(x + 2) >> 2`; its scalar tail uses the same formula). An exact 2x reduction in
    both axes is OpenCV's 2x2 box average, `(a + b + c + d + 2) >> 2`, as `cv2.resize` switches to
    INTER_AREA there. Computed with NumPy on the CPU (DataLoader workers; its gathers are several
    times faster than torch's there); the result goes back to the input's device. About 10x OpenCV's
    time (16 frames of 1280x720 to 455x256: ~0.2 s on one core, OpenCV ~0.02 s).
    """
    if frames.dtype != torch.uint8:
        raise TypeError(f"resize_opencv_bilinear expects uint8 frames, got {frames.dtype}")
    src_h, src_w = frames.shape[-2:]
    if (height, width) == (src_h, src_w):
        return frames
    pixels = np.ascontiguousarray(frames.cpu().numpy())  # gathers along contiguous rows are the fast ones
    if 1.0 / (width / src_w) == 2.0 and 1.0 / (height / src_h) == 2.0:
        total = pixels[..., 0::2, 0::2].astype(np.int32) + pixels[..., 0::2, 1::2] + pixels[..., 1::2, 0::2]
        total += pixels[..., 1::2, 1::2]
        return torch.from_numpy(((total + 2) >> 2).astype(np.uint8)).to(frames.device)
    x0, x1, a0, a1 = _opencv_linear_taps(src_w, width, clamp_weights=True)
    y0, y1, b0, b1 = _opencv_linear_taps(src_h, height, clamp_weights=False)
    used = np.union1d(y0, y1)  # the horizontal pass only on the rows the vertical pass reads
    y0, y1 = np.searchsorted(used, y0), np.searchsorted(used, y1)
    pixels = np.take(pixels, used, axis=-2)
    rows = np.take(pixels, x0, axis=-1).astype(np.int32)
    rows *= a0
    right = np.take(pixels, x1, axis=-1).astype(np.int32)
    right *= a1
    rows += right  # exact: at most 255 * 2048
    rows >>= 4
    out = np.take(rows, y0, axis=-2)
    out *= b0[:, None]
    out >>= 16
    lower = np.take(rows, y1, axis=-2)
    lower *= b1[:, None]
    lower >>= 16
    out += lower
    out += 2
    out >>= 2
    return torch.from_numpy(out.astype(np.uint8)).to(frames.device)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the short side `size` and the long side truncated, `int(size * long / short)`,
    as V-JEPA 2 (`get_resize_sizes`) and transformers/torchvision compute it."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def resize_short_side(frames: torch.Tensor, size: int, method: str = "opencv") -> torch.Tensor:
    """Resize uint8 `[T, C, H, W]` so the short side is `size`; uint8 out.

    `method="opencv"`: V-JEPA 2's eval resize (`resize_opencv_bilinear`, no antialiasing).
    `method="antialias"`: transformers' `VJEPA2VideoProcessor` (torchvision's antialiased bilinear).
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}; choose one of {RESIZE_METHODS}")
    height, width = frames.shape[-2:]
    new_size = short_side_size(height, width, size)
    if new_size == (height, width):
        return frames
    if method == "opencv":
        return resize_opencv_bilinear(frames, *new_size)
    if _resizes_uint8_natively(frames.device):
        return F.interpolate(frames, size=new_size, mode="bilinear", antialias=True, align_corners=False)
    resized = F.interpolate(frames.float(), size=new_size, mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def resize_rounded(frames: torch.Tensor, height: int, width: int, chunk: int = 4) -> torch.Tensor:
    """uint8 `[T, C, h, w]` -> uint8 `[T, C, height, width]`: bilinear, no antialias (torch's, as V-JEPA 2's
    training crops), computed in float32 and rounded to the nearest grey level, `chunk` frames at a time
    (bounds the float copy of a large crop: 1080p, ~100 MB).

    V-JEPA 2 resizes normalized floats; resizing is linear and normalization per-channel affine, so
    this is its result to within half a grey level, on every CPU (torch's native uint8 kernel differs
    by one grey level between builds).
    """
    out = torch.empty((*frames.shape[:-2], height, width), dtype=torch.uint8, device=frames.device)
    for start in range(0, len(frames), chunk):
        part = frames[start : start + chunk].float()
        resized = F.interpolate(part, size=(height, width), mode="bilinear", align_corners=False)
        out[start : start + chunk] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def normalize(frames: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD, *, channel_dim: int = -3) -> torch.Tensor:
    """0..255 pixels (channels at `channel_dim`: -3 for `[..., C, H, W]`, 1 for clips `[N, C, T, H, W]`)
    -> float32 `(x / 255 - mean) / std`, in transformers' fused form `(x - 255 mean) / (255 std)` so
    results agree to the last float32 bit."""
    shape = [1] * frames.ndim
    shape[channel_dim] = -1
    scale = 255.0
    mean = torch.tensor(mean, dtype=torch.float32, device=frames.device).view(shape) * scale
    std = torch.tensor(std, dtype=torch.float32, device=frames.device).view(shape) * scale
    return (frames.float() - mean) / std


class EvalTransform:
    """Deterministic eval views: `[T, C, H, W]` uint8 -> `[num_views, C, T, crop, crop]` uint8.

    V-JEPA 2's frozen-eval views (`resize="opencv"`, see the module docstring), or transformers'
    `VJEPA2VideoProcessor` (`resize="antialias"`, one view). The one-view centre crop starts at
    `round((size - crop) / 2)` with Python's round (half to even) like V-JEPA 2's `CenterCrop`, and at
    `int((size - crop) / 2)` like transformers' `center_crop` in the processor's case: they differ by
    one pixel when `size - crop` is odd.
    """

    def __init__(self, crop_size: int = 256, num_views: int = 1, resize: str = "opencv"):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if resize not in RESIZE_METHODS:
            raise ValueError(f"unknown resize method {resize!r}; choose one of {RESIZE_METHODS}")
        self.crop_size = crop_size
        self.num_views = num_views
        self.resize = resize

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        crop = self.crop_size
        if self.num_views == 1:
            frames = resize_short_side(frames, int(crop * 256 / 224), self.resize)
            height, width = frames.shape[-2:]
            offset = round if self.resize == "opencv" else int
            top, left = offset((height - crop) / 2.0), offset((width - crop) / 2.0)
            views = [frames[..., top : top + crop, left : left + crop]]
        else:
            frames = resize_short_side(frames, crop, self.resize)
            height, width = frames.shape[-2:]
            step = (max(height, width) - crop) // (self.num_views - 1)
            if height > width:
                views = [frames[..., i * step : i * step + crop, :] for i in range(self.num_views)]
            else:
                views = [frames[..., i * step : i * step + crop] for i in range(self.num_views)]
        return torch.stack(views).transpose(1, 2)


class TrainTransform:
    """V-JEPA 2's training view: `[T, C, H, W]` uint8 -> `[1, C, T, crop, crop]` uint8.

    In V-JEPA 2's order: RandAugment on the full uint8 frames (`auto_augment`, `VideoRandAugment`),
    random resized crop, horizontal flip, random erasing (`erase_prob`); normalization follows on the
    device. Every step uses one draw for the whole clip.

    The crop box is drawn as in V-JEPA 2 (log-uniform aspect ratio, 10 tries, then a centre crop) and
    resized with plain bilinear (no antialias), as there, but on the uint8 crop (`resize_rounded`):
    V-JEPA 2 normalizes first and resizes floats; normalization is per-channel affine and bilinear
    resizing is linear, so the two differ only by the rounding to whole grey levels (at most half a
    level).

    Random erasing is V-JEPA 2's (timm's) in 'pixel' mode, one box, "cube": with probability
    `erase_prob` one box of area fraction U(0.02, 1/3) and log-uniform aspect ratio in (0.3, 1/0.3)
    (up to 100 tries) is replaced, at the same place in every frame, by N(0, 1) noise in normalized
    units (fresh per pixel and frame), stored as the nearest grey level: values beyond the 0..255 range
    (|noise| > ~2.1) saturate, about 3% of them.

    The defaults (no RandAugment, no erasing, scale 0.3-1, flip) are the plain crop; V-JEPA 2's K400
    frozen eval uses `VJEPA2_K400_TRAIN`. With `auto_augment=False` and `erase_prob=0` no extra random
    numbers are drawn.
    """

    ERASE_AREA = (0.02, 1 / 3)
    ERASE_ASPECT = (0.3, 1 / 0.3)
    ERASE_TRIES = 100

    def __init__(
        self,
        crop_size: int = 256,
        scale: tuple[float, float] = (0.3, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        horizontal_flip: bool = True,
        generator: torch.Generator | None = None,
        auto_augment: bool = False,
        erase_prob: float = 0.0,
    ):
        if not 0.0 <= erase_prob <= 1.0:
            raise ValueError(f"erase_prob must be in [0, 1], got {erase_prob}")
        self.crop_size = crop_size
        self.scale = scale
        self.ratio = ratio
        self.horizontal_flip = horizontal_flip
        self.generator = generator  # None: torch's global RNG, which DataLoader reseeds per worker
        self.auto_augment = auto_augment
        self.rand_augment = VideoRandAugment() if auto_augment else None
        self.erase_prob = erase_prob

    def _uniform(self, low: float, high: float) -> float:
        return uniform_draw(self.generator, low, high)

    def _randint(self, low: int, high_inclusive: int) -> int:
        return int_draw(self.generator, low, high_inclusive)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, box_height, box_width) of a random crop with area fraction in `scale`."""
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = self._uniform(*self.scale) * height * width
            aspect = math.exp(self._uniform(*log_ratio))
            box_w = round(math.sqrt(area * aspect))
            box_h = round(math.sqrt(area / aspect))
            if 0 < box_w <= width and 0 < box_h <= height:
                return self._randint(0, height - box_h), self._randint(0, width - box_w), box_h, box_w
        aspect = width / height
        if aspect < min(self.ratio):
            box_w, box_h = width, round(width / min(self.ratio))
        elif aspect > max(self.ratio):
            box_w, box_h = round(height * max(self.ratio)), height
        else:
            box_w, box_h = width, height
        return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w

    def erase_box(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """(top, left, box_height, box_width) to erase, or None (probability 1 - `erase_prob`, or no fit)."""
        if self.erase_prob <= 0.0 or float(torch.rand((), generator=self.generator)) > self.erase_prob:
            return None
        log_aspect = (math.log(self.ERASE_ASPECT[0]), math.log(self.ERASE_ASPECT[1]))
        for _ in range(self.ERASE_TRIES):
            area = self._uniform(*self.ERASE_AREA) * height * width
            aspect = math.exp(self._uniform(*log_aspect))
            box_h = round(math.sqrt(area * aspect))
            box_w = round(math.sqrt(area / aspect))
            if box_h < height and box_w < width:
                return self._randint(0, height - box_h), self._randint(0, width - box_w), box_h, box_w
        return None

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.rand_augment is not None:
            frames = self.rand_augment(frames, generator=self.generator)
        top, left, box_h, box_w = self.crop_box(*frames.shape[-2:])
        box = frames[..., top : top + box_h, left : left + box_w]
        clip = resize_rounded(box, self.crop_size, self.crop_size)
        if self.horizontal_flip and float(torch.rand((), generator=self.generator)) < 0.5:
            clip = clip.flip(-1)
        clip = clip.transpose(0, 1)  # [C, T, crop, crop]
        erase = self.erase_box(self.crop_size, self.crop_size)
        if erase is not None:
            top, left, box_h, box_w = erase
            noise = torch.randn((clip.shape[0], clip.shape[1], box_h, box_w), generator=self.generator)
            clip = clip.clone()
            clip[..., top : top + box_h, left : left + box_w] = normal_noise_pixels(noise).to(clip.device)
        return clip.unsqueeze(0)


def normal_noise_pixels(noise: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Noise in normalized units, channels first `[C, ...]` -> the nearest uint8 pixels (saturating)."""
    shape = (-1,) + (1,) * (noise.ndim - 1)
    mean = torch.tensor(mean).view(shape) * 255.0
    std = torch.tensor(std).view(shape) * 255.0
    return (noise * std + mean).round_().clamp_(0, 255).to(torch.uint8)


# V-JEPA 2's K400 frozen-eval training clips (evals/video_classification_frozen/eval.py, make_dataloader).
VJEPA2_K400_TRAIN = dict(
    scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), horizontal_flip=False, auto_augment=True, erase_prob=0.25
)
