#!/usr/bin/env python
"""V-JEPA 2 self-supervised annealing (into area attention), end to end, with accelerate.

    # Built-in demo: a small random-init encoder + predictor annealed on generated videos; a few minutes
    # on CPU, the loss falls. Writes outputs/demo_ssl/.
    accelerate launch examples/ssl_anneal.py

    # The ST-A² report's anneal from Meta's released ViT-L (target encoder, context encoder and predictor;
    # also facebook/vjepa2-vitl-fpc64-256, or a converted folder with predictor.safetensors), area (2, 2, 1)
    # in blocks 0-17, 256 px, 16 frames at 4 fps, batch 4, lr 5.25e-4 -> 1e-6 linear over 800 steps,
    # EMA 0.99925, weight decay 0.04, bf16 on GPU.
    accelerate launch examples/ssl_anneal.py --model vitl.pt --train-csv k400/val.csv

    # Then probe the annealed target encoder (the run ends by printing the command for its data):
    accelerate launch examples/k400_probe.py --model outputs/ssl_anneal/model --train-csv k400/train.csv --val-csv k400/val.csv

One step is V-JEPA 2's: target = non-affine layer norm of the EMA target encoder on all tokens, read at
the target ids; context = the encoder on the visible ids; the predictor predicts the targets; loss = mean
|prediction - target|, averaged over the mask configs; AdamW; then the EMA update. Masks are drawn for
the global batch and sliced per process, so 1 and N processes at the same global batch train alike.
Checkpoints every --checkpoint-every steps are atomic; --resume continues to the same losses. The
annealed target encoder and the predictor land in OUTPUT_DIR/model as a Hub-ready folder. docs/ssl.md.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

try:
    import hf_vjepa_area  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from hf_vjepa_area import anneal, runs, sources, ssl
from hf_vjepa_area.data import PretrainingClipDataset, make_synthetic_video_dataset, normalize
from hf_vjepa_area.data.masks import RELEASED_MASK_CONFIGS, MultiBlockMaskCollator
from hf_vjepa_area.data.pretraining import NoUsableVideoError, StepBatchSampler
from hf_vjepa_area.data.synthetic import DEMO_VIDEOS, demo_data_root
from hf_vjepa_area.modeling.released import DEFAULT_AREA_SPLITS
from hf_vjepa_area.runs import setting

MODEL_DIR = "model"
# The demo model: the probe demo's encoder (sources.DEMO_ENCODER_CONFIG) at patch 8, so that 64 px clips give
# an 8 x 8 grid in which V-JEPA 2's mask blocks (15% and 70% of the frame) leave context, with a 2-block predictor.
DEMO_MODEL = dict(patch_size=8, predictor_embed_dim=48, predictor_depth=2, predictor_num_heads=4, predictor_num_mask_tokens=2)


@dataclasses.dataclass
class AnnealSettings(runs.RunSettings):
    """The defaults are the ST-A² report's anneal (V-JEPA 2's cooldown recipe, `is_anneal`); the demo preset
    (no --train-csv / --video-dir) trains a small random-init model on the probe demo's generated videos."""

    PRESETS = {"demo": dict(model="demo", frames=8, resolution=64, batch_size=8, steps=300, lr=1e-3, warmup_steps=None,
                            ema=(0.996, 1.0), num_workers=0, output_dir="outputs/demo_ssl", demo=True)}  # fmt: skip

    model: str | None = setting(None, "a released source (Meta's vitl.pt, facebook/vjepa2-vitl-fpc64-256 or its folder), "
                                "or one of our folders / Hub ids with predictor.safetensors (vjepa2-area-convert writes "
                                "it); 'demo' for the built-in small model", result=True, group="model")  # fmt: skip
    revision: str | None = setting(None, "Hub revision of --model", result=True, group="model")
    init_predictor: str = setting("checkpoint", "'random' trains a new predictor, for a model that comes without "
                                  "predictor.safetensors", result=True, choices=["checkpoint", "random"], group="model")  # fmt: skip
    area_splits: tuple[int, ...] | None = setting(None, "area attention splits in the encoder and target encoder (default: "
                                                  "the model's, else 2 2 1)", result=True, nargs=3,
                                                  metavar=("T", "H", "W"), group="model")  # fmt: skip
    area_layers: str | None = setting(None, "blocks with area attention, e.g. 0:18 (default: the model's, or the first "
                                      "75%)", result=True, group="model")  # fmt: skip
    full_attention: bool = setting(False, "anneal with full attention (a control run)", result=True, group="model")
    activation_checkpointing: bool = setting(False, "recompute encoder and predictor blocks in backward (less memory, "
                                             "~30% slower)", group="model")  # fmt: skip

    train_csv: str | None = setting(None, "V-JEPA 2 manifest, 'path label' per line (labels unused)", result=True,
                                    path=True, group="data")  # fmt: skip
    video_dir: str | None = setting(None, "a folder of videos (searched recursively) instead of a manifest", result=True,
                                    path=True, group="data")  # fmt: skip
    frames: int = setting(16, "frames per clip", result=True, group="data")
    fps: float = setting(4.0, "sampling rate: frame step = ceil(video fps) // fps", result=True, group="data")
    frame_step: int | None = setting(None, "a fixed frame step instead of --fps", result=True, group="data")
    resolution: int = setting(256, "crop size", result=True, group="data")
    min_frames: int = setting(1, "skip videos with fewer frames (1: pad, as V-JEPA 2)", result=True, group="data")
    video_backend: str = setting("auto", "video decoder", result=True, choices=["auto", "pyav", "torchcodec"], group="data")
    demo_data_root: str = setting(demo_data_root(DEMO_VIDEOS["num_classes"], DEMO_VIDEOS["videos_per_class"]),
                                  "where the demo videos are generated (the probe demo's set)", group="data")  # fmt: skip

    steps: int = setting(800, "optimizer steps", result=True, group="optimization")
    batch_size: int = setting(4, "clips per process per step; the global batch is x processes", result=True,
                              group="optimization")  # fmt: skip
    lr: float = setting(5.25e-4, "start learning rate", result=True, group="optimization")
    final_lr: float = setting(1e-6, "learning rate at the last step", result=True, group="optimization")
    warmup_steps: int | None = setting(0, "linear warmup from 0; the demo's: the first 10% of --steps", result=True,
                                       group="optimization")  # fmt: skip
    schedule: str = setting("linear", "decay after warmup (linear: the anneal)", result=True, choices=["linear", "cosine"],
                            group="optimization")  # fmt: skip
    weight_decay: float = setting(0.04, "AdamW weight decay, not on biases and 1-D parameters", result=True,
                                  group="optimization")  # fmt: skip
    ema: tuple[float, ...] = setting((0.99925,), "EMA momentum, or START END for a linear ramp", result=True, metavar="M",
                                     group="optimization")  # fmt: skip
    grad_clip: float | None = setting(None, "clip the gradient norm (default: off, as V-JEPA 2)", result=True,
                                      group="optimization")  # fmt: skip
    output_dir: str | None = setting("outputs/ssl_anneal", "the run's folder", group="outputs")
    checkpoint_every: int = setting(100, "steps between checkpoints (0: only at the end)", group="outputs")
    demo: bool = setting(False, flag=False)
    global_batch_size: int | None = setting(None, result=True, flag=False)  # batch size x processes, set by the run

    @classmethod
    def choose_preset(cls, given: dict) -> str | None:
        return "demo" if given.get("train_csv") is None and given.get("video_dir") is None else None

    def complete(self, given: set[str]) -> None:
        super().complete(given)
        if self.train_csv and self.video_dir:
            raise runs.UsageError("pass --train-csv or --video-dir, not both")
        if not self.demo and self.model in (None, "demo"):
            raise runs.UsageError("a real run needs --model (a released .pt or facebook/vjepa2-* repo, or a converted "
                                  "folder; see docs/ssl.md)")  # fmt: skip
        if self.demo and self.model != "demo":
            raise runs.UsageError("--model needs --train-csv or --video-dir (the demo trains the built-in model on "
                                  "generated videos)")  # fmt: skip
        if self.full_attention and (self.area_splits or self.area_layers):
            raise runs.UsageError("--full-attention excludes --area-splits / --area-layers")
        if self.warmup_steps is None:  # the demo trains from random init: warm up over the first 10% of steps
            self.warmup_steps = self.steps // 10
        for name in ("frames", "resolution", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise runs.UsageError(f"--{name.replace('_', '-')} must be >= 1")
        if len(self.ema) > 2 or not all(0.0 <= m <= 1.0 for m in self.ema):
            raise runs.UsageError("--ema takes one momentum or START END, each in [0, 1]")
        if not 0 <= self.warmup_steps < self.steps:
            raise runs.UsageError("--warmup-steps must be in [0, --steps)")


def load_models(s) -> sources.SSLModels:
    """The demo's seeded random init, or --model through the resolver; a source it cannot read is one line."""
    area = sources.AreaOptions(s.area_splits, s.area_layers, s.full_attention, default_splits=DEFAULT_AREA_SPLITS)
    demo = s.model == "demo"
    try:
        return sources.load_ssl_models(s.model, area=area, init_predictor="random" if demo else s.init_predictor,
                                       revision=s.revision, seed=s.seed, **(DEMO_MODEL if demo else {}))  # fmt: skip
    except sources.SourceError as error:
        raise runs.UsageError(f"--model {error}") from None


def main(argv=None) -> int:
    s = AnnealSettings.parse(argv, __doc__)
    run = runs.Run(s, script="ssl_anneal", outputs=("checkpoints", "logs", MODEL_DIR, "results.json"), prefix="step_",
                   state_file="anneal_state.json", digits=6)  # fmt: skip
    accelerator, device, world, out = run.accelerator, run.device, run.world, run.out
    s.global_batch_size = s.batch_size * world

    # ---- inputs first: a typo must fail before an output dir is touched ----------------------------
    demo_val_csv = None
    if s.demo:
        with accelerator.main_process_first():
            demo = make_synthetic_video_dataset(s.demo_data_root, **DEMO_VIDEOS)
        s.train_csv, demo_val_csv = str(demo.train_manifest), str(demo.val_manifest)
    try:
        dataset = PretrainingClipDataset(
            s.train_csv or s.video_dir, frames_per_clip=s.frames, fps=s.fps, frame_step=s.frame_step,
            crop_size=s.resolution, min_frames=s.min_frames, seed=s.seed, backend=s.video_backend,
        )  # fmt: skip
    except (OSError, ValueError) as error:
        raise runs.UsageError(f"{'--train-csv' if s.train_csv else '--video-dir'}: {error}") from None
    run.check_output_dir()
    with accelerator.main_process_first():
        encoder, target_encoder, predictor = load_models(s)
    run.start_output_dir()
    config = encoder.config
    grid = anneal.token_grid(config, s.frames, s.resolution)
    masks = MultiBlockMaskCollator(grid, RELEASED_MASK_CONFIGS, seed=s.seed)
    collate = anneal.GlobalBatchMasks(masks, s.batch_size, accelerator.process_index, world)

    # ---- model, optimizer, state -------------------------------------------------------------------
    set_seed(s.seed)
    model = ssl.JEPA(encoder, predictor)  # one module: DDP (and FSDP) reduce the gradients of one forward per step
    model.set_grad_checkpointing(s.activation_checkpointing)
    optimizer = ssl.make_optimizer(model, s.lr, s.weight_decay)
    model, optimizer, target_state = anneal.prepare(accelerator, model, optimizer, target_encoder)
    state = run.resume() or dict(step=0, history=anneal.new_history(), skipped={})
    history, skipped = state["history"], runs.SkippedFiles(accelerator, state["skipped"])
    run.init_trackers()
    try:
        sampler = StepBatchSampler(len(dataset), s.batch_size, rank=accelerator.process_index, num_replicas=world,
                                   seed=s.seed, start_step=state["step"], stop_step=s.steps)  # fmt: skip
    except ValueError as error:
        raise runs.UsageError(str(error)) from None
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=run.num_workers,
                        pin_memory=device.type == "cuda")  # fmt: skip
    accelerator.print(
        f"anneal: {s.model} ({config.embed_dim} wide, {config.depth} blocks, area {config.area_splits} in "
        f"{config.area_layers}), predictor {config.predictor_depth} x {config.predictor_embed_dim}; {len(dataset)} videos, "
        f"{s.frames} frames, {s.resolution} px, grid {grid}; {world} process(es), global batch {s.global_batch_size}; "
        f"{s.steps} steps, lr {s.lr:g} -> {s.final_lr:g} ({s.schedule}), EMA {list(s.ema)}, wd {s.weight_decay:g}, "
        f"{run.mixed_precision} precision"
    )

    # ---- steps -------------------------------------------------------------------------------------
    bar = run.progress(s.steps, state["step"], desc="anneal")
    model.train()
    try:
        for batch in loader:
            step, tic = state["step"], time.perf_counter()
            lr = ssl.learning_rate(step, s.steps, s.lr, s.final_lr, s.warmup_steps, decay=s.schedule)
            momentum = ssl.ema_momentum(step, s.steps, (s.ema[0], s.ema[-1]))
            for group in optimizer.param_groups:
                group["lr"] = lr
            clips = normalize(batch["clips"].to(device, non_blocking=True).transpose(1, 2)).transpose(1, 2)
            masks_context = [m.to(device, non_blocking=True) for m in batch["masks_context"]]
            masks_target = [m.to(device, non_blocking=True) for m in batch["masks_target"]]
            with accelerator.autocast():
                targets = ssl.target_tokens(target_encoder, clips)
                loss, per_config = model(clips, masks_context, masks_target, targets)
            accelerator.backward(loss)
            if s.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), s.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ssl.ema_update(target_encoder, encoder, momentum)

            per_mask = accelerator.reduce(torch.stack(per_config).detach(), reduction="mean").float().tolist()
            state["step"] = step = step + 1
            anneal.record_step(history, per_mask, lr, momentum, time.perf_counter() - tic)
            skipped.add(batch["skipped"])
            state["skipped"] = skipped.counts
            run.log(anneal.step_logs(history, masks_context, grid, len(skipped)), step=step)
            bar.update(1)
            bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", lr=f"{lr:.2e}")
            if step == s.steps or (s.checkpoint_every and step % s.checkpoint_every == 0):
                run.save_checkpoint(step, state)
    except NoUsableVideoError as error:
        raise runs.UsageError(str(error).strip().splitlines()[-1]) from None
    bar.close()

    # ---- outputs -----------------------------------------------------------------------------------
    results = anneal.build_results(s.to_config(), history, skipped.summary(), world, run.elapsed)
    target_weights, trained = target_state.state_dict(), accelerator.get_state_dict(model)  # every process: gathers shards
    if run.is_main:
        anneal.save_model_folder(out / MODEL_DIR, config, target_weights, trained, results)
        hint = anneal.probe_command(out / MODEL_DIR, s.train_csv, demo_val_csv=demo_val_csv, output_dir=s.output_dir)
        print(
            f"\nloss {results['loss_first_10pct']:.4f} (first 10% of steps) -> {results['loss_last_10pct']:.4f} "
            f"(last 10%); {len(skipped)} video(s) skipped; {run.elapsed:.0f} s.\n"
            f"Annealed target encoder + predictor: {out / MODEL_DIR}\nProbe it: {hint}"
        )
    run.finish(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.main(main))
