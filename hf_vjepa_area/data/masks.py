"""V-JEPA 2's multi-block 3-D masks, made by the DataLoader's collate function.

Per batch and mask config: one block size (temporal extent, spatial scale, aspect ratio) for the whole
batch; per sample, `num_blocks` blocks at random positions (they may overlap). The target is the union of
the blocks, the context every token outside them; each sample's (sorted) ids are then cut to the batch's
smallest count, dropping the highest ids, so the masks stack into `[B, K]` tensors and some tokens are in
neither set. Rules and released values from Meta's `src/masks/multiseq_multiblock3d.py`.

Reproducible: the masks of a batch depend only on `seed`, the mask config and the batch's global index.
Meta draws the block size from a generator seeded by a counter shared by the workers, and positions from
each worker's global RNG, so which batch gets which masks depends on worker timing. Here the index comes
from the DataLoader's order (batch i goes to worker i mod num_workers), so the same seed gives the same
masks with any number of workers; `set_batch_index` moves the index (e.g. to the step of a resumed run).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
from dataclasses import dataclass

import torch
from torch.utils.data import default_collate, get_worker_info

from .dataset import SkippedSample


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
    """`collate_fn` for V-JEPA 2 training: stacks the samples and adds one (context, target) mask pair per
    mask config.

    Samples are dicts with a `"clip"` (uint8 [C, T, H, W]); `None` and `SkippedSample` items (unreadable
    videos) are dropped and counted. Returns `{"clips": [B, C, T, H, W], "masks_context": [LongTensor
    [B, Kc_i] per config], "masks_target": [LongTensor [B, Kt_i] per config], "skipped": int,
    "skipped_paths": list}` plus the samples' other keys, collated by `default_collate`. `grid` is the
    clip's token grid (frames // tubelet, height // patch, width // patch). In a multi-process run, give
    each process its own seed (e.g. seed + rank) unless identical masks on every process are wanted.
    `multiprocessing_context`: the DataLoader's, when it is not Python's default (e.g. "spawn").
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        configs=RELEASED_MASK_CONFIGS,
        seed: int = 0,
        batch_index: int = 0,
        multiprocessing_context: str | None = None,
    ):
        if len(grid) != 3 or any(int(n) < 1 for n in grid):
            raise ValueError(f"grid must be the token grid (t, h, w) of positive sizes, got {grid!r}")
        if not configs:
            raise ValueError("configs is empty: pass at least one MaskConfig (e.g. RELEASED_MASK_CONFIGS)")
        self.grid = tuple(int(n) for n in grid)
        self.configs = tuple(configs)
        self.seed = seed
        # Shared with the worker processes, as Meta's counter is: the index of the next unclaimed batch, the
        # DataLoader iterator (epoch) whose workers claimed indices last, and where its indices start.
        context = multiprocessing.get_context(multiprocessing_context)
        self._next_index = context.Value("q", batch_index)
        self._iterator = context.Value("q", -1, lock=False)
        self._iterator_start = context.Value("q", 0, lock=False)
        self._local_iterator, self._start, self._calls = None, 0, 0

    def set_batch_index(self, index: int) -> None:
        """Global index of the next batch (0 at the start; the step reached, when resuming a run). Call it
        before iterating the DataLoader; persistent workers already started keep their numbering."""
        with self._next_index.get_lock():
            self._next_index.value = index
            self._iterator.value = -1
        self._local_iterator, self._calls = None, 0

    def _claim_index(self) -> int:
        info = get_worker_info()
        lock = self._next_index.get_lock()
        if info is None:  # the main process collates the batches in order
            with lock:
                index = self._next_index.value
                self._next_index.value += 1
            return index
        iterator = info.seed - info.id  # the DataLoader's base seed, drawn once per iterator
        if iterator != self._local_iterator:  # this worker's first batch of a new iterator
            with lock:
                if self._iterator.value != iterator:  # ... and the first of all its workers
                    self._iterator.value = iterator
                    self._iterator_start.value = self._next_index.value
                self._start = self._iterator_start.value
            self._local_iterator, self._calls = iterator, 0
        index = self._start + self._calls * info.num_workers + info.id
        self._calls += 1
        with lock:
            self._next_index.value = max(self._next_index.value, index + 1)
        return index

    def masks(self, batch_index: int, batch_size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The masks of batch `batch_index`: lists (one entry per config) of context and target ids."""
        pairs = [
            sample_masks(config, self.grid, batch_size, _generator(self.seed, batch_index, i))
            for i, config in enumerate(self.configs)
        ]
        return [context for context, _ in pairs], [target for _, target in pairs]

    def __call__(self, samples: list) -> dict:
        kept = [s for s in samples if s is not None and not isinstance(s, SkippedSample)]
        skipped_paths = [s.path for s in samples if isinstance(s, SkippedSample)]
        index = self._claim_index()
        batch = default_collate(kept) if kept else {"clip": None}
        masks_context, masks_target = self.masks(index, len(kept)) if kept else ([], [])
        return {
            "clips": batch.pop("clip"),
            "masks_context": masks_context,
            "masks_target": masks_target,
            "skipped": len(samples) - len(kept),
            "skipped_paths": skipped_paths,
            **batch,
        }


__all__ = ["MaskConfig", "RELEASED_MASK_CONFIGS", "MultiBlockMaskCollator", "block_size", "sample_masks"]
