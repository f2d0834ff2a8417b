"""Encoded datasets and the feature cache: each split encoded once (every process its share), stored as
safetensors keyed by what it was computed from, and read back as a dataset of tokens."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._files import write_atomically
from ..data import collate_skip_none
from .tokens import ENCODER_CHUNK, encode_clips, encoder_fingerprint, tokens_per_clip

logger = logging.getLogger(__name__)


class FeatureDataset(Dataset):
    """Cached tokens: item i is `(features [V, M, D], label, dataset index)`."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
        self.features, self.labels, self.indices = features, labels, indices

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.features[i], int(self.labels[i]), int(self.indices[i])


def collate_features(batch: list) -> dict:
    return {
        "features": torch.stack([f for f, _, _ in batch]) if batch else None,
        "labels": torch.tensor([label for _, label, _ in batch], dtype=torch.long),
        "indices": torch.tensor([index for _, _, index in batch], dtype=torch.long),
        "skipped": 0,
        "skipped_paths": [],
        "skipped_samples": [],
    }


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    indices: Sequence[int] | None = None,
    *,
    device: torch.device,
    num_segments: int,
    num_views: int,
    feature_shape: tuple[int, ...] = (),
    pool: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    autocast_dtype: torch.dtype | None = None,
    chunk_size: int | None = ENCODER_CHUNK,
    out_layers: Sequence[int] | None = None,
    progress: bool = False,
    desc: str = "features",
) -> dict[str, Any]:
    """Encode `dataset[i] for i in indices` (all by default; deterministic clips): CPU tensors
    `features [n, V, M, D]` (or `pool(tokens)` per batch, e.g. the mean token), `labels`, `indices`, and
    the `skipped` list of (index, path). `feature_shape` is one item's shape, for an empty result;
    `out_layers` makes multi-level tokens (`probe_tokens`)."""
    from torch.utils.data import Subset
    from tqdm import (
        tqdm,  # not tqdm.auto: its asyncio class calls iter() in __init__, a second DataLoader iterator (twice the workers)
    )

    subset = Subset(dataset, list(range(len(dataset)) if indices is None else indices))
    loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip_none)
    features, labels, kept, skipped = [], [], [], []
    for batch in tqdm(loader, desc=desc, disable=not progress):
        skipped += [(item.index, item.path) for item in batch["skipped_samples"]]
        if batch["clips"] is None:
            continue
        tokens = encode_clips(encoder, batch["clips"].to(device), num_segments, num_views,
                              autocast_dtype=autocast_dtype, chunk_size=chunk_size, out_layers=out_layers)  # fmt: skip
        features.append((pool(tokens) if pool else tokens).cpu())
        labels.append(batch["labels"])
        kept.append(batch["indices"])
    return {
        "features": torch.cat(features) if features else torch.zeros(0, *feature_shape),
        "labels": torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        "indices": torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long),
        "skipped": skipped,
    }


