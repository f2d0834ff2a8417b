import numpy as np
import pytest
import torch

from hf_vjepa_area.data import (
    GlobalBatchSampler,
    VideoTooShortError,
    clip_indices,
    item_seed,
)


def reference_indices(num_frames, fpc, fstp, num_clips, end_of=lambda i, clip_len, partition_len: clip_len):
    """V-JEPA 2's `VideoDataset.loadvideo_decord` index code (allow_clip_overlap=True), transcribed.

    `end_of` stands in for its `np.random.randint(clip_len, partition_len)` draw in training.
    A -1 (its 1-frame-video case, read by decord as the last frame) is mapped to frame 0.
    """
    clip_len = int(fpc * fstp)
    partition_len = num_frames // num_clips
    clip_indices = []
    for i in range(num_clips):
        if partition_len > clip_len:
            end_indx = end_of(i, clip_len, partition_len)
            start_indx = end_indx - clip_len
            indices = np.linspace(start_indx, end_indx, num=fpc)
            indices = np.clip(indices, start_indx, end_indx - 1).astype(np.int64)
            indices = indices + i * partition_len
        else:
            sample_len = min(clip_len, num_frames) - 1
            indices = np.linspace(0, sample_len, num=sample_len // fstp)
            indices = np.concatenate((indices, np.ones(fpc - sample_len // fstp) * sample_len))
            indices = np.clip(indices, 0, sample_len - 1).astype(np.int64)
            clip_step = 0
            if num_frames > clip_len:
                clip_step = (num_frames - clip_len) // (num_clips - 1)
            indices = indices + i * clip_step
        clip_indices.append(np.where(indices < 0, num_frames - 1, indices))
    return np.stack(clip_indices)


@pytest.mark.parametrize("num_frames", [1, 2, 5, 17, 63, 64, 65, 100, 250, 300, 511, 512, 513, 1000])
@pytest.mark.parametrize("fpc,step,segments", [(16, 4, 1), (16, 4, 8), (16, 2, 3), (8, 8, 2), (4, 1, 1)])
def test_eval_indices_equal_the_reference(num_frames, fpc, step, segments):
    ours = clip_indices(num_frames, fpc, step, segments)
    assert ours.dtype == np.int64 and ours.shape == (segments, fpc)
    assert np.array_equal(ours, reference_indices(num_frames, fpc, step, segments))
    assert ours.min() >= 0 and ours.max() < num_frames


def test_known_values():
    # Long video, one clip: linspace stride, not arange.
    assert clip_indices(1000, 16, 4, 1).tolist() == [[0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 46, 51, 55, 59, 63]]
    # K400-like: 300 frames, 8 overlapping segments, evenly spaced 33 frames apart.
    clips = clip_indices(300, 16, 4, 8)
    assert clips[0].tolist() == [0, 4, 9, 13, 18, 22, 27, 31, 36, 40, 45, 49, 54, 58, 62, 62]
    assert np.array_equal(clips, clips[0] + 33 * np.arange(8)[:, None])


@pytest.mark.parametrize("num_frames,segments", [(300, 8), (1000, 4), (64, 2), (2000, 8)])
def test_eval_segments_are_evenly_spaced(num_frames, segments):
    starts = clip_indices(num_frames, 16, 4, segments)[:, 0]
    assert len(set(np.diff(starts).tolist())) <= 1


@pytest.mark.parametrize("num_frames,segments", [(1000, 1), (2000, 8), (300, 1), (300, 8), (40, 1)])
def test_train_offsets_are_in_bounds_and_follow_the_reference(num_frames, segments):
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        clips = clip_indices(num_frames, 16, 4, segments, random_offset=True, generator=generator)
        assert clips.min() >= 0 and clips.max() < num_frames
        partition_len = num_frames // segments
        # Recover each drawn window end and check it is a legal draw giving the reference clip.
        ends = {i: int(clips[i, 0]) - i * partition_len + 64 for i in range(segments)}
        if partition_len > 64:
            assert all(64 <= end < partition_len for end in ends.values())
        assert np.array_equal(clips, reference_indices(num_frames, 16, 4, segments, lambda i, *_: ends[i]))


def test_train_offsets_are_random_and_reproducible():
    draw = lambda seed: clip_indices(1000, 16, 4, random_offset=True, generator=torch.Generator().manual_seed(seed))
    assert np.array_equal(draw(1), draw(1))
    assert len({int(draw(seed)[0, 0]) for seed in range(10)}) > 1


def test_short_videos_repeat_the_last_kept_frame():
    assert clip_indices(10, 16, 4).tolist() == [[0] + [8] * 15]
    assert clip_indices(1, 16, 4).tolist() == [[0] * 16]


def test_too_short_policy():
    with pytest.raises(VideoTooShortError, match="0 frames"):
        clip_indices(0, 16, 4)
    with pytest.raises(VideoTooShortError, match="at least 64"):
        clip_indices(63, 16, 4, min_frames=64)
    assert clip_indices(64, 16, 4, min_frames=64).shape == (1, 16)
    with pytest.raises(ValueError):
        clip_indices(100, 16, 0)


def test_global_batches_split_across_processes_without_padding():
    """The probe's rule: each step's global batch is the same for any process count, every item once."""
    n, per_rank = 11, 2
    for world in (1, 2, 3):
        shards = [GlobalBatchSampler(n, per_rank, rank=r, num_replicas=world, shuffle=True, seed=3) for r in range(world)]
        single = GlobalBatchSampler(n, per_rank * world, shuffle=True, seed=3)
        for epoch in (0, 1):
            for s in shards + [single]:
                s.set_epoch(epoch)
            per_rank_batches = [list(s) for s in shards]
            assert len({len(b) for b in per_rank_batches}) == 1 == len({len(s) for s in shards})
            steps = [sum(batches, []) for batches in zip(*per_rank_batches)]
            assert steps == list(single)  # the same samples in the same global steps
            assert sorted(sum(steps, [])) == list(range(n))  # each sample once, no padding
    a, b = GlobalBatchSampler(n, 4, shuffle=True), GlobalBatchSampler(n, 4, shuffle=True)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(GlobalBatchSampler(5, 2)) == [[0, 1], [2, 3], [4]]
    assert list(GlobalBatchSampler(5, 2, rank=0, num_replicas=2)) == [[0, 1], [4]]
    assert list(GlobalBatchSampler(5, 2, rank=1, num_replicas=2)) == [[2, 3], []]  # joins with an empty batch
    with pytest.raises(ValueError, match="bad sharding"):
        GlobalBatchSampler(5, 2, rank=2, num_replicas=2)


def test_step_batches_are_the_epoch_batches_without_the_short_tail():
    """Pretraining's step-counted keys follow the same rule: step s of epoch e holds what the epoch sampler's
    batch s - e * steps_per_epoch holds, the tail that does not fill a global batch dropped."""
    from hf_vjepa_area.data.pretraining import StepBatchSampler

    for world in (1, 2):
        epochs = GlobalBatchSampler(10, 2, rank=world - 1, num_replicas=world, shuffle=True, seed=5)
        steps = list(StepBatchSampler(10, 2, rank=world - 1, num_replicas=world, seed=5, stop_step=3 * (5 // world)))
        expected = []
        for epoch in range(3):
            epochs.set_epoch(epoch)
            full = [batch for batch in epochs if len(batch) == 2][: 10 // (2 * world)]
            expected += [[(len(expected) + k, epoch, i) for i in batch] for k, batch in enumerate(full)]
        assert steps == expected


def test_item_seeds_differ_across_seed_epoch_and_index():
    assert len({item_seed(s, e, i) for s in range(3) for e in range(3) for i in range(3)}) == 27
