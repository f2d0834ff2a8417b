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

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import torch

try:
    import hf_vjepa_area  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration, gather_object, set_seed
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hf_vjepa_area import VJEPA2AreaModel, runs, sources, ssl
from hf_vjepa_area._cli import run_main
from hf_vjepa_area.data import PretrainingClipDataset, make_synthetic_video_dataset, normalize
from hf_vjepa_area.data.masks import RELEASED_MASK_CONFIGS, MultiBlockMaskCollator
from hf_vjepa_area.data.pretraining import NoUsableVideoError, StepBatchSampler, split_skipped
from hf_vjepa_area.data.synthetic import DEMO_VIDEOS, demo_data_root
from hf_vjepa_area.hub import save_repo_folder
from hf_vjepa_area.modeling.configuration_vjepa2_area import DEFAULT_AREA_SPLITS
from hf_vjepa_area.modeling.predictor_vjepa2_area import PREDICTOR_WEIGHTS_NAME

logger = logging.getLogger("ssl_anneal")

STATE_FILE = "anneal_state.json"
CHECKPOINT_PREFIX = "step_"
MODEL_DIR = "model"
# What a run writes in its output dir: --overwrite removes these and nothing else.
RUN_FOLDER = dict(script="ssl_anneal", outputs=("checkpoints", "logs", MODEL_DIR, "results.json"))

# The ST-A² report's anneal (V-JEPA 2's cooldown recipe, `is_anneal`): the defaults of a real run.
ANNEAL_DEFAULTS = dict(
    frames=16, fps=4, resolution=256, batch_size=4, steps=800, lr=5.25e-4, final_lr=1e-6, warmup_steps=0,
    weight_decay=0.04, ema=[0.99925], checkpoint_every=100, num_workers=None, output_dir="outputs/ssl_anneal",
)  # fmt: skip
# The no-argument demo: a small encoder + predictor, random init, on the probe demo's generated videos.
DEMO_DEFAULTS = dict(
    frames=8, fps=4, resolution=64, batch_size=8, steps=300, lr=1e-3, final_lr=1e-6, warmup_steps=None,  # steps // 10
    weight_decay=0.04, ema=[0.996, 1.0], checkpoint_every=100, num_workers=0, output_dir="outputs/demo_ssl",
)  # fmt: skip
# The demo model: the probe demo's encoder (sources.DEMO_ENCODER_CONFIG) at patch 8, so that 64 px clips give
# an 8 x 8 grid in which V-JEPA 2's mask blocks (15% and 70% of the frame) leave context, with a 2-block predictor.
DEMO_MODEL = dict(patch_size=8, predictor_embed_dim=48, predictor_depth=2, predictor_num_heads=4, predictor_num_mask_tokens=2)

