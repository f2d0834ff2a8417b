"""V-JEPA 2's multi-block 3-D masks, for the DataLoader's collate function.

Per batch and mask config: one block size (temporal extent, spatial scale, aspect ratio) for the whole
batch; per sample, `num_blocks` blocks at random positions (they may overlap). The target is the union of
the blocks, the context every token outside them; each sample's (sorted) ids are then cut to the batch's
smallest count, dropping the highest ids, so the masks stack into `[B, K]` tensors and some tokens are in
neither set. Rules and released values from Meta's `src/masks/multiseq_multiblock3d.py`.

Reproducible: the masks of a batch depend only on `seed`, the mask config and the batch's global index.
Meta draws the block size from a generator seeded by a counter shared by the workers, and positions from
each worker's global RNG, so which batch gets which masks depends on worker timing. Here the caller names
the batch (e.g. the training step the batch's items carry), so the same seed gives the same masks with
any number of workers and processes, and after a resume.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MaskConfig:
    """One mask family: `num_blocks` blocks, each spanning a fraction `temporal_scale` of the clip's
    tubelets and `spatial_scale` of a frame's patches, with height/width ratio in `aspect_ratio`
    (each drawn uniformly per batch from its range)."""

    num_blocks: int
    spatial_scale: tuple[float, float]
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)


# V-JEPA 2 pretraining and cooldown (all released models): blocks are tubes through the whole clip.
RELEASED_MASK_CONFIGS = (
    MaskConfig(num_blocks=8, spatial_scale=(0.15, 0.15)),
    MaskConfig(num_blocks=2, spatial_scale=(0.7, 0.7)),
)


def _generator(*key) -> torch.Generator:
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def _uniform(bounds: tuple[float, float], generator: torch.Generator) -> float:
    low, high = bounds
    return low + torch.rand(1, generator=generator).item() * (high - low)


def block_size(config: MaskConfig, grid: tuple[int, int, int], generator: torch.Generator) -> tuple[int, int, int]:
    """(t, h, w) of the batch's blocks, drawn as Meta does: temporal scale, spatial scale, aspect ratio."""
    duration, height, width = grid
    t = max(1, int(duration * _uniform(config.temporal_scale, generator)))
    area = int(height * width * _uniform(config.spatial_scale, generator))
    aspect = _uniform(config.aspect_ratio, generator)
    h = min(height, int(round(math.sqrt(area * aspect))))
    w = min(width, int(round(math.sqrt(area / aspect))))
    return t, h, w


def sample_masks(
    config: MaskConfig, grid: tuple[int, int, int], batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(context ids, target ids), LongTensors [batch_size, K_context] and [batch_size, K_target], sorted."""
    size = block_size(config, grid, generator)
    room = torch.tensor([extent - side + 1 for extent, side in zip(grid, size)])
    contexts, targets = [], []
    for _ in range(batch_size):
        while True:  # a sample whose blocks cover every token is drawn again, as in Meta's code
            covered = torch.zeros(grid, dtype=torch.bool)
            starts = (torch.rand(config.num_blocks, 3, generator=generator) * room).long()
            for t, h, w in starts.tolist():
                covered[t : t + size[0], h : h + size[1], w : w + size[2]] = True
            covered = covered.flatten()
            if not covered.all():
                break
        contexts.append(torch.nonzero(~covered).flatten())
        targets.append(torch.nonzero(covered).flatten())
    keep_context = min(len(ids) for ids in contexts)
    keep_target = min(len(ids) for ids in targets)
    return (
        torch.stack([ids[:keep_context] for ids in contexts]),
        torch.stack([ids[:keep_target] for ids in targets]),
    )


class MultiBlockMaskCollator:
    """The masks a V-JEPA 2 collate function adds to a batch: `masks(batch_index, batch_size)` gives one
    (context, target) pair of `[B, K]` id tensors per mask config. `grid` is the clip's token grid
    (frames // tubelet, height // patch, width // patch)."""

    def __init__(self, grid: tuple[int, int, int], configs=RELEASED_MASK_CONFIGS, seed: int = 0):
        if len(grid) != 3 or any(int(n) < 1 for n in grid):
            raise ValueError(f"grid must be the token grid (t, h, w) of positive sizes, got {grid!r}")
        if not configs:
            raise ValueError("configs is empty: pass at least one MaskConfig (e.g. RELEASED_MASK_CONFIGS)")
        self.grid = tuple(int(n) for n in grid)
        self.configs = tuple(configs)
        self.seed = seed

    def masks(self, batch_index: int, batch_size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The masks of batch `batch_index`: lists (one entry per config) of context and target ids."""
        pairs = [
            sample_masks(config, self.grid, batch_size, _generator(self.seed, batch_index, i))
            for i, config in enumerate(self.configs)
        ]
        return [context for context, _ in pairs], [target for _, target in pairs]


__all__ = ["MaskConfig", "RELEASED_MASK_CONFIGS", "MultiBlockMaskCollator", "block_size", "sample_masks"]
