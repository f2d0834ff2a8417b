"""What a probe run states about itself: the global batch against V-JEPA 2's protocol, a CPU epoch
estimate before a long run, and results.json's content (per-head curves, the best head, the encoder,
the data and the skipped videos)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from ..modeling import VJEPA2AreaModel
from .heads import HeadSpec, MultiHeadProbe, hparam_grid

# Tokens per view from which a CPU run says up front how long an epoch will take (K400: 16,384).
HEAVY_TOKENS = 4096


def resolve_batching(preset: str, protocol_global_batch: int | None, batch_size: int, world: int,
                     grad_accum: int | None = None) -> dict:  # fmt: skip
    """Gradient accumulation and what it makes of the preset's protocol: V-JEPA 2's global batch (videos
    per optimizer step over all processes) by default, `grad_accum` when given. Raises ValueError when the
    protocol's batch is no multiple of `batch_size` x `world`."""
    per_step = batch_size * world
    accum = grad_accum
    if accum is None and protocol_global_batch is not None:
        if protocol_global_batch % per_step:
            raise ValueError(
                f"the {preset} preset's global batch {protocol_global_batch} (V-JEPA 2's) is not a multiple of "
                f"--batch-size {batch_size} x {world} process(es) = {per_step}: pick a --batch-size that makes "
                f"it one, or pass --grad-accum N to train with another global batch ({per_step} x N)"
            )
        accum = protocol_global_batch // per_step
    accum = accum or 1
    global_batch = per_step * accum
    return dict(grad_accum=accum, global_batch_size=global_batch, protocol_global_batch_size=protocol_global_batch,
                matches_protocol_batch=protocol_global_batch is not None and global_batch == protocol_global_batch)  # fmt: skip


def batching_line(preset: str, batch_size: int, world: int, batching: dict) -> str:
    """The run log's statement of the global batch and whether it is the protocol's."""
    line = (f"global batch {batching['global_batch_size']} = {batch_size} per process x {world} process(es) x "
            f"{batching['grad_accum']} accumulation step(s)")  # fmt: skip
    protocol = batching["protocol_global_batch_size"]
    if protocol is None:
        return line + " (no V-JEPA 2 protocol for this preset)"
    if batching["matches_protocol_batch"]:
        return line + f": V-JEPA 2's {preset} protocol ({protocol})"
    return line + f": NOT V-JEPA 2's {preset} protocol ({protocol}; lr not rescaled, so results may differ)"


def estimate_epoch(encoder: nn.Module, *, frames: int, resolution: int, segments: int, views: int, num_heads: int,
                   probe_heads: int, probe_depth: int, num_classes: int, tokens: int, checkpointing: bool,
                   num_train: int, num_val: int, world: int) -> str:  # fmt: skip
    """A rough epoch time on this CPU, from timing the pieces once: the encoder on one real-size clip, and
    one head's training step at 1,024 and 2,048 tokens, fitted as linear*M + quadratic*M^2 (projections
    and MLPs, attention) and scaled to the run's tokens, `num_heads` grid heads and videos. Eval runs
    forward only (~1/3)."""
    dim = encoder.config.embed_dim
    head = MultiHeadProbe(dim, num_classes, hparam_grid([1e-3], [0.0]), num_heads=probe_heads, depth=probe_depth,
                          activation_checkpointing=checkpointing)  # fmt: skip

    def timed(fn) -> float:
        fn()  # warm-up: first-call allocations
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    clip = torch.zeros(1, 3, frames, resolution, resolution)
    with torch.no_grad():
        clip_s = timed(lambda: encoder.encode(clip))

    def head_step(m: int) -> float:
        x = torch.randn(1, 1, m, dim)
        return timed(lambda: head(x, head=0).sum().backward())

    m1, m2 = 1024, 2048
    t1, t2 = head_step(m1), head_step(m2)
    quadratic = max(0.0, (t2 - 2 * t1) / (m2 * m2 - 2 * m1 * m1))  # t(m) = linear*m + quadratic*m^2
    linear = max(0.0, (t1 - quadratic * m1 * m1) / m1)
    head_s = linear * tokens + quadratic * tokens * tokens
    train_s = num_train * (segments * clip_s + num_heads * head_s) / world
    val_s = num_val * views * (segments * clip_s + num_heads * head_s / 3) / world
    return (f"estimated time per epoch on this CPU: ~{(train_s + val_s) / 3600:.1f} h (train {num_train} videos x "
            f"{(train_s * world / max(num_train, 1)):.0f} s, val {num_val} x {(val_s * world / max(num_val, 1)):.0f} s; "
            f"{num_heads} heads over {tokens} tokens per view dominate: fewer --segments/--frames or a GPU cut it)")


