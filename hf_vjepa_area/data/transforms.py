"""Spatial preprocessing: uint8 frames `[T, C, H, W]` -> float views `[V, C, T, H, W]`.

Eval with one view equals transformers' `VJEPA2VideoProcessor` (short side to
`int(crop * 256 / 224)`, antialiased bilinear, centre crop, ImageNet mean/std). Several views
follow V-JEPA 2's `EvalVideoTransform`: short side to `crop`, then `num_views` crops evenly spaced
along the long side (left/centre/right for 3). Training follows V-JEPA 2's `VideoTransform`:
random resized crop (one box for all frames) and a horizontal flip. RandAugment and random
erasing, which V-JEPA 2's frozen evals add on top, are not included.

`[C, T, H, W]` per view is the layout of timm and of the original code.
"""

from __future__ import annotations

import math
import platform

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resizes_uint8_natively(device: torch.device) -> bool:
    """Whether torchvision (hence `VJEPA2VideoProcessor`) resizes uint8 without a float round trip.

    Both paths are legitimate but differ by one grey level in ~20% of pixels; following the same
    rule as torchvision keeps the result bit-identical to the transformers processor.
    """
    if device.type != "cpu":
        return False
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


def resize_short_side(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 `[T, C, H, W]` so the short side is `size`; the long side is truncated like
    transformers/torchvision do (`int(size * long / short)`). Antialiased bilinear, uint8 out."""
    height, width = frames.shape[-2:]
    if height <= width:
        new_size = (size, int(size * width / height))
    else:
        new_size = (int(size * height / width), size)
    if new_size == (height, width):
        return frames
    if _resizes_uint8_natively(frames.device):
        return F.interpolate(frames, size=new_size, mode="bilinear", antialias=True, align_corners=False)
    resized = F.interpolate(frames.float(), size=new_size, mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def normalize(frames: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """0..255 pixels `[..., C, H, W]` -> float32 `(x / 255 - mean) / std`, in transformers' fused form
    `(x - 255 mean) / (255 std)` so results agree to the last float32 bit."""
    scale = 255.0
    mean = torch.tensor(mean, dtype=torch.float32, device=frames.device).view(-1, 1, 1) * scale
    std = torch.tensor(std, dtype=torch.float32, device=frames.device).view(-1, 1, 1) * scale
    return (frames.float() - mean) / std


class EvalTransform:
    """Deterministic eval views: `[T, C, H, W]` uint8 -> `[num_views, C, T, crop, crop]` float32."""

    def __init__(self, crop_size: int = 256, num_views: int = 1):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.crop_size = crop_size
        self.num_views = num_views

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        crop = self.crop_size
        if self.num_views == 1:
            frames = resize_short_side(frames, int(crop * 256 / 224))
            height, width = frames.shape[-2:]
            top, left = int((height - crop) / 2.0), int((width - crop) / 2.0)
            views = [frames[..., top : top + crop, left : left + crop]]
        else:
            frames = resize_short_side(frames, crop)
            height, width = frames.shape[-2:]
            step = (max(height, width) - crop) // (self.num_views - 1)
            if height > width:
                views = [frames[..., i * step : i * step + crop, :] for i in range(self.num_views)]
            else:
                views = [frames[..., i * step : i * step + crop] for i in range(self.num_views)]
        return normalize(torch.stack(views)).transpose(1, 2)


class TrainTransform:
    """Random resized crop + horizontal flip: `[T, C, H, W]` uint8 -> `[1, C, T, crop, crop]` float32.

    The crop box is drawn as in V-JEPA 2 (log-uniform aspect ratio, 10 tries, then a centre
    crop) and resized with plain bilinear (no antialias), as there. V-JEPA 2 normalizes before
    cropping; normalization is per-channel affine and bilinear resizing is linear, so doing it
    after (on far fewer pixels) gives the same values up to float rounding.
    """

    def __init__(
        self,
        crop_size: int = 256,
        scale: tuple[float, float] = (0.3, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        horizontal_flip: bool = True,
        generator: torch.Generator | None = None,
    ):
        self.crop_size = crop_size
        self.scale = scale
        self.ratio = ratio
        self.horizontal_flip = horizontal_flip
        self.generator = generator  # None: torch's global RNG, which DataLoader reseeds per worker

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator))

    def _randint(self, low: int, high_inclusive: int) -> int:
        return int(torch.randint(low, high_inclusive + 1, (), generator=self.generator))

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

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        top, left, box_h, box_w = self.crop_box(*frames.shape[-2:])
        box = frames[..., top : top + box_h, left : left + box_w].float()
        clip = F.interpolate(box, size=(self.crop_size, self.crop_size), mode="bilinear", align_corners=False)
        if self.horizontal_flip and float(torch.rand((), generator=self.generator)) < 0.5:
            clip = clip.flip(-1)
        return normalize(clip).transpose(0, 1).unsqueeze(0)
