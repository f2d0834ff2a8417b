"""The pieces of a self-supervised anneal run (`examples/ssl_anneal.py`) around `ssl`'s step: the
global batch's masks per process, the sharded EMA target under FSDP 2, the run's history and results,
and the annealed model folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from .data.masks import MultiBlockMaskCollator
from .data.pretraining import split_skipped
from .hub import save_repo_folder
from .modeling.modeling_vjepa2_area import VJEPA2AreaModel
from .modeling.predictor_vjepa2_area import PREDICTOR_WEIGHTS_NAME
from .runs import UsageError, to_json


def token_grid(config, frames: int, resolution: int) -> tuple[int, int, int]:
    """The encoder's token grid (time, height, width) for clips of `frames` x `resolution`^2."""
    return frames // config.tubelet_size, resolution // config.patch_size, resolution // config.patch_size


class GlobalBatchMasks:
    """DataLoader collate: this process's clips with the masks of the whole global batch, sliced to it.

    V-JEPA 2's collator trims every sample's masks to the batch's smallest count, so masks drawn per
    process would differ from one process's masks for the same global batch. Drawn for the global batch
    (a function of the step: the items carry it) and sliced, every process count trains alike.
    """

    def __init__(self, collator: MultiBlockMaskCollator, batch_size: int, rank: int, num_replicas: int):
        self.collator, self.batch_size, self.rank, self.num_replicas = collator, batch_size, rank, num_replicas

    def __call__(self, samples: list[dict]) -> dict:
        samples, skipped = split_skipped(samples)
        step = samples[0]["step"]
        masks_context, masks_target = self.collator.masks(step, self.batch_size * self.num_replicas)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return {
            "clips": torch.stack([sample["clip"] for sample in samples]),
            "masks_context": [m[mine] for m in masks_context],
            "masks_target": [m[mine] for m in masks_target],
            "indices": torch.tensor([sample["index"] for sample in samples]),
            "step": step,
            "skipped": skipped,
        }


def shard_like(target_encoder, model) -> None:
    """Shard the EMA target encoder as FSDP 2 shards the trained encoder: every parameter split on dim 0 over the
    same mesh, so that `ssl.ema_update` runs on local shards, with no communication. One unit per block plus the
    root, resharded after every forward, so the parameters are shards again whenever the EMA update runs."""
    from torch.distributed.fsdp import fully_shard

    mesh = next(model.parameters()).device_mesh
    for block in target_encoder.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(target_encoder, mesh=mesh, reshard_after_forward=True)


