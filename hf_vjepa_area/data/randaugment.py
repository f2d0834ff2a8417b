"""RandAugment for video clips, V-JEPA 2's frozen-eval policy (timm's `rand-m7-n4-mstd0.5-inc1`) with one
draw per clip, so every frame of a clip gets the same operations at the same magnitudes."""

from __future__ import annotations

import math

import torch


def uniform_draw(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def int_draw(generator: torch.Generator | None, low: int, high_inclusive: int) -> int:
    return int(torch.randint(low, high_inclusive + 1, (), generator=generator))


class VideoRandAugment:
    """RandAugment for a clip: uint8 `[T, C, H, W]` -> uint8 `[T, C, H, W]`, ONE draw for all frames.

    The policy V-JEPA 2 trains its frozen-eval probes with, timm's `rand-m7-n4-mstd0.5-inc1`:
    `num_ops` ops drawn uniformly, with replacement, from the 15 "increasing" ops below; each is
    applied with probability `prob`, at a magnitude drawn from N(`magnitude`, `magnitude_std`)
    clipped to [0, 10], and the signed ops (rotate, shear, translate, the enhance factors) get a
    random sign. At magnitude 10: rotate 30 degrees, shear 0.3, translate 0.45 of the frame, enhance
    factor 1 +- 0.9, posterize to 0 bits, solarize above 0, solarize-add 110. Geometric ops fill with
    grey 128.

    The ops are torchvision.transforms.v2 functional kernels, which treat the leading dimension as a
    batch: one set of parameters for every frame, and the per-image statistics (autocontrast's
    range, equalize's histogram, contrast's mean) are each frame's own, as V-JEPA 2's per-frame PIL
    calls compute them. Geometric ops resample bilinearly (torchvision has no bicubic for tensors;
    V-JEPA 2 asks PIL for bicubic).
    """

    OPS = (
        "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
        "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
    )  # fmt: skip
    MAX_MAGNITUDE = 10.0

    def __init__(
        self,
        magnitude: float = 7.0,
        num_ops: int = 4,
        magnitude_std: float = 0.5,
        prob: float = 0.5,
        translate_fraction: float = 0.45,
        fill: int = 128,
        generator: torch.Generator | None = None,
    ):
        self.magnitude = magnitude
        self.num_ops = num_ops
        self.magnitude_std = magnitude_std
        self.prob = prob
        self.translate_fraction = translate_fraction
        self.fill = fill
        self.generator = generator  # None: torch's global RNG

    def sample_ops(self, generator: torch.Generator | None = None) -> list[tuple[str, float | None]]:
        """The ops one clip gets, with their arguments (ops that lost their coin flip left out)."""
        generator = generator if generator is not None else self.generator
        ops = []
        for _ in range(self.num_ops):
            name = self.OPS[int_draw(generator, 0, len(self.OPS) - 1)]
            if float(torch.rand((), generator=generator)) > self.prob:
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude += self.magnitude_std * float(torch.randn((), generator=generator))
            level = min(self.MAX_MAGNITUDE, max(0.0, magnitude)) / self.MAX_MAGNITUDE  # 0..1
            ops.append((name, self._argument(name, level, generator)))
        return ops

    @staticmethod
    def _argument(name: str, level: float, generator: torch.Generator | None) -> float | None:
        def signed(value: float) -> float:
            return -value if float(torch.rand((), generator=generator)) > 0.5 else value

        if name in ("AutoContrast", "Equalize", "Invert"):
            return None
        if name == "Rotate":
            return signed(30.0 * level)  # degrees
        if name == "Posterize":
            return 4 - int(4 * level)  # bits kept: 4 down to 0
        if name == "Solarize":
            return 256 - int(256 * level)  # threshold: 256 (nothing) down to 0 (everything)
        if name == "SolarizeAdd":
            return int(110 * level)
        if name in ("Color", "Contrast", "Brightness", "Sharpness"):
            return 1.0 + signed(0.9 * level)  # enhance factor
        if name in ("ShearX", "ShearY"):
            return signed(0.3 * level)  # shear factor
        return signed(level)  # TranslateX / TranslateY: fraction of translate_fraction x frame size

    def apply(self, frames: torch.Tensor, ops: list[tuple[str, float | None]]) -> torch.Tensor:
        """Apply `sample_ops`' ops, in order, to uint8 `[..., C, H, W]` (every leading index alike)."""
        import torchvision.transforms.v2.functional as TF  # torchvision comes with timm; only needed here
        from torchvision.transforms import InterpolationMode

        bilinear = InterpolationMode.BILINEAR
        height, width = frames.shape[-2:]
        for name, arg in ops:
            if name == "AutoContrast":
                frames = TF.autocontrast(frames)
            elif name == "Equalize":
                frames = TF.equalize(frames)
            elif name == "Invert":
                frames = TF.invert(frames)
            elif name == "Rotate":
                frames = TF.rotate(frames, arg, interpolation=bilinear, fill=self.fill)
            elif name == "Posterize":
                frames = TF.posterize(frames, int(arg)) if arg < 8 else frames
            elif name == "Solarize":
                frames = TF.solarize(frames, arg) if arg <= 255 else frames
            elif name == "SolarizeAdd":
                added = (frames.to(torch.int16) + int(arg)).clamp_(max=255).to(torch.uint8)
                frames = torch.where(frames < 128, added, frames)
            elif name == "Color":
                frames = TF.adjust_saturation(frames, arg)
            elif name == "Contrast":
                frames = TF.adjust_contrast(frames, arg)
            elif name == "Brightness":
                frames = TF.adjust_brightness(frames, arg)
            elif name == "Sharpness":
                frames = TF.adjust_sharpness(frames, arg)
            elif name in ("ShearX", "ShearY"):  # PIL's shear about the top-left corner, as an angle
                angle = math.degrees(math.atan(arg))
                shear = [angle, 0.0] if name == "ShearX" else [0.0, angle]
                frames = TF.affine(frames, angle=0.0, translate=[0.0, 0.0], scale=1.0, shear=shear,
                                   interpolation=bilinear, fill=self.fill, center=[0.0, 0.0])  # fmt: skip
            elif name in ("TranslateX", "TranslateY"):
                if name == "TranslateX":
                    shift = [arg * self.translate_fraction * width, 0.0]
                else:
                    shift = [0.0, arg * self.translate_fraction * height]
                frames = TF.affine(frames, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0],
                                   interpolation=bilinear, fill=self.fill)  # fmt: skip
            else:
                raise ValueError(f"unknown op {name!r}")
        return frames

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if frames.dtype != torch.uint8:
            raise TypeError(f"VideoRandAugment expects uint8 frames, got {frames.dtype}")
        return self.apply(frames, self.sample_ops(generator))
