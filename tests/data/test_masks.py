"""V-JEPA 2 multi-block masks: shapes, the released configs' fractions, and reproducibility across workers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from hf_vjepa_area.data.dataset import SkippedSample
from hf_vjepa_area.data.masks import RELEASED_MASK_CONFIGS, MaskConfig, MultiBlockMaskCollator, block_size

from tests.numerics import assert_matches

GRID = (8, 16, 16)  # 256 px, 16 frames, patch 16, tubelet 2
NUM_TOKENS = 8 * 16 * 16

# V-JEPA 2's own collator measured at 256 px / 16 frames, 300 batches:
# {batch size: ((config A context %, target %), (config B context %, target %))}.
META_FRACTIONS = {1: ((39.2, 60.8), (18.1, 81.9)), 4: ((30.9, 54.4), (11.9, 74.0)), 24: ((24.2, 47.3), (6.3, 70.3))}


def check_masks(context: torch.Tensor, target: torch.Tensor, batch_size: int) -> None:
    assert context.dtype == target.dtype == torch.int64
    assert context.shape[0] == target.shape[0] == batch_size
    assert context.min() >= 0 and target.min() >= 0
    assert context.max() < NUM_TOKENS and target.max() < NUM_TOKENS
    assert (context.diff(dim=1) > 0).all() and (target.diff(dim=1) > 0).all()  # sorted, no repeats
    for c, t in zip(context, target):
        assert not set(c.tolist()) & set(t.tolist())


@pytest.mark.parametrize("batch_size, num_batches", [(1, 300), (4, 300), (24, 60)])
def test_fractions_match_meta(batch_size, num_batches):
    collator = MultiBlockMaskCollator(GRID, seed=0)
    totals = torch.zeros(2, 2)
    for index in range(num_batches):
        contexts, targets = collator.masks(index, batch_size)
        assert len(contexts) == len(targets) == 2
        for i, (context, target) in enumerate(zip(contexts, targets)):
            check_masks(context, target, batch_size)
            totals[i] += torch.tensor([context.shape[1], target.shape[1]]) / NUM_TOKENS * 100
    measured = totals / num_batches
    expected = torch.tensor(META_FRACTIONS[batch_size])
    assert (measured - expected).abs().max() <= 2.0, f"measured {measured.tolist()} vs Meta's {expected.tolist()}"
    if batch_size == 1:  # nothing trimmed: context and target partition the clip
        assert_matches(measured.sum(dim=1), torch.full_like(measured[:, 0], 100.0))


def test_block_size_is_meta_rule():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        t, h, w = block_size(RELEASED_MASK_CONFIGS[0], GRID, generator)
        assert t == 8  # temporal scale 1: tubes through the whole clip
        assert 0.75 - 0.15 <= h / w <= 1.5 + 0.2  # aspect ratio (rounded to whole patches)
        assert abs(h * w - int(256 * 0.15)) <= h + w  # about 38 patches
    # Partial temporal extent and a full-frame spatial scale, clipped to the grid.
    t, h, w = block_size(MaskConfig(1, (1.0, 1.0), temporal_scale=(0.5, 0.5), aspect_ratio=(1.5, 1.5)), GRID, generator)
    assert (t, h, w) == (4, 16, 13)


def test_same_block_size_within_a_batch_and_positions_per_sample():
    collator = MultiBlockMaskCollator(GRID, configs=[MaskConfig(1, (0.15, 0.15))], seed=3)
    (context,), (target,) = collator.masks(0, 8)
    # One block per sample: nothing trimmed (every sample's block has the same size), at its own place.
    assert context.shape[1] + target.shape[1] == NUM_TOKENS
    assert len({tuple(t.tolist()) for t in target}) > 1


class Clips(Dataset):
    def __init__(self, n: int, skip=()):
        self.n, self.skip = n, set(skip)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if index in self.skip:
            return SkippedSample(index, f"video{index}.mp4", "unreadable")
        return {"clip": torch.full((3, 4, 8, 8), index, dtype=torch.uint8), "index": index}


def run_loader(num_workers: int, epochs: int = 1, seed: int = 0, start: int | None = None, n: int = 12, **kwargs):
    context = kwargs.get("multiprocessing_context")
    collator = MultiBlockMaskCollator(GRID, seed=seed, multiprocessing_context=context)
    if start is not None:
        collator.set_batch_index(start)
    loader = DataLoader(Clips(n), batch_size=2, num_workers=num_workers, collate_fn=collator, **kwargs)
    return [batch for _ in range(epochs) for batch in loader]


def same_masks(a: dict, b: dict) -> bool:
    pairs = list(zip(a["masks_context"] + a["masks_target"], b["masks_context"] + b["masks_target"]))
    return all(x.shape == y.shape and torch.equal(x, y) for x, y in pairs)


def test_collated_batch():
    collator = MultiBlockMaskCollator(GRID)
    batch = collator([Clips(3)[i] for i in range(3)] + [None])
    assert batch["clips"].shape == (3, 3, 4, 8, 8) and batch["clips"].dtype == torch.uint8
    assert batch["index"].tolist() == [0, 1, 2]
    assert batch["skipped"] == 1 and batch["skipped_paths"] == []
    assert [m.shape[0] for m in batch["masks_context"] + batch["masks_target"]] == [3] * 4


def test_skipped_samples_are_dropped_and_counted():
    loader = DataLoader(Clips(4, skip={1, 2, 3}), batch_size=4, collate_fn=MultiBlockMaskCollator(GRID))
    (batch,) = list(loader)
    assert batch["clips"].shape[0] == 1 and batch["index"].tolist() == [0]
    assert batch["skipped"] == 3 and batch["skipped_paths"] == ["video1.mp4", "video2.mp4", "video3.mp4"]
    assert all(m.shape[0] == 1 for m in batch["masks_context"])
    loader = DataLoader(Clips(2, skip={0, 1}), batch_size=2, collate_fn=MultiBlockMaskCollator(GRID))
    (batch,) = list(loader)
    assert batch["clips"] is None and batch["masks_context"] == [] and batch["skipped"] == 2


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core machine
def test_same_seed_same_masks_for_any_worker_count():
    """Two epochs, so the second epoch's fresh workers must continue the numbering rather than repeat it."""
    serial = run_loader(0, epochs=2)
    assert len(serial) == 12
    assert not same_masks(serial[0], serial[6])  # epochs differ
    for workers in (1, 2, 3):
        parallel = run_loader(workers, epochs=2)
        assert [b["index"].tolist() for b in parallel] == [b["index"].tolist() for b in serial]
        assert all(same_masks(a, b) for a, b in zip(serial, parallel)), f"{workers} workers"
    persistent = run_loader(2, epochs=2, persistent_workers=True)
    assert all(same_masks(a, b) for a, b in zip(serial, persistent))
    other_seed = run_loader(0, seed=1)
    assert not any(same_masks(a, b) for a, b in zip(serial, other_seed))


def test_resume_from_batch_index():
    serial = run_loader(0, epochs=2)
    resumed = run_loader(2, start=6)  # the second epoch of a run restarted after 6 batches
    assert all(same_masks(a, b) for a, b in zip(serial[6:], resumed))


def test_bad_arguments():
    with pytest.raises(ValueError, match="token grid"):
        MultiBlockMaskCollator((16, 16))
    with pytest.raises(ValueError, match="configs is empty"):
        MultiBlockMaskCollator(GRID, configs=[])