# Arguments that change the numbers a run produces: a resumed run must match them.
RESULT_KEYS = (
    "model", "init_predictor", "area_splits", "area_layers", "full_attention", "train_csv", "video_dir", "frames",
    "fps", "frame_step", "resolution", "min_frames", "batch_size", "global_batch_size", "steps", "lr", "final_lr",
    "warmup_steps", "schedule", "weight_decay", "ema", "grad_clip", "mixed_precision", "seed",
)  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", help="a released source (Meta's vitl.pt, facebook/vjepa2-vitl-fpc64-256 or its folder), "
                   "or one of our folders / Hub ids with predictor.safetensors (vjepa2-area-convert writes it); "
                   "'demo' (the default without data) for the built-in small model")
    g.add_argument("--revision", help="Hub revision of --model")
    g.add_argument("--init-predictor", choices=["checkpoint", "random"], default="checkpoint",
                   help="'random' trains a new predictor, for a model that comes without predictor.safetensors")
    g.add_argument("--area-splits", type=int, nargs=3, metavar=("T", "H", "W"),
                   help="area attention splits in the encoder and target encoder (default: the model's, else 2 2 1)")
    g.add_argument("--area-layers", help="blocks with area attention, e.g. 0:18 (default: the model's, or the first 75%%)")
    g.add_argument("--full-attention", action="store_true", help="anneal with full attention (a control run)")
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute encoder and predictor blocks in backward (less memory, ~30%% slower)")

    g = p.add_argument_group("data")
    g.add_argument("--train-csv", help="V-JEPA 2 manifest, 'path label' per line (labels unused)")
    g.add_argument("--video-dir", help="a folder of videos (searched recursively) instead of a manifest")
    g.add_argument("--frames", type=int, help="frames per clip (16)")
    g.add_argument("--fps", type=float, help="sampling rate: frame step = ceil(video fps) // fps (4)")
    g.add_argument("--frame-step", type=int, help="a fixed frame step instead of --fps")
    g.add_argument("--resolution", type=int, help="crop size (256)")
    g.add_argument("--min-frames", type=int, default=1, help="skip videos with fewer frames (default: pad, as V-JEPA 2)")
    g.add_argument("--num-workers", type=int, help="DataLoader workers per process (the CPUs per process, at most 8; the demo 0)")
    g.add_argument("--video-backend", default="auto", choices=["auto", "pyav", "torchcodec"])
    g.add_argument("--demo-data-root", default=demo_data_root(DEMO_VIDEOS["num_classes"], DEMO_VIDEOS["videos_per_class"]),
                   help="where the demo videos are generated (the probe demo's set)")

    g = p.add_argument_group("optimization")
    g.add_argument("--steps", type=int, help="optimizer steps (800)")
    g.add_argument("--batch-size", type=int, help="clips per process per step (4); the global batch is x processes")
    g.add_argument("--lr", type=float, help="start learning rate (5.25e-4)")
    g.add_argument("--final-lr", type=float, help="learning rate at the last step (1e-6)")
    g.add_argument("--warmup-steps", type=int, help="linear warmup from 0 (0)")
    g.add_argument("--schedule", choices=["linear", "cosine"], default="linear", help="decay after warmup (linear: the anneal)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay, not on biases and 1-D parameters (0.04)")
    g.add_argument("--ema", type=float, nargs="+", metavar="M", help="EMA momentum, or START END for a linear ramp (0.99925)")
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm (default: off, as V-JEPA 2)")
    g.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"], default="auto",
                   help="autocast (auto: bf16 on GPU, none on CPU)")
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("outputs")
    g.add_argument("--output-dir")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output dir of this script")
    g.add_argument("--resume", nargs="?", const="auto", help="'auto' (latest checkpoint in OUTPUT_DIR) or a checkpoint folder")
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (100; 0: only at the end)")
    g.add_argument("--keep-checkpoints", type=int, default=1, help="newest checkpoints to keep (0: all)")
    g.add_argument("--report-to", default="auto", help="accelerate tracker: auto (tensorboard if installed), none, tensorboard, wandb, ...")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    args.demo = args.train_csv is None and args.video_dir is None
    if args.train_csv and args.video_dir:
        p.error("pass --train-csv or --video-dir, not both")
    if not args.demo and args.model in (None, "demo"):
        p.error("a real run needs --model (a released .pt or facebook/vjepa2-* repo, or a converted folder; see docs/ssl.md)")
    if args.demo and args.model not in (None, "demo"):
        p.error("--model needs --train-csv or --video-dir (the demo trains the built-in model on generated videos)")
    args.model = args.model or "demo"
    if args.resume and args.overwrite:
        p.error("--resume and --overwrite exclude each other")
    if args.full_attention and (args.area_splits or args.area_layers):
        p.error("--full-attention excludes --area-splits / --area-layers")
    for key, value in (DEMO_DEFAULTS if args.demo else ANNEAL_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.warmup_steps is None:  # the demo trains from random init: warm up over the first 10% of steps
        args.warmup_steps = args.steps // 10
    if args.num_workers is None:
        args.num_workers = runs.default_num_workers()
    for name in ("frames", "resolution", "batch_size", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if len(args.ema) > 2 or not all(0.0 <= m <= 1.0 for m in args.ema):
        p.error("--ema takes one momentum or START END, each in [0, 1]")
    if args.warmup_steps < 0 or args.warmup_steps >= args.steps:
        p.error("--warmup-steps must be in [0, --steps)")
    return args


def run_config(args) -> dict:
    config = dict(vars(args))
    for key in ("train_csv", "video_dir"):
        if config[key]:
            config[key] = str(Path(config[key]).resolve())
    return config


def load_models(args) -> sources.SSLModels:
    """The demo's seeded random init, or --model through the resolver; a source it cannot read is one line."""
    area = sources.AreaOptions(args.area_splits, args.area_layers, args.full_attention, default_splits=DEFAULT_AREA_SPLITS)
    demo = args.model == "demo"
    try:
        return sources.load_ssl_models(args.model, area=area, init_predictor="random" if demo else args.init_predictor,
                                       revision=args.revision, seed=args.seed, **(DEMO_MODEL if demo else {}))  # fmt: skip
    except sources.SourceError as error:
        raise SystemExit(f"error: --model {error}") from None


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    out = Path(args.output_dir)
    report_to = runs.resolve_report_to(args.report_to)
    mixed_precision = args.mixed_precision
    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() else "no"
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("ssl_anneal", "hf_vjepa_area"):
        logging.getLogger(name).setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
    device, world = accelerator.device, accelerator.num_processes
    args.global_batch_size = args.batch_size * world

    # ---- inputs first: a typo must fail before an output dir is touched ----------------------------
    if args.demo:
        with accelerator.main_process_first():
            demo = make_synthetic_video_dataset(args.demo_data_root, **DEMO_VIDEOS)
        args.train_csv = str(demo.train_manifest)
    demo_val_csv = str(demo.val_manifest) if args.demo else None
    source = args.train_csv or args.video_dir
    try:
        dataset = PretrainingClipDataset(
            source, frames_per_clip=args.frames, fps=args.fps, frame_step=args.frame_step, crop_size=args.resolution,
            min_frames=args.min_frames, seed=args.seed, backend=args.video_backend,
        )  # fmt: skip
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {'--train-csv' if args.train_csv else '--video-dir'}: {error}") from None
    checkpoint = runs.check_output_dir(args.output_dir, resume=args.resume, overwrite=args.overwrite, config=run_config(args),
                                       compared_keys=RESULT_KEYS, **RUN_FOLDER, prefix=CHECKPOINT_PREFIX,
                                       state_file=STATE_FILE)  # fmt: skip
    with accelerator.main_process_first():
        encoder, target_encoder, predictor = load_models(args)
    runs.start_output_dir(args.output_dir, accelerator, overwrite=args.overwrite and not args.resume, config=run_config(args),
                          **RUN_FOLDER)

    config = encoder.config
    grid = token_grid(config, args.frames, args.resolution)
    collate = GlobalBatchMasks(MultiBlockMaskCollator(grid, RELEASED_MASK_CONFIGS, seed=args.seed), args.batch_size,
                               accelerator.process_index, world)  # fmt: skip

    # ---- optimizer, schedules ----------------------------------------------------------------------
    set_seed(args.seed)
    # Encoder + predictor as one module: DDP (and FSDP) reduce the gradients of one forward per step.
    model = ssl.JEPA(encoder, predictor)
    if args.activation_checkpointing:
        model.set_grad_checkpointing(True)
    optimizer = ssl.make_optimizer(model, args.lr, args.weight_decay)
    if accelerator.distributed_type == DistributedType.FSDP and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise SystemExit("error: FSDP needs fsdp_version: 2 in the accelerate config (the EMA update works on per-parameter "
                         "shards, which FSDP 1's flat parameters do not expose)")
    model, optimizer = accelerator.prepare(model, optimizer)
    target_encoder.to(device)
    if accelerator.distributed_type == DistributedType.FSDP:
        shard_like(target_encoder, model)
    target_state = FullState(target_encoder)
    accelerator.register_for_checkpointing(target_state)

    state = dict(step=0, history=dict(loss=[], loss_per_mask=[], lr=[], momentum=[], step_s=[]), skipped={}, elapsed_s=0.0)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = runs.read_checkpoint_state(checkpoint, STATE_FILE)
        started -= state["elapsed_s"]
        accelerator.print(f"resumed from {checkpoint} (step {state['step']} of {args.steps})")
    if report_to:
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in run_config(args).items()}
        accelerator.init_trackers("ssl_anneal", config=hparams)

    try:
        sampler = StepBatchSampler(len(dataset), args.batch_size, rank=accelerator.process_index, num_replicas=world,
                                   seed=args.seed, start_step=state["step"], stop_step=args.steps)  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=args.num_workers,
                        pin_memory=device.type == "cuda")  # fmt: skip
    accelerator.print(
        f"anneal: {args.model} ({config.embed_dim} wide, {config.depth} blocks, area {config.area_splits} in "
        f"{config.area_layers}), predictor {config.predictor_depth} x {config.predictor_embed_dim}; {len(dataset)} videos, "
        f"{args.frames} frames, {args.resolution} px, grid {grid}; {world} process(es), global batch "
        f"{args.global_batch_size}; {args.steps} steps, lr {args.lr:g} -> {args.final_lr:g} ({args.schedule}), "
        f"EMA {args.ema}, wd {args.weight_decay:g}, {mixed_precision} precision"
    )

    # ---- steps -------------------------------------------------------------------------------------
    bar = tqdm(total=args.steps, initial=state["step"], disable=not accelerator.is_main_process or args.no_progress,
               desc="anneal", dynamic_ncols=True)  # fmt: skip
    model.train()
    history = state["history"]
    try:
        for batch in loader:
            step = state["step"]
            tic = time.perf_counter()
            lr = ssl.learning_rate(step, args.steps, args.lr, args.final_lr, args.warmup_steps, decay=args.schedule)
            momentum = ssl.ema_momentum(step, args.steps, (args.ema[0], args.ema[-1]))
            for group in optimizer.param_groups:
                group["lr"] = lr
            clips = normalize(batch["clips"].to(device, non_blocking=True).transpose(1, 2)).transpose(1, 2)
            masks_context = [m.to(device, non_blocking=True) for m in batch["masks_context"]]
            masks_target = [m.to(device, non_blocking=True) for m in batch["masks_target"]]
            with accelerator.autocast():
                targets = ssl.target_tokens(target_encoder, clips)
                loss, per_config = model(clips, masks_context, masks_target, targets)
            accelerator.backward(loss)
            if args.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ssl.ema_update(target_encoder, encoder, momentum)

            per_mask = accelerator.reduce(torch.stack(per_config).detach(), reduction="mean").float().tolist()
            state["step"] = step = step + 1
            history["loss"].append(sum(per_mask) / len(per_mask))
            history["loss_per_mask"].append(per_mask)
            history["lr"].append(lr)
            history["momentum"].append(momentum)
            history["step_s"].append(time.perf_counter() - tic)
            for path in gather_object(batch["skipped"]) if world > 1 else batch["skipped"]:
                state["skipped"][path] = state["skipped"].get(path, 0) + 1
            if report_to:
                visible = [m.shape[1] / math.prod(grid) for m in masks_context]
                logs = {"loss": history["loss"][-1], "lr": lr, "momentum": momentum, "step_time_s": history["step_s"][-1]}
                logs.update({f"loss/mask_{i}": v for i, v in enumerate(per_mask)})
                logs.update({f"visible_ratio/mask_{i}": v for i, v in enumerate(visible)})
                logs["skipped_videos"] = len(state["skipped"])
                accelerator.log(logs, step=step)
            bar.update(1)
            bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", lr=f"{lr:.2e}")
            if step == args.steps or (args.checkpoint_every and step % args.checkpoint_every == 0):
                state["elapsed_s"] = time.time() - started
                state["config"] = run_config(args)
                state["num_processes"] = world
                runs.save_checkpoint(accelerator, out / "checkpoints", step, state, keep=args.keep_checkpoints,
                                     prefix=CHECKPOINT_PREFIX, digits=6, state_file=STATE_FILE)  # fmt: skip
    except NoUsableVideoError as error:
        raise SystemExit(f"error: {str(error).strip().splitlines()[-1]}") from None
    bar.close()

    # ---- outputs -----------------------------------------------------------------------------------
    results = build_results(args, history, state, world, time.time() - started)
    target_weights, trained = target_state.state_dict(), accelerator.get_state_dict(model)  # every process: gathers shards
    if accelerator.is_main_process:
        target = VJEPA2AreaModel(config)
        target.load_state_dict(target_weights)
        predictor_weights = {k.removeprefix("predictor."): v for k, v in trained.items() if k.startswith("predictor.")}
        save_model_folder(out / MODEL_DIR, target, predictor_weights, results)
        runs.write_json(out / "results.json", results)
        print(
            f"\nloss {results['loss_first_10pct']:.4f} (first 10% of steps) -> {results['loss_last_10pct']:.4f} "
            f"(last 10%); {results['skipped_videos']['count']} video(s) skipped; {time.time() - started:.0f} s.\n"
            f"Annealed target encoder + predictor: {out / MODEL_DIR}\n"
            f"Probe it: {probe_command(args, out / MODEL_DIR, demo_val_csv)}"
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


def probe_command(args, model_dir: Path, demo_val_csv: str | None) -> str:
    """The probe of the encoder just annealed, on the data it used. The demo's: the probe demo's small
    settings (`--preset demo`: its frames, 64 px, cached features) on the demo's own train/val manifests,
    minutes on CPU (the default K400 preset would take days per epoch there), into a folder beside the
    anneal's (inside it, it would be a file the anneal did not write). A real run's: its manifest
    ('path label' lines) trains the probe; the val manifest and the preset are the user's."""
    command = f"accelerate launch examples/k400_probe.py --model {model_dir}"
    if args.demo:
        return (f"{command} --preset demo --train-csv {args.train_csv} --val-csv {demo_val_csv} "
                f"--output-dir {args.output_dir}_probe")  # fmt: skip
    train = args.train_csv or "TRAIN_MANIFEST"
    return f"{command} --train-csv {train} --val-csv VAL_MANIFEST --preset k400 (or ssv2, diving48, jester, coin: docs/probe.md)"


def token_grid(config, frames: int, resolution: int) -> tuple[int, int, int]:
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


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in state.items()}, metadata={"format": "pt"})


