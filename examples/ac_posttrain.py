#!/usr/bin/env python
"""V-JEPA 2-AC post-training: train the action-conditioned predictor on robot trajectories, with accelerate.

    # Built-in demo: a small random-init world model on generated trajectories (a square that moves as its
    # state does); a few minutes on CPU. Writes outputs/demo_ac_posttrain/.
    accelerate launch examples/ac_posttrain.py

    # Meta's DROID recipe (configs/train/vitg16/droid-256px-8f.yaml) from the released ViT-g encoder with a
    # new predictor (width 1024, 24 blocks, 16 heads), or continuing from the released world model:
    accelerate launch examples/ac_posttrain.py --model vitg.pt --data my_trajectories/
    accelerate launch examples/ac_posttrain.py --model vjepa2-ac-vitg.pt --data my_trajectories/

--data is a folder of trajectories, one subfolder each: video.mp4 and states.npy (float [num_video_frames, 7]:
x y z, roll pitch yaw, gripper, one row per frame), optionally extrinsics.npy ([num_video_frames, 6], with
--use-extrinsics for a new predictor); see hf_vjepa_area/ac/data.py. Defaults are the recipe's
(hf_vjepa_area.ac.posttrain.DroidRecipe): 8 frames at 4 fps, 256 px, batch 4 per process, teacher forcing +
2 rollout steps, AdamW lr 7.5e-5 -> 4.25e-4 -> 0 (warmup-stable-decay, 15/315 of the steps each way), wd 0.04,
315 x 300 steps, bf16 on GPU, activation checkpointing. Only the predictor trains; the encoder is frozen.
Checkpoints every --checkpoint-every steps are atomic; --resume continues to the uninterrupted run's losses.
The trained world model lands in OUTPUT_DIR/model (load it with hf_vjepa_area.ac.load_world_model; plan
with examples/ac_plan.py --model OUTPUT_DIR/model). docs/ac.md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

try:
    import hf_vjepa_area  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from safetensors.torch import save
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hf_vjepa_area import runs, sources, ssl
from hf_vjepa_area.ac import WorldModel, load_world_model
from hf_vjepa_area.ac.data import StepSampler, TrajectoryClips, write_synthetic_trajectories
from hf_vjepa_area.ac.demo import DEMO_SIZE, demo_world_model
from hf_vjepa_area.ac.posttrain import DroidRecipe, ac_loss, target_latents, wsd_learning_rate
from hf_vjepa_area.conversion import ConversionError
from hf_vjepa_area.conversion.load import CONVERT_FIRST
from hf_vjepa_area.checkpoint_keys import is_ac_predictor, original_parts, safe_torch_load
from hf_vjepa_area.data import normalize
from hf_vjepa_area.hub import save_repo_folder
from hf_vjepa_area.modeling.ac_predictor_vjepa2_area import (
    AC_PREDICTOR_CONFIG_KEY,
    AC_PREDICTOR_WEIGHTS_NAME,
    VJEPA2ACPredictor,
    VJEPA2ACPredictorConfig,
)

RECIPE = DroidRecipe()
STATE_FILE, CHECKPOINT_PREFIX, MODEL_DIR = "posttrain_state.json", "step_", "model"
# What a run writes in its output dir: --overwrite removes these and nothing else.
RUN_FOLDER = dict(script="ac_posttrain", outputs=("checkpoints", "logs", MODEL_DIR, "results.json"))
DEMO = dict(steps=40, checkpoint_every=10, data="outputs/demo_ac_trajectories", output_dir="outputs/demo_ac_posttrain")
# Settings a resumed run must share with its checkpoint.
RESUME_KEYS = ("model", "data", "frames", "fps", "crop_size", "batch_size", "global_batch_size", "steps", "warmup_steps",
               "anneal_steps", "lr", "start_lr", "final_lr", "weight_decay", "auto_steps", "loss_exp", "use_extrinsics",
               "mixed_precision", "seed", "predictor_width", "predictor_depth", "predictor_heads")  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an encoder (vitg.pt, a facebook/vjepa2-* folder or one of ours: new predictor), or "
                   "vjepa2-ac-vitg.pt / a converted or trained AC folder (default: the demo model)")
    p.add_argument("--use-extrinsics", action="store_true", help="a new predictor with a camera-extrinsics token per frame")
    released = VJEPA2ACPredictorConfig()
    p.add_argument("--predictor-width", type=int, default=released.predictor_embed_dim, help="a new predictor's width (released: %(default)s)")
    p.add_argument("--predictor-depth", type=int, default=released.depth, help="a new predictor's blocks (released: %(default)s)")
    p.add_argument("--predictor-heads", type=int, help=f"the predictor's heads: a new one's (default {released.num_heads}, as "
                   "released), or those of a loaded AC .pt of an unreleased width")
    p.add_argument("--data", help="trajectory folder (default with the demo: generated trajectories)")
    p.add_argument("--output-dir", help="default outputs/ac_posttrain (demo: outputs/demo_ac_posttrain)")
    p.add_argument("--frames", type=int, default=RECIPE.frames)
    p.add_argument("--fps", type=float, default=RECIPE.fps)
    p.add_argument("--crop-size", type=int, help=f"default {RECIPE.crop_size} (the demo model's {DEMO_SIZE})")
    p.add_argument("--batch-size", type=int, default=RECIPE.batch_size, help="per process")
    p.add_argument("--steps", type=int, help=f"default {RECIPE.epochs} x {RECIPE.iterations_per_epoch} (demo {DEMO['steps']})")
    p.add_argument("--warmup-steps", type=int, help="default 15/315 of --steps")
    p.add_argument("--anneal-steps", type=int, help="linear decay to --final-lr over the last N steps (default 15/315)")
    p.add_argument("--lr", type=float, default=RECIPE.lr)
    p.add_argument("--start-lr", type=float, default=RECIPE.start_lr)
    p.add_argument("--final-lr", type=float, default=RECIPE.final_lr)
    p.add_argument("--weight-decay", type=float, default=RECIPE.weight_decay)
    p.add_argument("--auto-steps", type=int, default=RECIPE.auto_steps, help="rollout steps of the loss")
    p.add_argument("--loss-exp", type=float, default=RECIPE.loss_exp)
    p.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "bf16", "fp16"), help="auto: bf16 on a GPU that has it, else no")
    p.add_argument("--no-activation-checkpointing", action="store_true")
    p.add_argument("--checkpoint-every", type=int, help=f"default {RECIPE.iterations_per_epoch} (one recipe epoch; demo {DEMO['checkpoint_every']})")
    p.add_argument("--keep-checkpoints", type=int, default=1)
    p.add_argument("--resume", nargs="?", const="auto", help="continue from the newest checkpoint (or this one)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output-dir")
    p.add_argument("--seed", type=int, default=RECIPE.seed)
    p.add_argument("--num-workers", type=int, default=runs.default_num_workers())
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    demo = args.model is None
    args.data = args.data or (DEMO["data"] if demo else None)
    if args.data is None:
        p.error("--data: a trajectory folder is needed with --model")
    args.output_dir = args.output_dir or (DEMO["output_dir"] if demo else "outputs/ac_posttrain")
    args.crop_size = args.crop_size or (DEMO_SIZE if demo else RECIPE.crop_size)
    args.steps = args.steps or (DEMO["steps"] if demo else RECIPE.epochs * RECIPE.iterations_per_epoch)
    share = RECIPE.warmup_epochs / RECIPE.epochs
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else round(args.steps * share)
    args.anneal_steps = args.anneal_steps if args.anneal_steps is not None else round(args.steps * RECIPE.anneal_epochs / RECIPE.epochs)
    args.checkpoint_every = args.checkpoint_every or (DEMO["checkpoint_every"] if demo else RECIPE.iterations_per_epoch)
    args.demo = demo
    return args


def run_config(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("resume", "overwrite", "num_workers", "no_progress")}


def load_models(args) -> WorldModel:
    """The demo's, a world model (AC `.pt` or folder), or an encoder `.pt`/folder with a new predictor."""
    if args.demo:
        return demo_world_model(args.seed)
    path = Path(args.model).expanduser()
    has_ac = is_ac_predictor(original_parts(safe_torch_load(path)).get("predictor", {})) if path.is_file() else (path / AC_PREDICTOR_WEIGHTS_NAME).is_file()
    if has_ac:
        options = {"predictor_heads": args.predictor_heads} if args.predictor_heads else {}
        model = load_world_model(path, **options)
        if args.use_extrinsics and not model.predictor.config.use_extrinsics:
            raise ConversionError("--use-extrinsics: only for a new predictor (this one was trained without)")
        return model
    encoder = sources.load_encoder(args.model)
    config = VJEPA2ACPredictorConfig(embed_dim=encoder.config.embed_dim, predictor_embed_dim=args.predictor_width,
                                     depth=args.predictor_depth, num_heads=args.predictor_heads or VJEPA2ACPredictorConfig().num_heads, img_size=list(encoder.config.img_size),
                                     patch_size=encoder.config.patch_size, use_extrinsics=args.use_extrinsics)  # fmt: skip
    torch.manual_seed(args.seed)
    return WorldModel(encoder, VJEPA2ACPredictor(config))


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    out = Path(args.output_dir)
    mixed_precision = runs.resolve_mixed_precision(args.mixed_precision)
    args.mixed_precision = mixed_precision
    accelerator = Accelerator(mixed_precision=mixed_precision, project_config=ProjectConfiguration(project_dir=str(out)))
    device, world = accelerator.device, accelerator.num_processes
    args.global_batch_size = args.batch_size * world

    # ---- inputs first: a typo must fail before an output dir is touched ----------------------------
    if args.demo and args.data == DEMO["data"]:
        with accelerator.main_process_first():
            write_synthetic_trajectories(args.data, size=DEMO_SIZE)
    try:
        dataset = TrajectoryClips(args.data, args.frames, args.fps, args.crop_size, RECIPE.crop_scale, RECIPE.crop_ratio,
                                  seed=args.seed, extrinsics=args.use_extrinsics)  # fmt: skip
        with accelerator.main_process_first():
            world_model = load_models(args)
    except sources.SourceError as error:
        raise SystemExit(f"error: --model {error}") from None
    except ConversionError as error:
        raise SystemExit(f"error: --model {args.model}: {' '.join(str(error).split())}; {CONVERT_FIRST}") from None
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {' '.join(str(error).split())}") from None
    checkpoint = runs.check_output_dir(out, resume=args.resume, overwrite=args.overwrite, config=run_config(args),
                                       compared_keys=RESUME_KEYS, **RUN_FOLDER, prefix=CHECKPOINT_PREFIX, state_file=STATE_FILE)  # fmt: skip
    runs.start_output_dir(out, accelerator, overwrite=args.overwrite and not args.resume, config=run_config(args), **RUN_FOLDER)

    # ---- models, optimizer -------------------------------------------------------------------------
    set_seed(args.seed)
    encoder, predictor = world_model.encoder.to(device).eval(), world_model.predictor
    encoder.requires_grad_(False)
    predictor.train()
    if not predictor.config.use_extrinsics:  # no gradient ever reaches it (Meta's DDP needs find_unused_parameters)
        predictor.extrinsics_encoder.requires_grad_(False)
    if not args.no_activation_checkpointing:
        predictor.set_grad_checkpointing(True)
    optimizer = ssl.make_optimizer(predictor, args.lr, args.weight_decay, RECIPE.betas, RECIPE.eps)
    trained, optimizer = accelerator.prepare(predictor, optimizer)
    state = dict(step=0, history=dict(loss=[], teacher_forcing=[], rollout=[], lr=[], step_s=[]), elapsed_s=0.0)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = runs.read_checkpoint_state(checkpoint, STATE_FILE)
        started -= state["elapsed_s"]
        accelerator.print(f"resumed from {checkpoint} (step {state['step']} of {args.steps})")
    sampler = StepSampler(state["step"], args.steps, args.batch_size, accelerator.process_index, world)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers, pin_memory=device.type == "cuda")
    config = predictor.config
    accelerator.print(
        f"post-training: {args.model or 'demo (random init)'}; predictor {config.depth} x {config.predictor_embed_dim} "
        f"({config.num_heads} heads); {len(dataset)} trajectories, {args.frames} frames at {args.fps:g} fps, "
        f"{args.crop_size} px; {world} process(es), global batch {args.global_batch_size}; {args.steps} steps, lr "
        f"{args.start_lr:g} -> {args.lr:g} -> {args.final_lr:g} (warmup {args.warmup_steps}, decay {args.anneal_steps}), "
        f"auto_steps {args.auto_steps}, {mixed_precision} precision"
    )

    # ---- steps -------------------------------------------------------------------------------------
    bar = tqdm(total=args.steps, initial=state["step"], disable=not accelerator.is_main_process or args.no_progress, desc="post-train")
    history = state["history"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for batch in loader:
        step = state["step"]
        tic = time.perf_counter()
        lr = wsd_learning_rate(step, args.steps, args.lr, args.start_lr, args.warmup_steps, args.anneal_steps, args.final_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        clips = normalize(batch["clip"].to(device, non_blocking=True), channel_dim=1)
        actions, states = batch["actions"].to(device), batch["states"].to(device)
        extrinsics = batch["extrinsics"].to(device) if "extrinsics" in batch else None
        with accelerator.autocast():
            latents = target_latents(world_model, clips)
            losses = ac_loss(trained, latents, actions, states, extrinsics, args.auto_steps, args.loss_exp)
        accelerator.backward(losses.loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        values = accelerator.reduce(torch.stack([l.detach().float() for l in losses]), reduction="mean").tolist()
        state["step"] = step = step + 1
        for name, value in zip(("loss", "teacher_forcing", "rollout"), values):
            history[name].append(value)
        history["lr"].append(lr)
        history["step_s"].append(time.perf_counter() - tic)
        bar.update(1)
        bar.set_postfix(loss=f"{values[0]:.4f}", lr=f"{lr:.2e}")
        if step == args.steps or step % args.checkpoint_every == 0:
            state.update(elapsed_s=time.time() - started, config=run_config(args), num_processes=world)
            runs.save_checkpoint(accelerator, out / "checkpoints", step, state, keep=args.keep_checkpoints,
                                 prefix=CHECKPOINT_PREFIX, digits=6, state_file=STATE_FILE)  # fmt: skip
    bar.close()

    # ---- outputs -----------------------------------------------------------------------------------
    results = build_results(args, history, world, time.time() - started, device)
    weights = accelerator.get_state_dict(trained)
    if accelerator.is_main_process:
        save_world_model(out / MODEL_DIR, encoder, config, weights, results)
        runs.write_json(out / "results.json", results)
        print(f"\nloss {results['loss_first_10pct']:.4f} (first 10% of steps) -> {results['loss_last_10pct']:.4f} (last 10%); "
              f"{results['median_step_s']:.3f} s/step; {results['wall_time_s']:.0f} s.\nWorld model: {out / MODEL_DIR} "
              f"(plan with: python examples/ac_plan.py --model {out / MODEL_DIR} --context ... --goal ...)")  # fmt: skip
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


def build_results(args, history: dict, world: int, seconds: float, device: torch.device) -> dict:
    losses, times = history["loss"], sorted(history["step_s"])
    tenth = max(1, len(losses) // 10)
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)
    return dict(
        task="V-JEPA 2-AC post-training", config=run_config(args), num_processes=world, global_batch_size=args.global_batch_size,
        steps=len(losses), loss_first_10pct=sum(losses[:tenth]) / tenth, loss_last_10pct=sum(losses[-tenth:]) / tenth,
        median_step_s=times[len(times) // 2] if times else None, peak_cuda_memory_gib=peak,
        peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, history=history, wall_time_s=round(seconds, 1),
    )  # fmt: skip


def save_world_model(folder: Path, encoder, config: VJEPA2ACPredictorConfig, weights: dict, results: dict) -> None:
    """The frozen encoder as a Hub repo folder, with the trained predictor (`ac_predictor.safetensors`, Meta's
    names; its sizes under `ac_predictor` in config.json), as `vjepa2-area-convert` writes a V-JEPA 2-AC model."""
    setattr(encoder.config, AC_PREDICTOR_CONFIG_KEY, config.hyperparameters())
    card = (f"# V-JEPA 2-AC world model\n\nPost-trained from `{results['config']['model'] or 'a random-init demo model'}` "
            f"for {results['steps']} steps with `examples/ac_posttrain.py`; loss {results['loss_first_10pct']:.4f} -> "
            f"{results['loss_last_10pct']:.4f}. Load with `hf_vjepa_area.ac.load_world_model`.\n")  # fmt: skip
    state = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    save_repo_folder(encoder, folder, model_card=card, overwrite=True,
                     extra_files={AC_PREDICTOR_WEIGHTS_NAME: save(state, metadata={"format": "pt"}),
                                  "posttrain_results.json": runs.to_json(results)})  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