def add_epoch(history: dict[str, list], train: dict, val: dict) -> int:
    """Append an epoch's train and val summaries (`summarize_records`) to `history` (an empty dict to
    start); returns the head with the best val top-1."""
    for split, summary in (("train", train), ("val", val)):
        history.setdefault(f"{split}_loss", []).append(summary["loss"])
        history.setdefault(f"{split}_top1", []).append(summary["top1"])
        history.setdefault(f"num_{split}", []).append(summary["num_samples"])
    return max(range(len(val["top1"])), key=lambda h: val["top1"][h])


def epoch_scalars(specs: Sequence[HeadSpec], train: dict, val: dict, *, skipped: int) -> dict[str, float]:
    """An epoch's tracker scalars: every head's val top-1 and train loss, the best val top-1, the skipped
    video count."""
    scalars = {f"val_top1/{s.name}": val["top1"][h] for h, s in enumerate(specs)}
    scalars.update({f"train_loss/{s.name}": train["loss"][h] for h, s in enumerate(specs)})
    return {**scalars, "val_top1/best": max(val["top1"]), "skipped_videos": skipped}


def describe_encoder(encoder: nn.Module, name: str | None) -> dict:
    """What results.json records about the encoder."""
    config = encoder.config
    return dict(
        model=name or "demo (built-in random-init ST-A² encoder)",
        library="timm" if not isinstance(encoder, VJEPA2AreaModel) else "transformers",
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        patch_size=config.patch_size,
        tubelet_size=config.tubelet_size,
        area_splits=config.area_splits,
        area_layers=list(config.area_layers),
        num_parameters=sum(p.numel() for p in encoder.parameters()),
    )


def build_results(config: dict, specs: Sequence[HeadSpec], history: dict, skipped: dict, encoder: nn.Module,
                  class_names: Sequence[str], *, num_classes: int, num_train: int, num_val: int, world: int,
                  seconds: float, batching: dict, out_layers: Sequence[int] | None) -> dict:  # fmt: skip
    """results.json of a finished run: `config` (the run's settings, `model`, `train_csv` and `val_csv`
    among them), per-head curves from `history`, the best head by its last val top-1, the skipped videos
    (`{split: {index: path}}`)."""
    last = history["val_top1"][-1]
    best = max(range(len(specs)), key=lambda h: last[h])
    heads = [
        dict(index=h, name=s.name, lr=s.lr, weight_decay=s.weight_decay,
             train_loss=[e[h] for e in history["train_loss"]], train_top1=[e[h] for e in history["train_top1"]],
             val_loss=[e[h] for e in history["val_loss"]], val_top1=[e[h] for e in history["val_top1"]])  # fmt: skip
        for h, s in enumerate(specs)
    ]
    return dict(
        task="frozen attentive probe (V-JEPA 2 protocol)",
        config=config,
        encoder=describe_encoder(encoder, config["model"]),
        data=dict(train_manifest=config["train_csv"], val_manifest=config["val_csv"], num_train=num_train,
                  num_val=num_val, num_classes=num_classes, class_names=list(class_names),
                  train_samples_used=history["num_train"][-1], val_samples_scored=history["num_val"][-1]),  # fmt: skip
        num_processes=world,
        **batching,
        probe_out_layers=list(out_layers) if out_layers is not None else None,
        epochs=len(history["val_top1"]),
        heads=heads,
        best_head=dict(index=best, name=specs[best].name, lr=specs[best].lr, weight_decay=specs[best].weight_decay,
                       val_top1=last[best], epoch=len(history["val_top1"])),  # fmt: skip
        val_top1_best_per_epoch=[max(e) for e in history["val_top1"]],
        skipped_videos={
            **{split: dict(count=len(skipped[split]), paths=sorted(set(skipped[split].values()))) for split in ("train", "val")},
            "total": len(skipped["train"]) + len(skipped["val"]),
        },
        wall_time_s=round(seconds, 1),
    )
