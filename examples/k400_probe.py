#!/usr/bin/env python
"""V-JEPA 2's frozen attentive probe, end to end, with accelerate.

    # Built-in demo: a small labelled video set generated locally, a small random-init ST-A² encoder,
    # 4 probe heads; under a minute on CPU. Writes outputs/demo_probe/.
    accelerate launch examples/k400_probe.py

    # The real thing: Kinetics-400 with V-JEPA 2's protocol (16 frames x step 4, 8 segments x 3 views,
    # 256 px, 4-block/16-head probes over a 5 lr x 4 wd grid, 20 epochs; training clips get random
    # resized crops, RandAugment and random erasing).
    accelerate launch examples/k400_probe.py --model hf-vjepa-area/vjepa2-vitl-st-a2 \
        --train-csv k400/train.csv --val-csv k400/val.csv

The encoder is frozen (eval, no_grad, bf16 autocast on GPU); only the probe heads train. Processes
share the data (DDP via accelerate); metrics are exact for any number of processes. Every epoch ends
with an atomic checkpoint; `--resume auto` continues a killed run to the same result. See docs/probe.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

try:
    import hf_vjepa_area  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list, gather_object, set_seed
from torch.utils.data import DataLoader

from hf_vjepa_area import probing
from hf_vjepa_area.data import EvalTransform, TrainTransform, VideoClipDataset, make_synthetic_video_dataset, read_manifest
from hf_vjepa_area._files import write_text_atomically

logger = logging.getLogger("k400_probe")

RUN_FILE = "run_config.json"

# V-JEPA 2, configs/eval/vitl/k400.yaml (and k400-area-attn.yaml): the defaults of a real run.
K400_DEFAULTS = dict(
    frames=16, frame_step=4, segments=8, views=3, resolution=256, epochs=20, batch_size=4,
    lrs=list(probing.K400_LRS), wds=list(probing.K400_WEIGHT_DECAYS), probe_depth=4, probe_heads=16,
    cache_features=False, num_workers=8, output_dir="outputs/k400_probe",
    auto_augment=True, erase_prob=0.25,  # evals/video_classification_frozen/eval.py: auto_augment=True, reprob=0.25
)  # fmt: skip
# The no-argument demo: small everything (see probing.DEMO_ENCODER_CONFIG for the encoder).
DEMO_DEFAULTS = dict(
    frames=8, frame_step=4, segments=2, views=1, resolution=64, epochs=20, batch_size=8,
    lrs=[0.003, 0.001], wds=[0.01, 0.1], probe_depth=1, probe_heads=4,
    cache_features=True, num_workers=0, output_dir="outputs/demo_probe",
    auto_augment=False, erase_prob=0.0,
)  # fmt: skip

# The demo's videos: a square drifting over 48 frames at 64 px (hf_vjepa_area.data.synthetic).
DEMO_VIDEOS = dict(frames=48, size=64)

# Arguments that change the numbers a run produces: a resumed run must match them.
RESULT_KEYS = (
    "model", "area_splits", "area_layers", "full_attention", "no_pretrained", "revision", "train_csv", "val_csv",
    "frames", "frame_step", "segments", "views", "resolution", "min_frames", "epochs", "batch_size",
    "grad_accum", "lrs", "wds", "warmup_epochs", "wd_exclude_bias_norm", "probe_depth", "probe_heads",
    "cache_features", "encoder_dtype", "mixed_precision", "seed", "demo_classes", "demo_videos_per_class",
    "auto_augment", "erase_prob",
)  # fmt: skip
# What a checkpoint written before a key existed ran with.
LEGACY_RESULT_VALUES = dict(auto_augment=False, erase_prob=0.0)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("encoder")
    g.add_argument("--model", help="transformers folder / Hub id (model_type vjepa2_area), timm name "
                   "(vjepa2_vitl_area, hf-hub:ORG/NAME), or 'demo' (built-in random-init encoder; the default "
                   "without --train-csv)")  # fmt: skip
    g.add_argument("--area-splits", type=int, nargs=3, metavar=("T", "H", "W"), help="use ST-A² with these splits")
    g.add_argument("--area-layers", help="blocks with area attention, e.g. 0:18 (default: the model's, or the first 75%%)")
    g.add_argument("--full-attention", action="store_true", help="turn area attention off (full attention everywhere)")
    g.add_argument("--revision", help="Hub revision of --model")
    g.add_argument("--no-pretrained", action="store_true", help="random init instead of the weights (debugging)")
    g.add_argument("--encoder-dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast dtype of the frozen encoder (auto: bf16 on GPU, fp32 on CPU)")  # fmt: skip
    g.add_argument("--encoder-chunk", type=int, help="at most this many clips per encoder forward")

    g = p.add_argument_group("data (V-JEPA 2 manifests: 'path label' per line)")
    g.add_argument("--train-csv")
    g.add_argument("--val-csv")
    g.add_argument("--class-names", help="class list, line i = label i (default: <train>_classes.txt or classes.txt beside the manifest)")
    g.add_argument("--frames", type=int, help="frames per clip (K400: 16)")
    g.add_argument("--frame-step", type=int, help="frame step (K400: 4)")
    g.add_argument("--segments", type=int, help="temporal segments per video (K400: 8)")
    g.add_argument("--views", type=int, help="spatial views per segment at eval (K400: 3)")
    g.add_argument("--resolution", type=int, help="crop size (K400: 256)")
    g.add_argument("--min-frames", type=int, default=1, help="skip videos with fewer frames (default 1: pad short videos, as V-JEPA 2)")
    g.add_argument("--num-workers", type=int, help="DataLoader workers per process")
    g.add_argument("--video-backend", default="auto", choices=["auto", "pyav", "torchcodec"],
                   help="auto: torchcodec for mp4/mov/mkv/webm when it decodes here (faster), else PyAV "
                        "(exact on every container; torchcodec returns other frames for B-frames in AVI/MPEG-TS)")
    g.add_argument("--demo-data-root", help="where the demo videos are generated "
                   "(default: outputs/demo_data/CLASSESxVIDEOS, e.g. outputs/demo_data/4x40)")
    g.add_argument("--demo-classes", type=int, default=4, help="demo classes (motion directions), 1-4")
    g.add_argument("--demo-videos-per-class", type=int, default=40)

    g = p.add_argument_group("probe training")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="videos per process per step (K400: 4 on each of 64 GPUs)")
    g.add_argument("--val-batch-size", type=int, help="default: --batch-size")
    g.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--lrs", type=float, nargs="+", help="learning rates of the grid")
    g.add_argument("--wds", type=float, nargs="+", help="weight decays of the grid")
    g.add_argument("--warmup-epochs", type=float, default=0.0)
    g.add_argument("--wd-exclude-bias-norm", action="store_true",
                   help="no weight decay on biases, norms and the query token (V-JEPA 2 decays all)")  # fmt: skip
    g.add_argument("--probe-depth", type=int, help="attentive probe blocks (K400: 4)")
    g.add_argument("--probe-heads", type=int, help="attention heads of the probe (K400: 16)")
    g.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction,
                   help="recompute probe activations in backward (default: on for GPU)")  # fmt: skip
    g.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="for the probe (default: accelerate config)")
    g.add_argument("--cache-features", action=argparse.BooleanOptionalAction,
                   help="encode each split once (deterministic train clips, 1 view) and train from the cache "
                   "(default: on for the demo, off otherwise)")  # fmt: skip
    g.add_argument("--feature-cache-dir", help="default: OUTPUT_DIR/features")
    g.add_argument("--auto-augment", action=argparse.BooleanOptionalAction,
                   help="RandAugment (rand-m7-n4-mstd0.5-inc1, one draw per clip) on training clips "
                   "(default: on, as V-JEPA 2's K400 eval; off for the demo; no effect with --cache-features)")
    g.add_argument("--erase-prob", type=float, help="random erasing probability of a training clip, one box through "
                   "all frames (default: 0.25, as V-JEPA 2's K400 eval; 0 for the demo; no effect with --cache-features)")
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("outputs")
    g.add_argument("--output-dir")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output dir of this script")
    g.add_argument("--resume", nargs="?", const="auto", help="'auto' (latest checkpoint in OUTPUT_DIR) or a checkpoint folder")
    g.add_argument("--keep-checkpoints", type=int, default=1, help="newest checkpoints to keep (0: all)")
    g.add_argument("--debug-kill-after-epoch", type=int, help=argparse.SUPPRESS)  # tests: SIGKILL self after that checkpoint
    g.add_argument("--report-to", default="auto", help="accelerate tracker: auto (tensorboard if installed), none, tensorboard, wandb, ...")
    g.add_argument("--save-all-heads", action="store_true", help="also write probe_heads.safetensors (every head)")
    g.add_argument("--save-classifier", help="write the best head + encoder as a VJEPA2AreaForVideoClassification repo folder")
    g.add_argument("--push-to-hub", metavar="ORG/NAME", help="push that classifier (token: HF_TOKEN or `hf auth login`)")
    g.add_argument("--hub-private", action="store_true")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    args.demo = args.train_csv is None
    if args.demo and args.val_csv:
        p.error("--val-csv needs --train-csv")
    if not args.demo and not args.val_csv:
        p.error("--train-csv needs --val-csv")
    if not args.demo and args.model is None:
        p.error("--train-csv needs --model (a Hub id, folder or timm name; 'demo' for the built-in encoder)")
    if args.model is None:
        args.model = "demo"
    if args.demo_data_root is None:  # one folder per data set: changing its size never meets the old one
        args.demo_data_root = f"outputs/demo_data/{args.demo_classes}x{args.demo_videos_per_class}"
    if args.resume and args.overwrite:
        p.error("--resume and --overwrite exclude each other")
    for key, value in (DEMO_DEFAULTS if args.demo else K400_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.val_batch_size = args.val_batch_size or args.batch_size
    for name in ("frames", "frame_step", "segments", "views", "resolution", "epochs", "batch_size", "val_batch_size",
                 "grad_accum", "probe_depth", "probe_heads"):  # fmt: skip
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 <= args.erase_prob <= 1.0:
        p.error("--erase-prob must be in [0, 1]")
    if args.push_to_hub and args.push_to_hub.count("/") != 1:
        p.error("--push-to-hub needs ORG/NAME")
    return args


def resolve_report_to(value: str) -> str | None:
    import importlib.util

    if value == "none":
        return None
    if value == "auto":
        available = importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
        return "tensorboard" if available else None
    return value


def autocast_dtype(args, device: torch.device) -> torch.dtype | None:
    choice = args.encoder_dtype
    if choice == "auto":
        choice = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]


def run_config(args) -> dict:
    config = {k: v for k, v in vars(args).items()}
    for key in ("train_csv", "val_csv"):
        if config[key]:
            config[key] = str(Path(config[key]).resolve())
    return config


def check_output_dir(args) -> Path | None:
    """Refuse to mix runs: a non-empty OUTPUT_DIR needs --resume or --overwrite. Only reads, so it runs
    before anything slow (the encoder) or destructive. Returns the checkpoint to resume."""
    out = Path(args.output_dir)
    checkpoint = None
    if args.resume:
        checkpoint = probing.find_checkpoint(out / "checkpoints", args.resume)
        if checkpoint is not None:
            saved = probing.read_checkpoint_state(checkpoint)["config"]
            now = run_config(args)
            saved = {**LEGACY_RESULT_VALUES, **saved}
            changed = {k: (saved.get(k), now[k]) for k in RESULT_KEYS if saved.get(k) != now[k]}
            if changed:
                raise SystemExit(f"error: --resume with other settings than the checkpoint's: {changed}")
    elif out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise SystemExit(f"error: {out} is not empty (an earlier run?); pass --resume to continue it or "
                             "--overwrite to start over")  # fmt: skip
        if not (out / RUN_FILE).is_file():
            raise SystemExit(f"error: refusing to --overwrite {out}: it holds no {RUN_FILE}, so it is not a probe output dir")
    classifier = Path(args.save_classifier) if args.save_classifier else None
    if classifier and classifier.is_dir() and any(classifier.iterdir()) and not (args.overwrite or args.resume):
        raise SystemExit(f"error: --save-classifier {classifier} is not empty; pass --overwrite to replace it")
    return checkpoint


def start_output_dir(args, accelerator) -> None:
    """After every input has been read: clear the old run (--overwrite) and record this one's settings."""
    out = Path(args.output_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if args.overwrite and not args.resume and out.is_dir() and any(out.iterdir()):
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        probing.write_json(out / RUN_FILE, run_config(args))
    accelerator.wait_for_everyone()


def class_names_for(args, num_classes: int) -> list[str]:
    candidates = [Path(args.class_names)] if args.class_names else []
    if not args.class_names:
        train = Path(args.train_csv)
        candidates = [train.with_name(f"{train.stem}_classes.txt"), train.with_name("classes.txt")]
    for path in candidates:
        if path.is_file():
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if len(names) < num_classes:
                raise SystemExit(f"error: {path} names {len(names)} classes but the manifests use labels up to {num_classes - 1}")
            return names
        if args.class_names:
            raise SystemExit(f"error: --class-names {path} does not exist")
    return [f"class_{i}" for i in range(num_classes)]


def data_signature(dataset: VideoClipDataset, accelerator) -> dict:
    """What a feature cache was computed from: the manifest's bytes (paths and labels) and each video's
    size and mtime, so an edited manifest or a replaced video invalidates the cache. Computed on the main
    process and shared: one pass of stat calls, and every process compares the same key (one that saw
    another mtime would take the other branch and leave the rest waiting for it)."""
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


def make_demo_data(args):
    """The demo's videos and manifests (reused when already there with the same arguments)."""
    try:
        return make_synthetic_video_dataset(args.demo_data_root, num_classes=args.demo_classes,
                                            videos_per_class=args.demo_videos_per_class, **DEMO_VIDEOS)  # fmt: skip
    except FileExistsError as error:
        raise SystemExit(f"error: {error}; pass another --demo-data-root (or leave it out: the default depends on "
                         "--demo-classes and --demo-videos-per-class)") from None  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"error: demo data: {error} (--demo-classes / --demo-videos-per-class)") from None


