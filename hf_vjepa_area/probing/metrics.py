"""Per-sample records and their summaries, exact for any number of processes: records carry their
dataset index, so gathering them and dropping repeats gives each sample once."""

from __future__ import annotations

from typing import Any

import torch

from .heads import per_sample_loss, view_averaged_probs


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