def build_results(args, history: dict, state: dict, world: int, seconds: float) -> dict:
    losses = history["loss"]
    tenth = max(1, len(losses) // 10)
    return dict(
        task="V-JEPA 2 self-supervised anneal",
        config=run_config(args),
        num_processes=world,
        global_batch_size=args.global_batch_size,
        steps=len(losses),
        loss_first_10pct=sum(losses[:tenth]) / tenth,
        loss_last_10pct=sum(losses[-tenth:]) / tenth,
        history=history,
        skipped_videos=dict(count=len(state["skipped"]), paths=sorted(state["skipped"])),
        wall_time_s=round(seconds, 1),
    )


def save_model_folder(folder: Path, target_encoder, predictor_weights: dict, results: dict) -> None:
    """The annealed target encoder as a Hub repo folder (transformers + timm + remote code) with the predictor."""
    card = (
        f"# V-JEPA 2 encoder, self-supervised anneal\n\nAnnealed from `{results['config']['model']}` for "
        f"{results['steps']} steps (global batch {results['global_batch_size']}) with `examples/ssl_anneal.py`; "
        f"loss {results['loss_first_10pct']:.4f} -> {results['loss_last_10pct']:.4f}. The encoder is the EMA "
        "target encoder; `predictor.safetensors` holds V-JEPA 2's predictor in Meta's key names.\n"
    )
    save_repo_folder(target_encoder, folder, model_card=card, overwrite=True,
                     extra_files={PREDICTOR_WEIGHTS_NAME: safetensors_bytes(predictor_weights),
                                  "anneal_results.json": runs.to_json(results)})  # fmt: skip


if __name__ == "__main__":
    run_main(main)
