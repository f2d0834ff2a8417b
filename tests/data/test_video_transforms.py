import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as tvF

from hf_vjepa_area.data import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, normalize, resize_short_side
from hf_vjepa_area.data.transforms import VJEPA2_K400_TRAIN, VideoRandAugment


def random_video(frames, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize(
    "height,width,crop",
    [(240, 320, 256), (240, 322, 256), (272, 640, 224), (360, 270, 224), (144, 176, 64), (64, 64, 64)],
)
def test_single_view_eval_equals_vjepa2_video_processor(height, width, crop):
    from transformers import VJEPA2VideoProcessor

    video = random_video(6, height, width)
    expected = VJEPA2VideoProcessor(crop_size=crop)(video.permute(0, 2, 3, 1).numpy(), return_tensors="pt")
    expected = expected["pixel_values_videos"][0]  # [T, C, H, W]
    views = EvalTransform(crop, num_views=1, resize="antialias")(video)
    assert views.shape == (1, 3, 6, crop, crop) and views.dtype == torch.uint8
    ours = normalize(views, channel_dim=1)
    # Same resize kernel and path (uint8 native vs float round trip), same fused normalization:
    # bit-identical here; 1e-5 leaves room for float reassociation on other CPUs.
    torch.testing.assert_close(ours[0].transpose(0, 1), expected, atol=1e-5, rtol=0)


def test_resize_short_side_matches_torchvision():
    video = random_video(3, 90, 160)
    resized = resize_short_side(video, 72, method="antialias")
    assert resized.dtype == torch.uint8 and resized.shape == (3, 3, 72, 128)
    assert torch.equal(resized, tvF.resize(video, [72], antialias=True))
    assert resize_short_side(video, 90, method="antialias") is video
    assert resize_short_side(video, 90) is video


def test_normalize():
    pixels = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    expected = (pixels.float() / 255 - mean) / std
    torch.testing.assert_close(normalize(pixels), expected)
    clips = pixels.permute(1, 0, 2, 3).unsqueeze(0)  # [N, C, T, H, W]: channels at dim 1
    torch.testing.assert_close(normalize(clips, channel_dim=1), expected.permute(1, 0, 2, 3).unsqueeze(0))


@pytest.mark.parametrize("height,width", [(90, 160), (160, 90)])
def test_three_views_span_the_long_side(height, width):
    video = random_video(4, height, width)
    views = EvalTransform(64, num_views=3)(video)
    assert views.shape == (3, 3, 4, 64, 64)
    assert views.dtype == torch.uint8
    resized = resize_short_side(video, 64).transpose(0, 1)  # [C, T, H', W']
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
    assert out.shape == (1, 3, 5, 48, 48) and out.dtype == torch.uint8
    assert torch.equal(out, make(0)(video))
    assert not torch.equal(out, make(1)(video))


def test_crop_boxes_respect_scale_and_ratio():
    transform = TrainTransform(32, generator=torch.Generator().manual_seed(0))
    for _ in range(200):
        top, left, box_h, box_w = transform.crop_box(120, 160)
        assert 0 <= top <= 120 - box_h and 0 <= left <= 160 - box_w
        assert 0.3 * 0.95 <= box_h * box_w / (120 * 160) <= 1.0
        assert 3 / 4 * 0.95 <= box_w / box_h <= 4 / 3 * 1.05


@pytest.mark.parametrize("height,width,expected", [(100, 300, (0, 83, 100, 133)), (300, 100, (83, 0, 133, 100)),
                                                   (90, 100, (0, 0, 90, 100))])  # fmt: skip
def test_crop_box_falls_back_to_vjepa2s_centre_crop(height, width, expected):
    """No box of 2-3x the frame's area fits: V-JEPA 2's `_get_param_spatial_crop` fallback, the largest
    centre box within the aspect range (100 x 300: width round(100 * 4 / 3) = 133 from (300 - 133) // 2)."""
    transform = TrainTransform(32, scale=(2.0, 3.0), generator=torch.Generator().manual_seed(0))
    assert transform.crop_box(height, width) == expected


# One grey level in normalized units (the largest of the three channels').
GREY_LEVEL = 1 / (255 * min(IMAGENET_STD))


def test_train_crop_equals_vjepa2_order_of_operations():
    """V-JEPA 2 normalizes, then crops and resizes floats; we crop and resize uint8, rounding to the nearest
    grey level, then normalize (on the device): half a grey level apart at most."""
    video = random_video(4, 100, 140)
    transform = TrainTransform(56, horizontal_flip=False, generator=torch.Generator().manual_seed(3))
    top, left, box_h, box_w = transform.crop_box(100, 140)
    transform.generator.manual_seed(3)
    ours = normalize(transform(video)[0], channel_dim=0)
    normalized = normalize(video).transpose(0, 1)  # [C, T, H, W], as V-JEPA 2 holds it
    box = normalized[..., top : top + box_h, left : left + box_w]
    expected = F.interpolate(box, size=(56, 56), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, expected, atol=GREY_LEVEL * 0.501, rtol=0)


def test_horizontal_flip_mirrors_the_clip():
    video = random_video(2, 64, 64)
    # scale (1, 1) and ratio (1, 1) make the crop the whole frame, so only the flip is random.
    outputs = [
        TrainTransform(64, scale=(1, 1), ratio=(1, 1), generator=torch.Generator().manual_seed(seed))(video)
        for seed in range(8)
    ]
    plain = video.transpose(0, 1).unsqueeze(0)
    assert all(torch.equal(out, plain) or torch.equal(out, plain.flip(-1)) for out in outputs)
    assert any(torch.equal(out, plain.flip(-1)) for out in outputs)
    assert any(torch.equal(out, plain) for out in outputs)


# ---- RandAugment and random erasing (V-JEPA 2's K400 frozen-eval recipe) ----------------------

OP_ARGS = {
    "AutoContrast": None, "Equalize": None, "Invert": None, "Rotate": -21.0, "Posterize": 2, "Solarize": 77,
    "SolarizeAdd": 77, "Color": 1.63, "Contrast": 0.37, "Brightness": 1.5, "Sharpness": 0.4, "ShearX": 0.21,
    "ShearY": -0.21, "TranslateX": 0.7, "TranslateY": -0.7,
}  # fmt: skip


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_rand_augment_policy_is_vjepa2s():
    """rand-m7-n4-mstd0.5-inc1: 15 ops, 4 draws, magnitude N(7, 0.5), each op applied with p 0.5."""
    assert sorted(OP_ARGS) == sorted(VideoRandAugment.OPS)
    augment = VideoRandAugment()
    assert (augment.magnitude, augment.num_ops, augment.magnitude_std, augment.prob) == (7.0, 4, 0.5, 0.5)
    assert VJEPA2_K400_TRAIN == dict(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), horizontal_flip=False,
                                     auto_augment=True, erase_prob=0.25)  # fmt: skip
    draws = [augment.sample_ops(seeded(seed)) for seed in range(400)]
    assert draws[0] == augment.sample_ops(seeded(0)) and any(d != draws[0] for d in draws)
    applied = sum(len(ops) for ops in draws) / (400 * 4)
    assert 0.45 < applied < 0.55
    names = {name for ops in draws for name, _ in ops}
    assert names == set(VideoRandAugment.OPS)
    for name, arg in (op for ops in draws for op in ops):
        if name == "Rotate":
            assert 30 * 0.5 <= abs(arg) <= 30  # magnitude 7 +- a few std: 15-30 degrees
        elif name == "Posterize":
            assert arg in (0, 1, 2, 3)  # 4 - int(0.4 m)
        elif name == "Solarize":
            assert 0 <= arg <= 256 - int(256 * 0.5)
        elif name in ("Color", "Contrast", "Brightness", "Sharpness"):
            assert 0.45 * 0.9 <= abs(arg - 1) <= 0.9
        elif name in ("ShearX", "ShearY"):
            assert 0.5 * 0.3 <= abs(arg) <= 0.3
        elif name in ("TranslateX", "TranslateY"):
            assert 0.5 <= abs(arg) <= 1.0
    signs = {name: set() for name in ("Rotate", "ShearX", "TranslateY", "Contrast")}
    for name, arg in (op for ops in draws for op in ops):
        if name in signs:
            signs[name].add(arg > (1.0 if name == "Contrast" else 0.0))
    assert all(s == {True, False} for s in signs.values())