def read_manifest_or_exit(flag: str, path: str) -> list:
    """read_manifest, with a one-line error naming the option instead of a traceback."""
    try:
        return read_manifest(path)
    except FileNotFoundError:
        raise SystemExit(f"error: {flag} {path}: no such file") from None
    except IsADirectoryError:
        raise SystemExit(f"error: {flag} {path} is a folder; pass the manifest file ('path label' per line)") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise SystemExit(f"error: {flag}: {error}") from None


def gather_skipped(local: list) -> dict[int, str]:
    return {int(index): path for index, path in gather_object(list(local))}


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    out = Path(args.output_dir)
    report_to = resolve_report_to(args.report_to)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # accelerate's per-file save logs stay quiet
    for name in ("k400_probe", "hf_vjepa_area"):
        logging.getLogger(name).setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
    progress = accelerator.is_main_process and not args.no_progress
    device = accelerator.device
    world = accelerator.num_processes
    # Inputs first (demo videos, manifests, class list, encoder): a typo must fail before an existing
    # output dir is replaced or a new one is started.
    if args.demo:
        with accelerator.main_process_first():
            demo = make_demo_data(args)
        args.train_csv, args.val_csv = str(demo.train_manifest), str(demo.val_manifest)
        class_names = list(demo.class_names)
    train_entries, val_entries = read_manifest_or_exit("--train-csv", args.train_csv), read_manifest_or_exit("--val-csv", args.val_csv)
    num_classes = max(e.label for e in train_entries + val_entries) + 1
    if not args.demo:
        class_names = class_names_for(args, num_classes)
    num_classes = max(num_classes, len(class_names))
    checkpoint = check_output_dir(args)

    # ---- frozen encoder ---------------------------------------------------------------------
    with accelerator.main_process_first():
        encoder = probing.load_encoder(
            None if args.model == "demo" else args.model, area_splits=args.area_splits, area_layers=args.area_layers,
            full_attention=args.full_attention, pretrained=not args.no_pretrained, revision=args.revision, seed=args.seed,
        )  # fmt: skip
    start_output_dir(args, accelerator)
    encoder.to(device)
    enc_dtype = autocast_dtype(args, device)
    dim = encoder.config.embed_dim
    n_tokens = args.segments * probing.tokens_per_clip(encoder.config, args.frames, args.resolution)
    encode = dict(autocast_dtype=enc_dtype, chunk_size=args.encoder_chunk)

    clip_args = dict(frames_per_clip=args.frames, frame_step=args.frame_step, num_segments=args.segments,
                     crop_size=args.resolution, min_frames=args.min_frames, backend=args.video_backend)  # fmt: skip
    if args.cache_features:  # deterministic clips for training too: one centre view per segment
        train_videos = VideoClipDataset(args.train_csv, train=False, num_views=1, **clip_args)
    else:  # V-JEPA 2's training clips: crop scale 0.08-1, no flip; RandAugment and random erasing per the flags
        transform = TrainTransform(args.resolution, scale=(0.08, 1.0), horizontal_flip=False,
                                   auto_augment=args.auto_augment, erase_prob=args.erase_prob)  # fmt: skip
        train_videos = VideoClipDataset(args.train_csv, train=True, num_views=1, transform=transform, **clip_args)
    val_videos = VideoClipDataset(args.val_csv, train=False, num_views=args.views,
                                  transform=EvalTransform(args.resolution, args.views), **clip_args)  # fmt: skip

    seeded = None
    if args.cache_features:
        cache_dir = Path(args.feature_cache_dir or out / "features")
        fingerprint = probing.encoder_fingerprint(encoder)

        def features(split: str, dataset: VideoClipDataset, views: int) -> dict:
            spec = dict(split=split, manifest=str(Path(dataset.manifest).resolve()), entries=len(dataset),
                        **data_signature(dataset, accelerator), encoder=args.model, fingerprint=fingerprint,
                        views=views, dtype=str(enc_dtype), **{k: v for k, v in clip_args.items() if k != "backend"})  # fmt: skip

            def compute(indices):
                return probing.extract_features(
                    encoder, dataset, indices, device=device, num_segments=args.segments, num_views=views,
                    feature_shape=(views, n_tokens, dim), batch_size=args.val_batch_size, num_workers=args.num_workers,
                    progress=progress, desc=f"encoding {split}", **encode,
                )  # fmt: skip

            return probing.cached_features(cache_dir / f"{split}.safetensors", spec, compute, len(dataset), accelerator)

        train_cache, val_cache = features("train", train_videos, 1), features("val", val_videos, args.views)
        train_set = probing.FeatureDataset(train_cache["features"], train_cache["labels"], train_cache["indices"])
        val_set = probing.FeatureDataset(val_cache["features"], val_cache["labels"], val_cache["indices"])
        skipped = {"train": dict(train_cache["skipped"]), "val": dict(val_cache["skipped"])}
        loader_args = dict(collate_fn=probing.collate_features)
    else:
        seeded = train_set = probing.SeededSamples(train_videos, args.seed)
        val_set = val_videos
        skipped = {"train": {}, "val": {}}
        loader_args = dict(collate_fn=probing.collate_probe_batch, num_workers=args.num_workers)
    if len(train_set) == 0 or len(val_set) == 0:
        raise SystemExit(f"error: no usable videos (train {len(train_set)}, val {len(val_set)}); skipped: {skipped}")
    # Our sampler, not accelerate's sharding: global batches split across processes without padding
    # (probing.ShardedBatchSampler), so every step trains on the same samples for any process count.
    shard = dict(rank=accelerator.process_index, num_replicas=world)
    train_sampler = probing.ShardedBatchSampler(len(train_set), args.batch_size, shuffle=True, seed=args.seed, **shard)
    val_sampler = probing.ShardedBatchSampler(len(val_set), args.val_batch_size, **shard)
    train_loader = DataLoader(train_set, batch_sampler=train_sampler, **loader_args)
    val_loader = DataLoader(val_set, batch_sampler=val_sampler, **loader_args)

    # ---- probe, optimizer, schedule -----------------------------------------------------------
    set_seed(args.seed)  # the heads' init does not depend on anything above
    specs = probing.hparam_grid(args.lrs, args.wds)
    checkpointing = args.activation_checkpointing if args.activation_checkpointing is not None else device.type == "cuda"
    probe = probing.MultiHeadProbe(dim, num_classes, specs, num_heads=args.probe_heads, depth=args.probe_depth,
                                   activation_checkpointing=checkpointing)  # fmt: skip
    optimizer = probing.build_optimizer(probe, exclude_bias_and_norm=args.wd_exclude_bias_norm)
    steps_per_epoch = math.ceil(len(train_loader) / args.grad_accum)
    scheduler = probing.build_scheduler(optimizer, args.epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch))
    probe, optimizer = accelerator.prepare(probe, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # stepped by us, once per optimizer step

    history = {key: [] for key in ("train_loss", "train_top1", "val_loss", "val_top1", "num_train", "num_val")}
    start_epoch = 0
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = probing.read_checkpoint_state(checkpoint)
        start_epoch, history = state["epoch"], state["history"]
        started -= state.get("elapsed_s", 0.0)  # wall time counts the interrupted part too
        for split in skipped:
            skipped[split].update({int(k): v for k, v in state["skipped"][split].items()})
        if state.get("num_processes") != world:
            logger.warning("resuming a %s-process run on %d processes: float sums may differ in the last bits",
                           state.get("num_processes"), world)  # fmt: skip
        accelerator.print(f"resumed from {checkpoint} (epoch {start_epoch} of {args.epochs})")
    if report_to:
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in run_config(args).items()}
        accelerator.init_trackers("k400_probe", config=hparams)

    accelerator.print(
        f"probe: {len(specs)} heads ({probe_summary(args)}) on {dim}-dim tokens [{args.views} views x {n_tokens}]; "
        f"{len(train_set)} train / {len(val_set)} val videos, {num_classes} classes; {world} process(es), "
        f"global batch {args.batch_size * world * args.grad_accum}; encoder {args.model}"
        f"{' (features cached)' if args.cache_features else ''}"
        f"{'' if args.cache_features else f'; RandAugment {args.auto_augment}, random erasing p {args.erase_prob:g}'}"
    )

    def tokens_of(views: int):
        def tokens(batch):
            if "features" in batch:
                return None if batch["features"] is None else batch["features"].to(device)
            if batch["clips"] is None:
                return None
            return probing.encode_clips(encoder, batch["clips"].to(device), args.segments, views, **encode)

        return tokens

    def gathered(records):
        return probing.summarize_records(probing.gather_records(records))

    # ---- epochs -------------------------------------------------------------------------------
    for epoch in range(start_epoch, args.epochs):
        train_sampler.set_epoch(epoch)
        if seeded is not None:
            seeded.set_epoch(epoch)
        name = f"epoch {epoch + 1}/{args.epochs}"
        records, local_skipped = probing.train_one_epoch(
            accelerator, probe, optimizer, scheduler, train_loader, tokens_of(1), empty_tokens_shape=(1, n_tokens, dim),
            grad_accum=args.grad_accum, progress=progress, desc=f"{name} train",
        )  # fmt: skip
        train = gathered(records)
        skipped["train"].update(gather_skipped(local_skipped))
        records, local_skipped = probing.evaluate(accelerator, probe, val_loader, tokens_of(args.views),
                                                  progress=progress, desc=f"{name} val")  # fmt: skip
        val = gathered(records)
        skipped["val"].update(gather_skipped(local_skipped))
        for split, summary in (("train", train), ("val", val)):  # the same on every rank: records are gathered
            if summary["num_samples"] == 0:
                examples = sorted(set(skipped[split].values()))[:3]
                raise SystemExit(
                    f"error: epoch {epoch + 1}: not one {split} video could be read ({len(skipped[split])} skipped, "
                    f"e.g. {examples}); see the warnings above, fix the paths in {getattr(args, f'{split}_csv')} "
                    "or the files, and run again"
                )

        history["train_loss"].append(train["loss"])
        history["train_top1"].append(train["top1"])
        history["val_loss"].append(val["loss"])
        history["val_top1"].append(val["top1"])
        history["num_train"].append(train["num_samples"])
        history["num_val"].append(val["num_samples"])
        best = max(range(len(specs)), key=lambda h: val["top1"][h])
        accelerator.print(
            f"epoch {epoch + 1}/{args.epochs}: best head {specs[best].name}: val top-1 {val['top1'][best]:.2f}%, "
            f"train loss {train['loss'][best]:.4f}; skipped videos "
            f"{len(skipped['train'])} train, {len(skipped['val'])} val"
        )
        if report_to:
            logs = {f"val_top1/{s.name}": val["top1"][h] for h, s in enumerate(specs)}
            logs.update({f"train_loss/{s.name}": train["loss"][h] for h, s in enumerate(specs)})
            logs.update({"val_top1/best": val["top1"][best], "skipped_videos": len(skipped["train"]) + len(skipped["val"])})
            accelerator.log(logs, step=epoch + 1)
        state = dict(epoch=epoch + 1, history=history, skipped=skipped, config=run_config(args), num_processes=world,
                     elapsed_s=time.time() - started)  # fmt: skip
        probing.save_checkpoint(accelerator, out / "checkpoints", epoch + 1, state, keep=args.keep_checkpoints)
        if args.debug_kill_after_epoch == epoch + 1:  # a hard kill, as a preempted job gets: no cleanup at all
            os.kill(os.getpid(), signal.SIGKILL)

    # ---- results ------------------------------------------------------------------------------
    results = build_results(args, specs, history, skipped, encoder, class_names, num_classes,
                            len(train_videos), len(val_videos), world, time.time() - started)  # fmt: skip
    if accelerator.is_main_process:
        write_outputs(args, out, results, accelerator.unwrap_model(probe), encoder, class_names)
        best = results["best_head"]
        print(
            f"\nbest head {best['name']}: val top-1 {best['val_top1']:.2f}% (chance {100 / num_classes:.1f}%), "
            f"{results['skipped_videos']['total']} video(s) skipped; {time.time() - started:.0f} s. "
            f"Results in {out}/results.json"
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


def probe_summary(args) -> str:
    return f"lr {args.lrs} x wd {args.wds}, depth {args.probe_depth}, {args.probe_heads} attention heads"


def build_results(args, specs, history, skipped, encoder, class_names, num_classes, num_train, num_val, world, seconds) -> dict:
    last = history["val_top1"][-1]
    best = max(range(len(specs)), key=lambda h: last[h])
    heads = [
        dict(index=h, name=s.name, lr=s.lr, weight_decay=s.weight_decay,
             train_loss=[e[h] for e in history["train_loss"]], train_top1=[e[h] for e in history["train_top1"]],
             val_loss=[e[h] for e in history["val_loss"]], val_top1=[e[h] for e in history["val_top1"]])  # fmt: skip
        for h, s in enumerate(specs)
    ]
    config = run_config(args)
    return dict(
        task="frozen attentive probe (V-JEPA 2 protocol)",
        config=config,
        encoder=probing.describe_encoder(encoder, args.model),
        data=dict(train_manifest=config["train_csv"], val_manifest=config["val_csv"], num_train=num_train,
                  num_val=num_val, num_classes=num_classes, class_names=list(class_names),
                  train_samples_used=history["num_train"][-1], val_samples_scored=history["num_val"][-1]),  # fmt: skip
        num_processes=world,
        global_batch_size=args.batch_size * world * args.grad_accum,
        epochs=len(history["val_top1"]),
        heads=heads,
        best_head=dict(index=best, name=specs[best].name, lr=specs[best].lr, weight_decay=specs[best].weight_decay,
                       val_top1=last[best], epoch=len(history["val_top1"])),  # fmt: skip
        val_top1_best_per_epoch=[max(e) for e in history["val_top1"]],
        skipped_videos=dict(
            train=dict(count=len(skipped["train"]), paths=sorted(set(skipped["train"].values()))),
            val=dict(count=len(skipped["val"]), paths=sorted(set(skipped["val"].values()))),
            total=len(skipped["train"]) + len(skipped["val"]),
        ),
        wall_time_s=round(seconds, 1),
    )


def write_outputs(args, out: Path, results: dict, probe, encoder, class_names) -> None:
    specs = probe.specs
    best = results["best_head"]["index"]
    head = probe.heads[best]
    meta = probing.head_metadata(specs[best], best, head, class_names, encoder=args.model,
                                 val_top1=results["best_head"]["val_top1"])  # fmt: skip
    probing.save_probe_weights(out / "probe.safetensors", head, meta)
    if args.save_all_heads:
        probing.save_all_heads(out / "probe_heads.safetensors", probe, {"class_names": json.dumps(list(class_names))})
    curves = {h["name"]: h["val_top1"] for h in results["heads"]}
    best_name = results["best_head"]["name"]
    svg = probing.accuracy_svg(curves, best=best_name)
    write_text_atomically(out / "accuracy.svg", svg, overwrite=True)
    results["plots"] = ["accuracy.svg"] + (["accuracy.png"] if probing.write_accuracy_png(curves, out / "accuracy.png", best_name) else [])
    probing.write_json(out / "results.json", results)

    if args.save_classifier or args.push_to_hub:
        folder = Path(args.save_classifier or out / "classifier")
        model = probing.build_classifier(encoder.cpu(), head.cpu(), class_names, frames=args.frames, resolution=args.resolution)
        card = probing.classifier_model_card(results, args.push_to_hub)
        probing.save_classifier_folder(model, folder, model_card=card, metadata={k: v for k, v in meta.items() if k != "format"},
                                       extra_files={"probe_results.json": probing.to_json(results)}, overwrite=True)  # fmt: skip
        results["classifier_folder"] = str(folder)
        if args.push_to_hub:
            results["pushed"] = probing.push_classifier(folder, args.push_to_hub, private=args.hub_private)
        probing.write_json(out / "results.json", results)


if __name__ == "__main__":
    raise SystemExit(main())
