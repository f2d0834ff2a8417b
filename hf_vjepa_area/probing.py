"""Frozen attentive probing, V-JEPA 2 style: the reusable parts of `examples/k400_probe.py`.

The protocol (V-JEPA 2, `evals/video_classification_frozen`): a frozen encoder turns each of a video's
`S` temporal segments x `V` spatial views into tokens; per view, the `S` segments' tokens are
concatenated along the token axis (`[V, S*N, D]`); attentive classifiers (`AttentiveClassifier`,
4 blocks, 16 heads) are trained on those tokens, several in parallel over a grid of learning rates x
weight decays (AdamW, cosine schedule), and the best head is reported. At evaluation the softmax is
averaged over the `V` views.

What lives here (run management, presets, plots and publishing live in the example; the encoder comes
from `sources.load_encoder`):

- `encode_clips` / `group_views` / `probe_tokens`: the frozen forward (uint8 pixels normalized on the
  device, no_grad, bounded chunks, optional autocast; the last block's or multi-level tokens,
  `resolve_out_layers`) and the token layout.
- `MultiHeadProbe`, `build_optimizer` (one AdamW, one param group per head), `WarmupCosine`.
- `train_one_epoch` (forward + backward one head at a time: memory independent of the number of heads,
  one gradient reduction per step) and `evaluate`.
- `per_sample_loss`, `view_averaged_probs`, `gather_records`, `dedupe_records`, `summarize_records`:
  metrics that are exact for any number of processes (see `gather_records`).
- `SeededSamples`, `ShardedBatchSampler`: augmentation and sharding independent of the process count.
- `extract_features` / `cached_features`: encoded datasets and the optional feature cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, Dataset, Sampler

from ._files import write_atomically
from .data import SkippedSample, collate_skip_none, normalize
from .modeling import AttentiveClassifier, VJEPA2AreaConfig
from .modeling.configuration_vjepa2_area import resolve_out_layers

logger = logging.getLogger(__name__)

# Clips per encoder forward unless the caller says otherwise: bounds the frozen forward's activations
# (an eval batch of 4 videos x 8 segments x 3 views is 96 clips).
ENCODER_CHUNK = 8


@dataclass(frozen=True)
class HeadSpec:
    """Hyper-parameters of one probe head."""

    lr: float
    weight_decay: float

    @property
    def name(self) -> str:
        return f"lr{self.lr:g}_wd{self.weight_decay:g}"


def hparam_grid(lrs: Iterable[float], weight_decays: Iterable[float]) -> list[HeadSpec]:
    """All (lr, wd) pairs, weight-decay-major like V-JEPA 2's `multihead_kwargs` list."""
    lrs, weight_decays = [float(v) for v in lrs], [float(v) for v in weight_decays]
    if not lrs or not weight_decays:
        raise ValueError("the probe grid needs at least one learning rate and one weight decay")
    if any(v <= 0 for v in lrs) or any(v < 0 for v in weight_decays):
        raise ValueError(f"learning rates must be > 0 and weight decays >= 0, got {lrs} and {weight_decays}")
    return [HeadSpec(lr, wd) for wd in weight_decays for lr in lrs]


# ----------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------


def encoder_fingerprint(encoder: nn.Module) -> str:
    """A cheap digest of the encoder's config and weights (first values of every tensor), for the cache."""
    digest = hashlib.sha256(json.dumps(encoder.config.to_dict(), sort_keys=True, default=str).encode())
    for key, value in encoder.state_dict().items():
        head = value.detach().flatten()[:16].float().cpu().numpy()
        digest.update(key.encode() + str(tuple(value.shape)).encode() + head.tobytes())
    return digest.hexdigest()[:16]