@pytest.mark.parametrize("name", sorted(OP_ARGS))
def test_rand_augment_op_applies_the_same_parameters_to_every_frame(name):
    """torchvision's v2 kernels treat the frame axis as a batch: one parameter set, per-frame statistics."""
    video = random_video(5, 40, 52)
    augment = VideoRandAugment()
    ops = [(name, OP_ARGS[name])]
    out = augment.apply(video, ops)
    assert out.dtype == torch.uint8 and out.shape == video.shape
    assert torch.equal(out, torch.stack([augment.apply(frame, ops) for frame in video]))
    if name != "AutoContrast":  # random noise already spans 0..255
        assert not torch.equal(out, video)


def test_rand_augment_keeps_identical_frames_identical():
    frame = random_video(1, 48, 64)
    video = frame.expand(6, -1, -1, -1).contiguous()
    changed = 0
    for seed in range(12):
        out = VideoRandAugment()(video, generator=seeded(seed))
        assert all(torch.equal(out[0], out[i]) for i in range(1, 6))
        changed += not torch.equal(out, video)
    assert changed >= 10


def erased(seed, **kwargs):
    """A transform whose crop is the whole frame and no flip: only erasing changes the clip."""
    options = dict(scale=(1, 1), ratio=(1, 1), horizontal_flip=False, erase_prob=1.0) | kwargs
    return TrainTransform(64, generator=seeded(seed), **options)


