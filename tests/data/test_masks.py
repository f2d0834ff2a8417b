"""V-JEPA 2 multi-block masks: shapes, the released configs' fractions, and reproducibility across workers."""

from __future__ import annotations

import pytest
import torch

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


def test_bad_arguments():
    with pytest.raises(ValueError, match="token grid"):
        MultiBlockMaskCollator((16, 16))
    with pytest.raises(ValueError, match="configs is empty"):
        MultiBlockMaskCollator(GRID, configs=[])