def tokens_per_clip(config: VJEPA2AreaConfig, frames_per_clip: int, crop_size: int,
                    out_layers: Sequence[int] | None = None) -> int:  # fmt: skip
    """Tokens the probe reads from one `[C, frames_per_clip, crop, crop]` clip (the encoder's tokens,
    once per block of `out_layers` for a multi-level probe)."""
    frames = max(frames_per_clip, config.tubelet_size)
    return (frames // config.tubelet_size) * (crop_size // config.patch_size) ** 2 * len(out_layers or [None])


OUT_LAYERS_HELP = ("encoder blocks the probe reads: 'last' (the last block's tokens), 'multilevel' (V-JEPA 2's "
                   "Diving48/Jester input: four blocks per encoder size, e.g. ViT-L 17,19,21,23, each through the "
                   "final norm, joined along the token axis) or block indices such as '17,19,21,23'")


def probe_tokens(encoder: nn.Module, clips: torch.Tensor, out_layers: Sequence[int] | None = None) -> torch.Tensor:
    """What a probe reads from normalized clips `[B, C, T, H, W]`: the last block's tokens `[B, N, D]`, or
    with `out_layers` (V-JEPA 2's multi-level probe) those blocks' outputs, each through the final norm,
    concatenated along the token axis in block order `[B, L*N, D]`, as `VJEPA2AreaForVideoClassification`
    reads them with `config.probe_out_layers`."""
    if out_layers is None:
        return encoder.encode(clips).last_hidden_state
    return torch.cat(encoder.encode(clips, out_layers=out_layers).intermediate_states, dim=1)


# ----------------------------------------------------------------------------------------------
# The frozen forward and the token layout
# ----------------------------------------------------------------------------------------------


def group_views(tokens: torch.Tensor, num_segments: int, num_views: int) -> torch.Tensor:
    """Encoder tokens of segment-major clips `[B*S*V, N, D]` -> per view, segments concatenated:
    `[B, V, S*N, D]` (V-JEPA 2's `ClipAggregation`: clip tokens joined along time)."""
    clips, n, d = tokens.shape
    if clips % (num_segments * num_views):
        raise ValueError(f"{clips} clips is not a multiple of segments x views = {num_segments} x {num_views}")
    batch = clips // (num_segments * num_views)
    return tokens.view(batch, num_segments, num_views, n, d).transpose(1, 2).reshape(batch, num_views, num_segments * n, d)


@torch.no_grad()
def encode_clips(
    encoder: nn.Module,
    clips: torch.Tensor,
    num_segments: int,
    num_views: int,
    *,
    autocast_dtype: torch.dtype | None = None,
    chunk_size: int | None = ENCODER_CHUNK,
    out_layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Frozen forward of a batch: clips `[B, S*V, C, T, H, W]` (the dataset's segment-major layout; uint8
    pixels, normalized here chunk by chunk on their device, or already-normalized floats) -> float32
    tokens `[B, V, S*N, D]` (`N` per clip as `probe_tokens` makes them, `out_layers` for multi-level).
    Under `no_grad`, with autocast to `autocast_dtype` when given (bf16 on GPU); at most `chunk_size`
    clips go through the encoder at once (None: all)."""
    if clips.ndim != 6 or clips.shape[1] != num_segments * num_views:
        raise ValueError(
            f"clips must be [B, S*V, C, T, H, W] with S*V = {num_segments * num_views}, got {tuple(clips.shape)}"
        )
    flat = clips.flatten(0, 1)
    outputs = []
    for chunk in flat.split(chunk_size or flat.shape[0]):
        if chunk.dtype == torch.uint8:
            chunk = normalize(chunk, channel_dim=1)
        with torch.autocast(chunk.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            outputs.append(probe_tokens(encoder, chunk, out_layers).float())
    return group_views(torch.cat(outputs), num_segments, num_views)


# ----------------------------------------------------------------------------------------------
# The probe: several attentive classifiers over the same tokens
# ----------------------------------------------------------------------------------------------


class MultiHeadProbe(nn.Module):
    """One `AttentiveClassifier` per (lr, wd) of the grid, all reading the same tokens.

    `forward(x [B, V, M, D])` -> logits `[H, B, V, K]` of every head (evaluation), or with `head=h`
    `[B, V, K]` of head h alone: training runs forward + backward one head at a time, so only one
    head's graph is alive (see `train_one_epoch`). `activation_checkpointing` keeps only each block's
    input of that graph and recomputes the rest in backward (`head_activation_bytes` says when it pays).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        specs: Sequence[HeadSpec],
        *,
        num_heads: int = 16,
        depth: int = 4,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.specs = list(specs)
        self.heads = nn.ModuleList(
            AttentiveClassifier(dim, num_classes, num_heads=num_heads, depth=depth) for _ in self.specs
        )
        self.activation_checkpointing = activation_checkpointing

    def forward(self, x: torch.Tensor, head: int | None = None) -> torch.Tensor:
        flat = x.flatten(0, 1)
        if head is not None:
            return self._classify(self.heads[head], flat).unflatten(0, x.shape[:2])
        return torch.stack([self._classify(h, flat) for h in self.heads]).unflatten(1, x.shape[:2])

    def _classify(self, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not (self.activation_checkpointing and torch.is_grad_enabled()):
            return head(x)
        pooler = head.pooler  # AttentivePooler.forward, one checkpoint per block
        for block in pooler.blocks:
            x = checkpoint(block, x, use_reentrant=False)
        queries = pooler.query_tokens.expand(x.shape[0], -1, -1)
        return head.linear(checkpoint(pooler.cross_attention_block, queries, x, use_reentrant=False).squeeze(1))


# What one head's fp32 training graph keeps for backward, in bytes per token-channel (batch x views x
# tokens x width), measured with `saved_tensors_hooks` on a depth-4 head (benchmarks/bench_probe.py):
# 230 (norm and residual inputs, q/k/v, attention outputs, the MLP hidden and GELU outputs), about a
# quarter of it per block. Checkpointed, each block keeps its 4-byte input, and one block's graph is
# rebuilt at a time during backward.
HEAD_GRAPH_BYTES = 230
# Above this one head's graph is checkpointed by default: ViT-L tokens at the K400 protocol (batch 4 x
# 16,384 x 1,024: ~15 GB) are; the tiny encoder's (batch 2 x 16,384 x 192: ~1.4 GB) are not, and keep the
# ~1/3 more probe compute the recomputation costs.
CHECKPOINTING_THRESHOLD_BYTES = 2 * 2**30


def head_activation_bytes(token_channels: int, depth: int = 4, checkpointing: bool = False) -> int:
    """Estimated peak of one head's fp32 training graph over `token_channels` = batch x views x tokens x width."""
    per_block = HEAD_GRAPH_BYTES / 4
    return int(token_channels * (4 * depth + per_block if checkpointing else per_block * depth))


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits `[H, B, V, K]`, averaged over views: `[H, B]` (float32)."""
    heads, batch, views, classes = logits.shape
    target = labels.view(1, batch, 1).expand(heads, batch, views).reshape(-1)
    loss = F.cross_entropy(logits.float().reshape(-1, classes), target, reduction="none")
    return loss.view(heads, batch, views).mean(-1)


def view_averaged_probs(logits: torch.Tensor) -> torch.Tensor:
    """V-JEPA 2's multi-view prediction: softmax averaged over views, `[H, B, V, K] -> [H, B, K]`."""
    return logits.float().softmax(-1).mean(2)


def _no_weight_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or name.endswith("query_tokens")


def build_optimizer(
    probe: MultiHeadProbe,
    *,
    exclude_bias_and_norm: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """One AdamW over all heads, with each head's lr and weight decay in its own param group(s).

    AdamW's update is per parameter, so this equals one optimizer per head (V-JEPA 2's way) with one
    `step()` for all. V-JEPA 2 decays every probe parameter (one group per classifier, no exclusions),
    which is the default here so results reproduce; `exclude_bias_and_norm=True` adds a wd-0 group per
    head for biases, norms and the query token (the common ViT practice). The fused kernel updates in
    place: the default (foreach) one makes temporaries the size of all heads' parameters (~4 GB for 20
    ViT-L heads).
    """
    groups = []
    for index, (spec, head) in enumerate(zip(probe.specs, probe.heads)):
        decay, no_decay = [], []
        for name, param in head.named_parameters():
            (no_decay if exclude_bias_and_norm and _no_weight_decay(name, param) else decay).append(param)
        groups.append({"params": decay, "lr": spec.lr, "weight_decay": spec.weight_decay, "head": index})
        if no_decay:
            groups.append({"params": no_decay, "lr": spec.lr, "weight_decay": 0.0, "head": index})
    return torch.optim.AdamW(groups, betas=betas, eps=eps, fused=True)


class WarmupCosine:
    """LR factor of optimizer step k: linear warmup from 0, then cosine to `final_ratio`.

    Follows V-JEPA 2's `WarmupCosineLRSchedule`, which is stepped *before* each iteration: step k
    (0-based) uses the value at k + 1, so the last step of the run lands on `final_ratio`.
    A picklable object so `LambdaLR.state_dict()` carries it.
    """

    def __init__(self, total_steps: int, warmup_steps: int = 0, final_ratio: float = 0.0):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_ratio = float(final_ratio)

    def __call__(self, step: int) -> float:
        step = step + 1
        if step < self.warmup_steps:
            return step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return self.final_ratio + (1.0 - self.final_ratio) * cosine


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warmup + cosine for every group (each keeps its own base lr)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps))


# ----------------------------------------------------------------------------------------------
# Data plumbing
# ----------------------------------------------------------------------------------------------


class SeededSamples(Dataset):
    """Wraps a dataset so item i of epoch e draws its randomness from torch's RNG seeded by (seed, e, i).

    Training augmentation (random clip offsets, crops) then depends on neither the number of
    processes, the DataLoader workers, nor where a run was resumed, so a 2-process run sees the same
    clips as a 1-process run and a resumed run the same as an uninterrupted one. Call `set_epoch`.
    """

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, dtype=np.uint64)[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return self.dataset[index]


def collate_probe_batch(batch: list) -> dict:
    """`collate_skip_none` plus the dataset indices of the skipped items (`skipped_indices`)."""
    out = collate_skip_none(batch)
    out["skipped_indices"] = [item.index for item in batch if isinstance(item, SkippedSample)]
    return out


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
        "skipped_indices": [],
    }


class ShardedBatchSampler(Sampler):
    """Global batches split across processes, with no padding.

    Each epoch orders the samples (a permutation seeded by `seed + epoch`, or in order) and cuts the order
    into global batches of `batch_size * num_replicas`; process `rank` takes its contiguous slice of each.
    Every process yields `ceil(n / global batch)` batches, the last ones possibly short or empty, so a
    step sees the same samples whatever the number of processes (1 process x batch 8 = 2 x 4 = 8 x 1).

    accelerate's own sharding pads the last global batch with repeated samples so all processes get
    equal batches; that changes what the probe trains on when n is not a multiple of the global batch
    (and feature caches drop skipped videos, so n rarely is). Here a short process joins the step with an
    empty batch and a zero loss instead.
    """

    def __init__(self, num_samples: int, batch_size: int, *, rank: int = 0, num_replicas: int = 1,
                 shuffle: bool = False, seed: int = 0):  # fmt: skip
        if batch_size < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"bad sharding: batch_size={batch_size}, rank={rank}, num_replicas={num_replicas}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.num_replicas = rank, num_replicas
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / (self.batch_size * self.num_replicas))

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_samples)
        step = self.batch_size * self.num_replicas
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for start in range(0, self.num_samples, step):
            yield order[start : start + step][lo:hi].tolist()


