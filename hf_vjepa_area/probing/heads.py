"""The probe: one attentive classifier per (lr, wd) of the grid over the same tokens, its memory
estimate, losses, optimizer and schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..modeling import AttentiveClassifier


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