def test_random_erasing_is_one_box_through_all_frames():
    video = random_video(4, 64, 64)
    plain = video.transpose(0, 1)  # [C, T, H, W]
    fractions = []
    for seed in range(20):
        out = erased(seed)(video)[0]
        assert out.dtype == torch.uint8
        changed = (out != plain).any(0)  # [T, H, W]
        assert all(torch.equal(changed[0], changed[t]) for t in range(4))  # the same box in every frame
        rows, cols = changed[0].any(1).nonzero().flatten(), changed[0].any(0).nonzero().flatten()
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert changed[0, top:bottom, left:right].float().mean() > 0.99  # a filled rectangle
        assert torch.equal(out[:, :, :top], plain[:, :, :top]) and torch.equal(out[..., right:], plain[..., right:])
        noise = normalize(out[:, :, top:bottom, left:right], channel_dim=0)
        assert not torch.equal(noise[:, 0], noise[:, 1])  # 'pixel' mode: fresh N(0, 1) per pixel and frame
        assert abs(noise.mean()) < 0.25 and 0.75 < noise.std() < 1.25
        fractions.append(int((bottom - top) * (right - left)) / 64**2)
    assert 0.02 * 0.8 <= min(fractions) and max(fractions) <= 1 / 3 * 1.1


def test_random_erasing_probability():
    transform = TrainTransform(64, erase_prob=0.25, generator=seeded(0))
    hits = sum(transform.erase_box(64, 64) is not None for _ in range(2000))
    assert 0.22 < hits / 2000 < 0.28
    with pytest.raises(ValueError):
        TrainTransform(64, erase_prob=1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augmentation_off_is_the_plain_crop(seed):
    """auto_augment=False and erase_prob=0 draw no extra random numbers: the clips of before."""
    video = random_video(4, 90, 120)
    plain = TrainTransform(48, scale=(0.08, 1.0), horizontal_flip=False, generator=seeded(seed))(video)
    off = TrainTransform(48, scale=(0.08, 1.0), horizontal_flip=False, generator=seeded(seed),
                         auto_augment=False, erase_prob=0.0)(video)  # fmt: skip
    assert torch.equal(plain, off)
    square = video[..., :64, :64]
    assert torch.equal(erased(seed, erase_prob=0.0)(square), square.transpose(0, 1)[None])


def test_k400_recipe_shape_dtype_range_and_reproducibility():
    video = random_video(6, 90, 120)
    make = lambda seed, **kw: TrainTransform(48, generator=seeded(seed), **(VJEPA2_K400_TRAIN | kw))
    outs = [make(seed)(video) for seed in range(8)]
    for out in outs:
        assert out.shape == (1, 3, 6, 48, 48) and out.dtype == torch.uint8
    assert torch.equal(outs[0], make(0)(video)) and not torch.equal(outs[0], outs[1])
    # the global RNG (generator=None, which probing.SeededSamples seeds per sample) is reproducible too
    global_rng = []
    for _ in range(2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(123)
            global_rng.append(TrainTransform(48, **VJEPA2_K400_TRAIN)(video))
    assert torch.equal(*global_rng)


def test_k400_recipe_follows_vjepa2s_order_of_operations():
    """RandAugment on the full uint8 frames, crop + resize, (no flip), normalize, erase: one generator.
    Ours resizes the uint8 crop (within one grey level of resizing floats) and stores the erasing noise as
    the nearest grey level (saturating at 0 and 255)."""
    video = random_video(4, 80, 100)
    erased_some = False
    for seed in range(6):
        transform = TrainTransform(40, generator=seeded(seed), **VJEPA2_K400_TRAIN)
        ours = normalize(transform(video)[0], channel_dim=0)
        generator = seeded(seed)
        augment = VideoRandAugment()
        frames = augment.apply(video, augment.sample_ops(generator))
        transform.generator = generator
        top, left, box_h, box_w = transform.crop_box(80, 100)
        box = normalize(frames).transpose(0, 1)[..., top : top + box_h, left : left + box_w]
        expected = F.interpolate(box, size=(40, 40), mode="bilinear", align_corners=False)
        erase = transform.erase_box(40, 40)
        if erase is not None:
            erased_some = True
            t, l, h, w = erase
            noise = torch.randn((3, 4, h, w), generator=generator)
            low, high = normalize(torch.tensor([0, 255], dtype=torch.uint8).expand(3, 2)[..., None], channel_dim=0).unbind(1)
            expected[..., t : t + h, l : l + w] = noise.clamp(low.view(3, 1, 1, 1), high.view(3, 1, 1, 1))
        torch.testing.assert_close(ours, expected, atol=GREY_LEVEL * 1.001, rtol=0)
    assert erased_some