# ----------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------


def _check_per_head_ddp(probe: nn.Module) -> None:
    if isinstance(probe, nn.parallel.DistributedDataParallel) and not probe.find_unused_parameters:
        raise ValueError(
            "each probe head runs forward + backward on its own, so the other heads are unused in that pass: "
            "wrap the probe with find_unused_parameters=True (accelerate: "
            "Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]))"
        )


def backward_per_head(accelerator, probe: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, *,
                      loss_scale: float, sync: bool) -> torch.Tensor:  # fmt: skip
    """Forward + backward of each head in turn on the same frozen tokens; returns detached logits
    `[H, B, V, K]`.

    The heads share nothing but `tokens` (no grad), so the gradients equal one backward of the summed
    losses, while only one head's graph is alive at a time. Gradients accumulate locally (`no_sync`)
    except in the last head's backward when `sync`: DDP then reduces every head's gradient once, in one
    pass over its buckets (heads unused in that pass keep the gradients they accumulated).
    """
    heads = len(accelerator.unwrap_model(probe).heads)
    tokens = tokens.detach()
    logits = []
    for head in range(heads):
        reduce_now = sync and head == heads - 1
        with contextlib.nullcontext() if reduce_now else accelerator.no_sync(probe):
            out = probe(tokens, head=head)
            accelerator.backward(per_sample_loss(out[None], labels)[0].sum() * loss_scale)
        logits.append(out.detach())
    return torch.stack(logits)


