import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as tvF

from hf_vjepa_area.data import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, normalize, resize_short_side


def random_video(frames, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize(
    "height,width,crop", [(240, 320, 256), (272, 640, 224), (360, 270, 224), (144, 176, 64), (64, 64, 64)]
)
def test_single_view_eval_equals_vjepa2_video_processor(height, width, crop):
    from transformers import VJEPA2VideoProcessor

    video = random_video(6, height, width)
    expected = VJEPA2VideoProcessor(crop_size=crop)(video.permute(0, 2, 3, 1).numpy(), return_tensors="pt")
    expected = expected["pixel_values_videos"][0]  # [T, C, H, W]
    ours = EvalTransform(crop, num_views=1)(video)
    assert ours.shape == (1, 3, 6, crop, crop) and ours.dtype == torch.float32
    # Same resize kernel and path (uint8 native vs float round trip), same fused normalization:
    # bit-identical here; 1e-5 leaves room for float reassociation on other CPUs.
    torch.testing.assert_close(ours[0].transpose(0, 1), expected, atol=1e-5, rtol=0)


def test_resize_short_side_matches_torchvision():
    video = random_video(3, 90, 160)
    resized = resize_short_side(video, 72)
    assert resized.dtype == torch.uint8 and resized.shape == (3, 3, 72, 128)
    assert torch.equal(resized, tvF.resize(video, [72], antialias=True))
    assert resize_short_side(video, 90) is video


def test_normalize():
    pixels = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    expected = (pixels.float() / 255 - mean) / std
    torch.testing.assert_close(normalize(pixels), expected)


@pytest.mark.parametrize("height,width", [(90, 160), (160, 90)])
def test_three_views_span_the_long_side(height, width):
    video = random_video(4, height, width)
    views = EvalTransform(64, num_views=3)(video)
    assert views.shape == (3, 3, 4, 64, 64)
    resized = normalize(resize_short_side(video, 64)).transpose(0, 1)  # [C, T, H', W']
    long_side = max(resized.shape[-2:])
    step = (long_side - 64) // 2
    for i, view in enumerate(views):
        start = i * step
        expected = resized[..., start : start + 64, :] if height > width else resized[..., start : start + 64]
        assert torch.equal(view, expected)
    assert long_side - (2 * step + 64) < 2  # the last view reaches the far edge


def test_train_transform_shape_and_reproducibility():
    video = random_video(5, 120, 160)
    make = lambda seed: TrainTransform(48, generator=torch.Generator().manual_seed(seed))
    out = make(0)(video)
    assert out.shape == (1, 3, 5, 48, 48) and out.dtype == torch.float32
    assert torch.equal(out, make(0)(video))
    assert not torch.equal(out, make(1)(video))


def test_crop_boxes_respect_scale_and_ratio():
    transform = TrainTransform(32, generator=torch.Generator().manual_seed(0))
    for _ in range(200):
        top, left, box_h, box_w = transform.crop_box(120, 160)
        assert 0 <= top <= 120 - box_h and 0 <= left <= 160 - box_w
        assert 0.3 * 0.95 <= box_h * box_w / (120 * 160) <= 1.0
        assert 3 / 4 * 0.95 <= box_w / box_h <= 4 / 3 * 1.05


def test_train_crop_equals_vjepa2_order_of_operations():
    """V-JEPA 2 normalizes, then crops and resizes; we crop and resize, then normalize."""
    video = random_video(4, 100, 140)
    transform = TrainTransform(56, horizontal_flip=False, generator=torch.Generator().manual_seed(3))
    top, left, box_h, box_w = transform.crop_box(100, 140)
    transform.generator.manual_seed(3)
    ours = transform(video)[0]
    normalized = normalize(video).transpose(0, 1)  # [C, T, H, W], as V-JEPA 2 holds it
    box = normalized[..., top : top + box_h, left : left + box_w]
    expected = F.interpolate(box, size=(56, 56), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_horizontal_flip_mirrors_the_clip():
    video = random_video(2, 64, 64)
    # scale (1, 1) and ratio (1, 1) make the crop the whole frame, so only the flip is random.
    outputs = [
        TrainTransform(64, scale=(1, 1), ratio=(1, 1), generator=torch.Generator().manual_seed(seed))(video)
        for seed in range(8)
    ]
    plain = normalize(video).transpose(0, 1).unsqueeze(0)
    assert all(torch.allclose(out, plain) or torch.allclose(out, plain.flip(-1)) for out in outputs)
    assert any(torch.allclose(out, plain.flip(-1)) for out in outputs)
    assert any(torch.allclose(out, plain) for out in outputs)