class FullState:
    """A module's full (unsharded) state for accelerate's checkpoints, sharded or not.

    `accelerator.save_state` calls `state_dict` on every process and writes the main process's result; for
    FSDP shards (DTensors) that is a collective gather to full CPU tensors. `load_state_dict` takes the full
    tensors and keeps each process's shard."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu() for k, v in self.module.state_dict().items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in self.module.state_dict().items():
            full = state[name].to(value.device, value.dtype)
            if isinstance(value, DTensor):
                value.to_local().copy_(distribute_tensor(full, value.device_mesh, value.placements).to_local())
            else:
                value.copy_(full)


def prepare(accelerator, model, optimizer, target_encoder) -> tuple:
    """`accelerator.prepare` for the trained JEPA and its optimizer, with the EMA target encoder beside
    them: on the device, sharded like the encoder under FSDP 2, and in the checkpoints (its `FullState`).
    Returns (model, optimizer, target state)."""
    from accelerate.utils import DistributedType

    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if fsdp and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise UsageError("FSDP needs fsdp_version: 2 in the accelerate config (the EMA update works on per-parameter "
                         "shards, which FSDP 1's flat parameters do not expose)")  # fmt: skip
    model, optimizer = accelerator.prepare(model, optimizer)
    target_encoder.to(accelerator.device)
    if fsdp:
        shard_like(target_encoder, model)
    target_state = FullState(target_encoder)
    accelerator.register_for_checkpointing(target_state)
    return model, optimizer, target_state


def new_history() -> dict[str, list]:
    return dict(loss=[], loss_per_mask=[], lr=[], momentum=[], step_s=[])


def record_step(history: dict, per_mask: list[float], lr: float, momentum: float, seconds: float) -> None:
    """One step into the history: the loss (mean over the mask configs), per config, the schedules, the time."""
    history["loss"].append(sum(per_mask) / len(per_mask))
    history["loss_per_mask"].append(per_mask)
    history["lr"].append(lr)
    history["momentum"].append(momentum)
    history["step_s"].append(seconds)


def step_logs(history: dict, masks_context: list[torch.Tensor], grid: tuple[int, int, int], skipped: int) -> dict:
    """The tracker scalars of the last step: loss (per mask config too), schedules, time, visible ratios."""
    logs = {"loss": history["loss"][-1], "lr": history["lr"][-1], "momentum": history["momentum"][-1],
            "step_time_s": history["step_s"][-1], "skipped_videos": skipped}  # fmt: skip
    logs.update({f"loss/mask_{i}": v for i, v in enumerate(history["loss_per_mask"][-1])})
    logs.update({f"visible_ratio/mask_{i}": m.shape[1] / math.prod(grid) for i, m in enumerate(masks_context)})
    return logs


def build_results(config: dict, history: dict, skipped: dict, num_processes: int, seconds: float) -> dict:
    """The run's results: its config, the loss of the first and last tenth of the steps, the history,
    the skipped videos (`runs.SkippedFiles.summary()`)."""
    losses = history["loss"]
    tenth = max(1, len(losses) // 10)
    return dict(
        task="V-JEPA 2 self-supervised anneal",
        config=config,
        num_processes=num_processes,
        global_batch_size=config["global_batch_size"],
        steps=len(losses),
        loss_first_10pct=sum(losses[:tenth]) / tenth,
        loss_last_10pct=sum(losses[-tenth:]) / tenth,
        history=history,
        skipped_videos=skipped,
        wall_time_s=round(seconds, 1),
    )


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in state.items()}, metadata={"format": "pt"})


def save_model_folder(folder: Path, config, target_weights: dict, trained_weights: dict, results: dict) -> None:
    """The annealed EMA target encoder as a Hub repo folder (transformers + timm + remote code) with the trained
    predictor (`trained_weights`: the JEPA's, `predictor.*`) in `predictor.safetensors`, Meta's key names."""
    target = VJEPA2AreaModel(config)
    target.load_state_dict(target_weights)
    predictor = {k.removeprefix("predictor."): v for k, v in trained_weights.items() if k.startswith("predictor.")}
    card = (
        f"# V-JEPA 2 encoder, self-supervised anneal\n\nAnnealed from `{results['config']['model']}` for "
        f"{results['steps']} steps (global batch {results['global_batch_size']}) with `examples/ssl_anneal.py`; "
        f"loss {results['loss_first_10pct']:.4f} -> {results['loss_last_10pct']:.4f}. The encoder is the EMA "
        "target encoder; `predictor.safetensors` holds V-JEPA 2's predictor in Meta's key names.\n"
    )
    save_repo_folder(target, folder, model_card=card, overwrite=True,
                     extra_files={PREDICTOR_WEIGHTS_NAME: safetensors_bytes(predictor), "anneal_results.json": to_json(results)})  # fmt: skip


def probe_command(model_dir: Path, train_csv: str | None, *, demo_val_csv: str | None = None, output_dir: str = "") -> str:
    """The probe of the encoder just annealed, on the data it used. The demo's (`demo_val_csv` given): the
    probe demo's small settings (`--preset demo`: its frames, 64 px, cached features) on the demo's own
    train/val manifests, minutes on CPU, into a folder beside the anneal's `output_dir` (inside it, it
    would be a file the anneal did not write). A real run's: its manifest ('path label' lines) trains the
    probe; the val manifest and the preset are the user's."""
    command = f"accelerate launch examples/k400_probe.py --model {model_dir}"
    if demo_val_csv:
        return f"{command} --preset demo --train-csv {train_csv} --val-csv {demo_val_csv} --output-dir {output_dir}_probe"
    train = train_csv or "TRAIN_MANIFEST"
    return f"{command} --train-csv {train} --val-csv VAL_MANIFEST --preset k400 (or ssv2, diving48, jester, coin: docs/probe.md)"


__all__ = [
    "token_grid",
    "GlobalBatchMasks",
    "shard_like",
    "FullState",
    "prepare",
    "new_history",
    "record_step",
    "step_logs",
    "build_results",
    "safetensors_bytes",
    "save_model_folder",
    "probe_command",
]