def _save_features(path: Path, data: dict[str, Any], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = {key: data[key].contiguous() for key in ("features", "labels", "indices")}
    metadata = {**metadata, "skipped": json.dumps(data["skipped"])}
    write_atomically(path, lambda temp: save_file(tensors, str(temp), metadata=metadata))


def _load_features(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as file:
        metadata = file.metadata() or {}
        data = {key: file.get_tensor(key) for key in ("features", "labels", "indices")}
    data["skipped"] = [tuple(item) for item in json.loads(metadata.get("skipped", "[]"))]
    return data, metadata


def cached_features(path: Path, spec: dict, compute: Callable[[Sequence[int]], dict], num_items: int, accelerator) -> dict:
    """Features of one split, computed once and stored in `path` (safetensors).

    Every process encodes its share (`indices[rank::world]`) and writes a shard; the main process merges
    the shards in dataset order into `path`, whose metadata records `spec`. A later run (or a resumed
    one) with the same spec reads the file instead of running the encoder. Returns the merged data.
    """
    spec_json = json.dumps(spec, sort_keys=True, default=str)
    if path.is_file():
        data, metadata = _load_features(path)
        if metadata.get("spec") == spec_json:
            return data
        if accelerator.is_main_process:
            logger.warning("feature cache %s was made with other settings; recomputing", path)
    accelerator.wait_for_everyone()
    path.parent.mkdir(parents=True, exist_ok=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    shard = path.with_name(f"{path.stem}.rank{rank:05d}-of-{world:05d}.safetensors")
    _save_features(shard, compute(range(rank, num_items, world)), {})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shards = [path.with_name(f"{path.stem}.rank{r:05d}-of-{world:05d}.safetensors") for r in range(world)]
        parts = [_load_features(s)[0] for s in shards]
        merged = {key: torch.cat([p[key] for p in parts]) for key in ("features", "labels", "indices")}
        order = torch.argsort(merged["indices"])
        merged = {key: value[order] for key, value in merged.items()}
        merged["skipped"] = sorted(item for p in parts for item in p["skipped"])
        _save_features(path, merged, {"spec": spec_json})
        for s in shards:
            s.unlink()
    accelerator.wait_for_everyone()
    return _load_features(path)[0]


def data_signature(dataset: Dataset, accelerator) -> dict:
    """What a feature cache was computed from: the manifest's bytes (paths and labels) and each video's
    size and mtime, so an edited manifest or a replaced video invalidates the cache. Computed on the main
    process and shared: one pass of stat calls, and every process compares the same key (one that saw
    another mtime would take the other branch and leave the rest waiting for it). `dataset`: a
    `VideoClipDataset` (`manifest`, `entries`)."""
    from accelerate.utils import broadcast_object_list

    signature = [None]
    if accelerator.is_main_process:
        videos = hashlib.sha256()
        for path, _ in dataset.entries:
            try:
                stat = os.stat(path)
                videos.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
            except OSError:  # missing: skipped when encoding; becoming readable later changes the signature
                videos.update(f"{path}\tmissing\n".encode())
        signature = [dict(manifest_sha256=hashlib.sha256(Path(dataset.manifest).read_bytes()).hexdigest(),
                          videos_sha256=videos.hexdigest())]  # fmt: skip
    broadcast_object_list(signature)
    return signature[0]


def cached_split(path: Path, encoder: nn.Module, dataset: Dataset, *, accelerator, model: str, num_views: int,
                 crop_size: int, batch_size: int, num_workers: int = 0, autocast_dtype: torch.dtype | None = None,
                 chunk_size: int | None = ENCODER_CHUNK, out_layers: Sequence[int] | None = None,
                 progress: bool = False) -> dict:  # fmt: skip
    """The tokens of a `VideoClipDataset` (deterministic clips, `num_views` views) through the frozen
    `encoder`, cached in `path` (`cached_features`) under a key of everything they depend on: the
    manifest and videos (`data_signature`), the encoder (`model` and its `encoder_fingerprint`), the clip
    sampling, the views, the autocast dtype and `out_layers`."""
    spec = dict(split=path.stem, manifest=str(Path(dataset.manifest).resolve()), entries=len(dataset),
                **data_signature(dataset, accelerator), encoder=model, fingerprint=encoder_fingerprint(encoder),
                views=num_views, dtype=str(autocast_dtype), out_layers=out_layers, frames_per_clip=dataset.frames_per_clip,
                frame_step=dataset.frame_step, num_segments=dataset.num_segments, crop_size=crop_size,
                min_frames=dataset.min_frames)  # fmt: skip
    tokens = dataset.num_segments * tokens_per_clip(encoder.config, dataset.frames_per_clip, crop_size, out_layers)
    device = next(encoder.parameters()).device

    def encode(indices: Sequence[int]) -> dict:
        return extract_features(encoder, dataset, indices, device=device, num_segments=dataset.num_segments,
                                num_views=num_views, feature_shape=(num_views, tokens, encoder.config.embed_dim),
                                batch_size=batch_size, num_workers=num_workers, autocast_dtype=autocast_dtype,
                                chunk_size=chunk_size, out_layers=out_layers, progress=progress,
                                desc=f"encoding {path.stem}")  # fmt: skip

    return cached_features(path, spec, encode, len(dataset), accelerator)