def train_one_epoch(
    accelerator,
    probe: nn.Module,
    optimizer,
    scheduler,
    loader: Iterable[dict],
    tokens_of: Callable[[dict], torch.Tensor | None],
    *,
    empty_tokens_shape: tuple[int, int, int],
    grad_accum: int = 1,
    progress: bool = False,
    desc: str = "train",
) -> tuple[dict[str, torch.Tensor], list]:
    """One pass over `loader` (every process the same number of batches, see `ShardedBatchSampler`).

    The gradient of each optimizer step is the exact mean over the samples the step used on all
    processes: each process back-propagates `world * sum of its per-sample losses` (DDP averages over
    processes, which makes it the global sum), and the summed gradients are divided by the step's
    global sample count before `optimizer.step()`. Skipped videos and short last batches are thus
    weighted right, and `grad_accum` micro-batches weigh like one big batch. A process whose batch is
    empty runs the heads on zeros with a zero loss so DDP's collectives still match. Heads train one at
    a time (`backward_per_head`); gradients are reduced once per optimizer step.

    Returns this process's per-sample records (`new_records` layout) and its skipped (index, path).
    """
    from tqdm import tqdm  # not tqdm.auto: its asyncio class calls iter() in __init__, a second DataLoader iterator (twice the workers)

    _check_per_head_ddp(probe)
    device, world = accelerator.device, accelerator.num_processes
    probe.train()
    records, skipped = new_records(), []
    window = 0
    num_batches = len(loader)
    for step, batch in enumerate(tqdm(loader, desc=desc, disable=not progress)):
        skipped += list(zip(batch["skipped_indices"], batch["skipped_paths"]))
        tokens = tokens_of(batch)
        labels = batch["labels"].to(device)
        last = (step + 1) % grad_accum == 0 or step + 1 == num_batches
        if tokens is None:
            backward_per_head(accelerator, probe, torch.zeros(1, *empty_tokens_shape, device=device),
                              torch.zeros(1, dtype=torch.long, device=device), loss_scale=0.0, sync=last)  # fmt: skip
        else:
            logits = backward_per_head(accelerator, probe, tokens, labels, loss_scale=float(world), sync=last)
            window += len(labels)
            add_records(records, batch["indices"], labels, logits)
        del tokens
        if last:
            count = int(accelerator.reduce(torch.tensor(window, device=device), "sum").item())
            for param in probe.parameters():
                if param.grad is not None:
                    param.grad.div_(max(count, 1))
            optimizer.step()
            if not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            # Zeroed in place, not freed: under DDP with gradient_as_bucket_view the gradients are views of the
            # reduction buckets, so the heads' backward passes accumulate into them without a second copy.
            optimizer.zero_grad(set_to_none=False)
            window = 0
    return stack_records(records, len(accelerator.unwrap_model(probe).heads)), skipped


@torch.no_grad()
def evaluate(
    accelerator,
    probe: nn.Module,
    loader: Iterable[dict],
    tokens_of: Callable[[dict], torch.Tensor | None],
    *,
    progress: bool = False,
    desc: str = "val",
) -> tuple[dict[str, torch.Tensor], list]:
    """Per-sample predictions (softmax averaged over views) and losses of every head on this process's
    share of `loader`; returns the records and the skipped (index, path)."""
    from tqdm import tqdm  # not tqdm.auto: its asyncio class calls iter() in __init__, a second DataLoader iterator (twice the workers)

    model = accelerator.unwrap_model(probe).eval()
    records, skipped = new_records(), []
    for batch in tqdm(loader, desc=desc, disable=not progress):
        skipped += list(zip(batch["skipped_indices"], batch["skipped_paths"]))
        tokens = tokens_of(batch)
        if tokens is None:
            continue
        with accelerator.autocast():
            logits = model(tokens)
        add_records(records, batch["indices"], batch["labels"], logits)
    return stack_records(records, len(model.heads)), skipped


# ----------------------------------------------------------------------------------------------
# Metrics exact for any number of processes
# ----------------------------------------------------------------------------------------------


def dedupe_records(records: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the first record of every dataset index, sorted by index.

    Distributed loaders pad the last batches with repeated samples so every process steps equally.
    `gather_for_metrics` trims that padding by count, which assumes equal batch sizes on every process;
    skipped videos break that, so records carry their dataset index and are deduplicated by it.
    """
    indices = records["indices"]
    if indices.numel() == 0:
        return records
    order = torch.argsort(indices, stable=True)
    sorted_indices = indices[order]
    first = torch.ones_like(sorted_indices, dtype=torch.bool)
    first[1:] = sorted_indices[1:] != sorted_indices[:-1]
    keep = order[first]
    return {key: value[keep] for key, value in records.items()}


def gather_records(local: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All processes' per-sample records (CPU tensors keyed `indices`, `labels`, ...), deduplicated by
    index, identical on every rank (`accelerate.utils.gather_object`; a no-op on one process)."""
    from accelerate.utils import gather_object

    parts = gather_object([{key: value.cpu() for key, value in local.items()}])
    merged = {key: torch.cat([part[key] for part in parts]) for key in local}
    return dedupe_records(merged)


def new_records() -> dict[str, list]:
    return {"indices": [], "labels": [], "preds": [], "losses": []}


def add_records(records: dict[str, list], indices, labels, logits: torch.Tensor) -> None:
    """Append a batch's per-sample results: predictions (view-averaged softmax) and losses per head."""
    labels = labels.to(logits.device)
    records["indices"].append(indices.detach().cpu())
    records["labels"].append(labels.detach().cpu())
    records["preds"].append(view_averaged_probs(logits).argmax(-1).T.cpu())  # [B, H]
    records["losses"].append(per_sample_loss(logits, labels).T.detach().cpu())  # [B, H]


def stack_records(records: dict[str, list], num_heads: int) -> dict[str, torch.Tensor]:
    empty = {"indices": torch.zeros(0, dtype=torch.long), "labels": torch.zeros(0, dtype=torch.long),
             "preds": torch.zeros(0, num_heads, dtype=torch.long), "losses": torch.zeros(0, num_heads)}  # fmt: skip
    return {key: torch.cat(value) if value else empty[key] for key, value in records.items()}


def summarize_records(records: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per head: top-1 (%) and mean loss over the deduplicated samples; plus the sample count."""
    n = int(records["indices"].numel())
    if n == 0:
        heads = records["preds"].shape[1]
        return {"num_samples": 0, "top1": [float("nan")] * heads, "loss": [float("nan")] * heads}
    correct = (records["preds"] == records["labels"][:, None]).double().sum(0)
    return {
        "num_samples": n,
        "top1": (100.0 * correct / n).tolist(),
        "loss": (records["losses"].double().sum(0) / n).tolist(),
    }


# ----------------------------------------------------------------------------------------------
# Encoded datasets and the feature cache
# ----------------------------------------------------------------------------------------------


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
    from tqdm import tqdm  # not tqdm.auto: its asyncio class calls iter() in __init__, a second DataLoader iterator (twice the workers)

    subset = Subset(dataset, list(range(len(dataset)) if indices is None else indices))
    loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_probe_batch)
    features, labels, kept, skipped = [], [], [], []
    for batch in tqdm(loader, desc=desc, disable=not progress):
        skipped += list(zip(batch["skipped_indices"], batch["skipped_paths"]))
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


__all__ = [
    "ENCODER_CHUNK",
    "FeatureDataset",
    "HeadSpec",
    "MultiHeadProbe",
    "SeededSamples",
    "ShardedBatchSampler",
    "WarmupCosine",
    "add_records",
    "backward_per_head",
    "build_optimizer",
    "build_scheduler",
    "cached_features",
    "collate_features",
    "collate_probe_batch",
    "dedupe_records",
    "encode_clips",
    "encoder_fingerprint",
    "evaluate",
    "extract_features",
    "gather_records",
    "group_views",
    "head_activation_bytes",
    "hparam_grid",
    "new_records",
    "per_sample_loss",
    "probe_tokens",
    "resolve_out_layers",
    "stack_records",
    "summarize_records",
    "tokens_per_clip",
    "train_one_epoch",
    "view_averaged_probs",
]
