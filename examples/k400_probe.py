#!/usr/bin/env python
"""V-JEPA 2's frozen attentive probe, end to end, with accelerate.

    # Built-in demo: a small labelled video set generated locally, a small random-init ST-A² encoder,
    # 4 probe heads; under a minute on CPU. Writes outputs/demo_probe/.
    accelerate launch examples/k400_probe.py

    # The real thing: Kinetics-400 with V-JEPA 2's protocol (16 frames x step 4, 8 segments x 3 views,
    # 256 px, 4-block/16-head probes over a 5 lr x 4 wd grid, 20 epochs; training clips get random
    # resized crops, RandAugment and random erasing). `--preset ssv2|diving48|jester|coin` for the others.
    accelerate launch examples/k400_probe.py --model hf-vjepa-area/vjepa2-vitl-st-a2 \
        --train-csv k400/train.csv --val-csv k400/val.csv

The encoder is frozen (eval, no_grad, bf16 autocast on GPU); only the probe heads train. Processes
share the data (DDP via accelerate); metrics are exact for any number of processes. Every epoch ends
with an atomic checkpoint; `--resume auto` continues a killed run to the same result. See docs/probe.md.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any
from pathlib import Path

import torch

try:
    import hf_vjepa_area  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, broadcast_object_list, gather_object, set_seed
from torch import nn
from torch.utils.data import DataLoader

from hf_vjepa_area import AttentiveClassifier, VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel, probing, runs
from hf_vjepa_area import sources
from hf_vjepa_area._cli import run_main
from hf_vjepa_area.data import EvalTransform, TrainTransform, VideoClipDataset, make_synthetic_video_dataset, read_manifest
from hf_vjepa_area.data.synthetic import DEMO_VIDEOS, demo_data_root
from hf_vjepa_area.data.transforms import VJEPA2_K400_TRAIN
from hf_vjepa_area._files import write_atomically, write_text_atomically
from hf_vjepa_area.hub import push_folder, save_repo_folder

logger = logging.getLogger("k400_probe")

CHECKPOINTS = dict(prefix="epoch_", state_file="probe_state.json")  # one per epoch
# What a run writes in its output dir: --overwrite removes these and nothing else.
RUN_FOLDER = dict(script="k400_probe", outputs=("checkpoints", "logs", "features", "classifier", "probe.safetensors",
                  "probe_heads.safetensors", "accuracy.svg", "accuracy.png", "results.json"))  # fmt: skip

# The protocols, one row each. V-JEPA 2's frozen evals, configs/eval/vitl/: k400-area-attn.yaml and
# ssv2-area-attn.yaml (facebookresearch/vjepa2), diving48.yaml, jester.yaml, coin.yaml (the same repo's
# configs, read from a fork that carries them). All five: 4-block 16-head probes, 256 px, bf16, no warmup,
# cosine to lr 0, constant weight decay; training clips as evals/video_classification_frozen/eval.py makes
# them (`VJEPA2_K400_TRAIN`: crop scale 0.08-1, no flip, RandAugment, random erasing p 0.25). `batch` is
# per process, `global` the global batch V-JEPA 2 trained with (batch x 64 GPUs; lr not rescaled), which
# gradient accumulation reproduces on any process count. `tokens`: the last block's, or the multi-level
# input (four blocks, `MULTILEVEL_OUT_LAYERS` per encoder size). The demo row: small everything, features
# cached, no protocol batch (see sources.DEMO_ENCODER_CONFIG for its encoder).
VJEPA2_LRS = (0.005, 0.003, 0.001, 0.0003, 0.0001)
VJEPA2_WDS = (0.01, 0.1, 0.4, 0.8)
PRESET_FIELDS = ("frames", "frame_step", "segments", "views", "resolution", "epochs", "batch_size", "global_batch",
                 "lrs", "wds", "probe_depth", "probe_heads", "out_layers", "cache_features", "auto_augment", "erase_prob")  # fmt: skip
PRESETS = {
    #          frames step seg views  px  epochs batch global lrs                     wds           depth heads tokens        cache  RandAug erase
    "k400":     (16,   4,   8,  3,   256,  20,   4,   256,  VJEPA2_LRS,             VJEPA2_WDS,      4,  16,  "last",       False, True,  0.25),
    "ssv2":     (16,   4,   2,  3,   256,  20,   4,   256,  VJEPA2_LRS,             VJEPA2_WDS,      4,  16,  "last",       False, True,  0.25),
    "diving48": (32,   2,   4,  3,   256, 100,   2,   128,  (0.001, 0.0003, 0.0001), (0.8,),         4,  16,  "multilevel", False, True,  0.25),
    "jester":   (32,   2,   4,  3,   256, 100,   2,   128,  (0.001, 0.0003, 0.0001), (0.8,),         4,  16,  "multilevel", False, True,  0.25),
    "coin":     (16,   4,   8,  3,   256,  20,   2,   128,  VJEPA2_LRS,             VJEPA2_WDS,      4,  16,  "last",       False, True,  0.25),
    "demo":     (8,    4,   2,  1,    64,  20,   8,   None, (0.003, 0.001),         (0.01, 0.1),     1,   4,  "last",       True,  False, 0.0),
}  # fmt: skip
assert VJEPA2_K400_TRAIN["erase_prob"] == PRESETS["k400"][-1] and VJEPA2_K400_TRAIN["auto_augment"]
# Preset fields that are no command-line option: the protocol's global batch (reached through --grad-accum).
PROTOCOL_ONLY = ("global_batch",)

# The demo's videos: a square drifting over 48 frames at 64 px (hf_vjepa_area.data.synthetic).

# Arguments that change the numbers a run produces: a resumed run must match them.
RESULT_KEYS = (
    "model", "area_splits", "area_layers", "full_attention", "no_pretrained", "revision", "train_csv", "val_csv",
    "frames", "frame_step", "segments", "views", "resolution", "min_frames", "epochs", "batch_size",
    "grad_accum", "lrs", "wds", "warmup_epochs", "wd_exclude_bias_norm", "probe_depth", "probe_heads", "out_layers",
    "cache_features", "encoder_dtype", "mixed_precision", "seed", "demo_classes", "demo_videos_per_class",
    "auto_augment", "erase_prob",
)  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("encoder")
    g.add_argument("--model", help="a released source (Meta's vitl.pt, facebook/vjepa2-vitl-fpc64-256 or its folder), "
                   "our folder / Hub id (model_type vjepa2_area), a timm name (vjepa2_vitl_area, hf-hub:ORG/NAME), or "
                   "'demo' (built-in random-init encoder; the default without --train-csv)")  # fmt: skip
    g.add_argument("--area-splits", type=int, nargs=3, metavar=("T", "H", "W"), help="use ST-A² with these splits")
    g.add_argument("--area-layers", help="blocks with area attention, e.g. 0:18 (default: the model's, or the first 75%%)")
    g.add_argument("--full-attention", action="store_true", help="turn area attention off (full attention everywhere)")
    g.add_argument("--revision", help="Hub revision of --model")
    g.add_argument("--no-pretrained", action="store_true", help="random init instead of the weights (debugging)")
    g.add_argument("--encoder-dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast dtype of the frozen encoder (auto: bf16 on GPU, fp32 on CPU)")  # fmt: skip
    g.add_argument("--encoder-chunk", type=int, default=probing.ENCODER_CHUNK,
                   help="at most this many clips per encoder forward (default %(default)s; 0: the whole batch)")  # fmt: skip

    g = p.add_argument_group("data (V-JEPA 2 manifests: 'path label' per line)")
    g.add_argument("--preset", choices=list(PRESETS),
                   help="V-JEPA 2's eval protocol whose defaults to use (default: k400 with --train-csv), or 'demo' "
                   "(the built-in demo's small settings, e.g. on the SSL demo's videos); options given explicitly override it")  # fmt: skip
    g.add_argument("--train-csv")
    g.add_argument("--val-csv")
    g.add_argument("--class-names", help="class list, line i = label i (default: <train>_classes.txt or classes.txt beside the manifest)")
    g.add_argument("--frames", type=int, help="frames per clip (K400: 16)")
    g.add_argument("--frame-step", type=int, help="frame step (K400: 4)")
    g.add_argument("--segments", type=int, help="temporal segments per video (K400: 8)")
    g.add_argument("--views", type=int, help="spatial views per segment at eval (K400: 3)")
    g.add_argument("--resolution", type=int, help="crop size (K400: 256)")
    g.add_argument("--min-frames", type=int, default=1, help="skip videos with fewer frames (default 1: pad short videos, as V-JEPA 2)")
    g.add_argument("--num-workers", type=int, help="DataLoader workers per process (default: the CPUs each local "
                   "process has, at most 8; 0 for the demo)")
    g.add_argument("--video-backend", default="auto", choices=["auto", "pyav", "torchcodec"],
                   help="auto: torchcodec for mp4/mov/mkv/webm when it decodes here (faster), else PyAV "
                        "(exact on every container; torchcodec returns other frames for B-frames in AVI/MPEG-TS)")
    g.add_argument("--demo-data-root", help="where the demo videos are generated "
                   "(default: outputs/demo_data/CLASSESxVIDEOS, e.g. outputs/demo_data/4x40)")
    g.add_argument("--demo-classes", type=int, default=DEMO_VIDEOS["num_classes"], help="demo classes (motion directions), 1-4")
    g.add_argument("--demo-videos-per-class", type=int, default=DEMO_VIDEOS["videos_per_class"])

    g = p.add_argument_group("probe training")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="videos per process per micro-batch (K400: 4 on each of 64 GPUs)")
    g.add_argument("--val-batch-size", type=int, help="default: --batch-size")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (default: what reproduces the "
                   "preset's global batch, V-JEPA 2's 256 or 128, on this process count and --batch-size)")
    g.add_argument("--lrs", type=float, nargs="+", help="learning rates of the grid")
    g.add_argument("--wds", type=float, nargs="+", help="weight decays of the grid")
    g.add_argument("--warmup-epochs", type=float, default=0.0)
    g.add_argument("--wd-exclude-bias-norm", action="store_true",
                   help="no weight decay on biases, norms and the query token (V-JEPA 2 decays all)")  # fmt: skip
    g.add_argument("--probe-depth", type=int, help="attentive probe blocks (K400: 4)")
    g.add_argument("--probe-heads", type=int, help="attention heads of the probe (K400: 16)")
    g.add_argument("--out-layers", help=probing.OUT_LAYERS_HELP + " (default: the preset's; multilevel for Diving48 and Jester)")
    g.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction,
                   help="keep only each probe block's input for backward and recompute the rest (about 1/3 more "
                   "probe compute); default: on when one head's training graph would exceed "
                   f"{probing.CHECKPOINTING_THRESHOLD_BYTES / 2**30:g} GiB")  # fmt: skip
    g.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"],
                   help="autocast of the probe (default: bf16 on a GPU that has it, as V-JEPA 2's evals; else no)")  # fmt: skip
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
        args.demo_data_root = demo_data_root(args.demo_classes, args.demo_videos_per_class)
    if args.resume and args.overwrite:
        p.error("--resume and --overwrite exclude each other")
    if args.demo and args.preset not in (None, "demo"):
        p.error("--preset needs --train-csv and --val-csv (without them the script runs its built-in demo)")
    args.preset = "demo" if args.demo else args.preset or "k400"
    for key, value in zip(PRESET_FIELDS, PRESETS[args.preset]):
        if key not in PROTOCOL_ONLY and getattr(args, key) is None:
            setattr(args, key, list(value) if isinstance(value, tuple) else value)
    if args.num_workers is None:
        args.num_workers = 0 if args.demo else runs.default_num_workers()
    args.output_dir = args.output_dir or f"outputs/{args.preset}_probe"
    if args.mixed_precision is None:  # V-JEPA 2's eval configs: use_bfloat16 (also halves the heads' graphs)
        args.mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    args.val_batch_size = args.val_batch_size or args.batch_size
    for name in ("frames", "frame_step", "segments", "views", "resolution", "epochs", "batch_size", "val_batch_size",
                 "grad_accum", "probe_depth", "probe_heads"):  # fmt: skip
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 <= args.erase_prob <= 1.0:
        p.error("--erase-prob must be in [0, 1]")
    if args.push_to_hub and args.push_to_hub.count("/") != 1:
        p.error("--push-to-hub needs ORG/NAME")
    if args.out_layers not in ("last", "multilevel") and not all(v.strip().isdigit() for v in args.out_layers.split(",")):  # checked against the encoder once loaded
        p.error(f"--out-layers must be 'last', 'multilevel' or block indices like 17,19,21,23, got {args.out_layers!r}")
    return args


def preset_value(preset: str, field: str):
    return PRESETS[preset][PRESET_FIELDS.index(field)]


def resolve_batching(args, world: int) -> dict:
    """Gradient accumulation and what it makes of the preset's protocol: V-JEPA 2's global batch (videos
    per optimizer step over all processes) by default, `--grad-accum` when given. Exits with one line when
    the protocol's batch is no multiple of --batch-size x processes."""
    protocol = preset_value(args.preset, "global_batch")
    per_step = args.batch_size * world
    accum = args.grad_accum
    if accum is None and protocol is not None:
        if protocol % per_step:
            raise SystemExit(
                f"error: the {args.preset} preset's global batch {protocol} (V-JEPA 2's) is not a multiple of "
                f"--batch-size {args.batch_size} x {world} process(es) = {per_step}: pick a --batch-size that makes "
                f"it one, or pass --grad-accum N to train with another global batch ({per_step} x N)"
            )
        accum = protocol // per_step
    accum = accum or 1
    global_batch = per_step * accum
    return dict(grad_accum=accum, global_batch_size=global_batch, protocol_global_batch_size=protocol,
                matches_protocol_batch=protocol is not None and global_batch == protocol)  # fmt: skip


def batching_line(args, world: int, batching: dict) -> str:
    """The run log's statement of the global batch and whether it is the protocol's."""
    line = (f"global batch {batching['global_batch_size']} = {args.batch_size} per process x {world} process(es) x "
            f"{batching['grad_accum']} accumulation step(s)")  # fmt: skip
    protocol = batching["protocol_global_batch_size"]
    if protocol is None:
        return line + " (no V-JEPA 2 protocol for this preset)"
    if batching["matches_protocol_batch"]:
        return line + f": V-JEPA 2's {args.preset} protocol ({protocol})"
    return line + f": NOT V-JEPA 2's {args.preset} protocol ({protocol}; lr not rescaled, so results may differ)"


def resolve_out_layers(args, config: VJEPA2AreaConfig) -> list[int] | None:
    """The blocks the probe reads (None: the last block's tokens), for `--out-layers` and this encoder."""
    try:
        return probing.resolve_out_layers(args.out_layers, config)
    except ValueError as error:
        raise SystemExit(f"error: --out-layers {args.out_layers}: {error}") from None


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
    """The run's output dir (and --save-classifier's folder) checked before anything slow (the encoder) or
    destructive. Returns the checkpoint to resume."""
    checkpoint = runs.check_output_dir(args.output_dir, resume=args.resume, overwrite=args.overwrite, config=run_config(args),
                                       compared_keys=RESULT_KEYS, **RUN_FOLDER, **CHECKPOINTS)  # fmt: skip
    classifier = Path(args.save_classifier) if args.save_classifier else None
    if classifier and classifier.is_dir() and any(classifier.iterdir()) and not (args.overwrite or args.resume):
        raise SystemExit(f"error: --save-classifier {classifier} is not empty; pass --overwrite to replace it")
    return checkpoint


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
                                            videos_per_class=args.demo_videos_per_class,
                                            frames=DEMO_VIDEOS["frames"], size=DEMO_VIDEOS["size"])  # fmt: skip
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
    report_to = runs.resolve_report_to(args.report_to)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        # Heads train one at a time (probing.backward_per_head): every DDP pass leaves the others unused.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True, gradient_as_bucket_view=True)],
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
    batching = resolve_batching(args, world)
    checkpoint = check_output_dir(args)

    # ---- frozen encoder ---------------------------------------------------------------------
    with accelerator.main_process_first():
        try:
            area = sources.AreaOptions(args.area_splits, args.area_layers, args.full_attention)
            encoder = sources.load_encoder(args.model, area=area, pretrained=not args.no_pretrained, revision=args.revision,
                                           seed=args.seed)  # fmt: skip
        except sources.SourceError as error:  # a name, folder or area option the encoder cannot take
            raise SystemExit(f"error: --model {error}") from None
    out_layers = resolve_out_layers(args, encoder.config)
    runs.start_output_dir(args.output_dir, accelerator, overwrite=args.overwrite and not args.resume, config=run_config(args),
                          **RUN_FOLDER)
    encoder.to(device)
    enc_dtype = autocast_dtype(args, device)
    dim = encoder.config.embed_dim
    n_tokens = args.segments * probing.tokens_per_clip(encoder.config, args.frames, args.resolution, out_layers)
    encode = dict(autocast_dtype=enc_dtype, chunk_size=args.encoder_chunk, out_layers=out_layers)

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
                        views=views, dtype=str(enc_dtype), out_layers=out_layers,
                        **{k: v for k, v in clip_args.items() if k != "backend"})  # fmt: skip

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
    token_channels = args.batch_size * n_tokens * dim  # one training view per video
    checkpointing = args.activation_checkpointing
    if checkpointing is None:
        checkpointing = probing.head_activation_bytes(token_channels, args.probe_depth) > probing.CHECKPOINTING_THRESHOLD_BYTES
    probe = probing.MultiHeadProbe(dim, num_classes, specs, num_heads=args.probe_heads, depth=args.probe_depth,
                                   activation_checkpointing=checkpointing)  # fmt: skip
    optimizer = probing.build_optimizer(probe, exclude_bias_and_norm=args.wd_exclude_bias_norm)
    steps_per_epoch = math.ceil(len(train_loader) / batching["grad_accum"])
    scheduler = probing.build_scheduler(optimizer, args.epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch))
    probe, optimizer = accelerator.prepare(probe, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # stepped by us, once per optimizer step

    history = {key: [] for key in ("train_loss", "train_top1", "val_loss", "val_top1", "num_train", "num_val")}
    start_epoch = 0
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = runs.read_checkpoint_state(checkpoint, CHECKPOINTS["state_file"])
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
        f"probe: {len(specs)} heads ({probe_summary(args)}) on {dim}-dim tokens [{args.views} views x {n_tokens}] "
        f"of {'the last block' if out_layers is None else f'blocks {out_layers}'}; "
        f"{len(train_set)} train / {len(val_set)} val videos, {num_classes} classes; {world} process(es), "
        f"{batching_line(args, world, batching)}; encoder {args.model}"
        f"{' (features cached)' if args.cache_features else ''}"
        f"{'' if args.cache_features else f'; RandAugment {args.auto_augment}, random erasing p {args.erase_prob:g}'}"
        f"; preset {args.preset}; activation checkpointing {'on' if checkpointing else 'off'}"
    )
    if device.type == "cpu" and n_tokens >= HEAVY_TOKENS and accelerator.is_main_process and start_epoch < args.epochs:
        print(estimate_epoch(encoder, args, probe_depth=args.probe_depth, num_classes=num_classes, tokens=n_tokens,
                             checkpointing=checkpointing, num_train=len(train_set), num_val=len(val_set), world=world),
              flush=True)  # fmt: skip

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
            grad_accum=batching["grad_accum"], progress=progress, desc=f"{name} train",
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
        runs.save_checkpoint(accelerator, out / "checkpoints", epoch + 1, state, keep=args.keep_checkpoints, **CHECKPOINTS)

    # ---- results ------------------------------------------------------------------------------
    results = build_results(args, specs, history, skipped, encoder, class_names, num_classes,
                            len(train_videos), len(val_videos), world, time.time() - started,
                            batching=batching, out_layers=out_layers)  # fmt: skip
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


# Tokens per view from which a CPU run says up front how long an epoch will take (K400: 16,384).
HEAVY_TOKENS = 4096


def estimate_epoch(encoder, args, *, probe_depth: int, num_classes: int, tokens: int, checkpointing: bool,
                   num_train: int, num_val: int, world: int) -> str:  # fmt: skip
    """A rough epoch time on this CPU, from timing the pieces once: the encoder on one real-size clip, and
    one head's training step at 1,024 and 2,048 tokens, fitted as linear*M + quadratic*M^2 (projections
    and MLPs, attention) and scaled to the run's tokens, heads and videos. Eval runs forward only (~1/3)."""
    dim = encoder.config.embed_dim
    head = probing.MultiHeadProbe(dim, num_classes, probing.hparam_grid([1e-3], [0.0]), num_heads=args.probe_heads,
                                  depth=probe_depth, activation_checkpointing=checkpointing)  # fmt: skip

    def timed(fn) -> float:
        fn()  # warm-up: first-call allocations
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    clip = torch.zeros(1, 3, args.frames, args.resolution, args.resolution)
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
    heads = len(args.lrs) * len(args.wds)
    train_s = num_train * (args.segments * clip_s + heads * head_s) / world
    val_s = num_val * args.views * (args.segments * clip_s + heads * head_s / 3) / world
    return (f"estimated time per epoch on this CPU: ~{(train_s + val_s) / 3600:.1f} h (train {num_train} videos x "
            f"{(train_s * world / max(num_train, 1)):.0f} s, val {num_val} x {(val_s * world / max(num_val, 1)):.0f} s; "
            f"{heads} heads over {tokens} tokens per view dominate: fewer --segments/--frames or a GPU cut it)")


def probe_summary(args) -> str:
    return f"lr {args.lrs} x wd {args.wds}, depth {args.probe_depth}, {args.probe_heads} attention heads"


def build_results(args, specs, history, skipped, encoder, class_names, num_classes, num_train, num_val, world, seconds,
                  *, batching: dict, out_layers: list[int] | None) -> dict:  # fmt: skip
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
        encoder=describe_encoder(encoder, args.model),
        data=dict(train_manifest=config["train_csv"], val_manifest=config["val_csv"], num_train=num_train,
                  num_val=num_val, num_classes=num_classes, class_names=list(class_names),
                  train_samples_used=history["num_train"][-1], val_samples_scored=history["num_val"][-1]),  # fmt: skip
        num_processes=world,
        **batching,
        probe_out_layers=out_layers,
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
    meta = head_metadata(specs[best], best, head, class_names, encoder=args.model,
                                 val_top1=results["best_head"]["val_top1"])  # fmt: skip
    save_probe_weights(out / "probe.safetensors", head, meta)
    if args.save_all_heads:
        save_all_heads(out / "probe_heads.safetensors", probe, {"class_names": json.dumps(list(class_names))})
    curves = {h["name"]: h["val_top1"] for h in results["heads"]}
    best_name = results["best_head"]["name"]
    svg = accuracy_svg(curves, best=best_name)
    write_text_atomically(out / "accuracy.svg", svg, overwrite=True)
    results["plots"] = ["accuracy.svg"] + (["accuracy.png"] if write_accuracy_png(curves, out / "accuracy.png", best_name) else [])
    runs.write_json(out / "results.json", results)

    if args.save_classifier or args.push_to_hub:
        folder = Path(args.save_classifier or out / "classifier")
        model = build_classifier(encoder.cpu(), head.cpu(), class_names, frames=args.frames, resolution=args.resolution,
                                 out_layers=results["probe_out_layers"])  # fmt: skip
        card = classifier_model_card(results, args.push_to_hub)
        save_repo_folder(model, folder, model_card=card, safetensors_metadata={k: v for k, v in meta.items() if k != "format"},
                         extra_files={"probe_results.json": runs.to_json(results)}, overwrite=True)  # fmt: skip
        results["classifier_folder"] = str(folder)
        if args.push_to_hub:
            results["pushed"] = push_folder(folder, args.push_to_hub, private=args.hub_private,
                                            commit_message="Upload frozen attentive probe (hf_vjepa_area k400_probe)")  # fmt: skip
        runs.write_json(out / "results.json", results)


# ---- run management: checkpoints, results, plots, the classifier repo ------------------------------


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


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_DASHES = ("", "6,3", "2,2", "8,3,2,3")


def accuracy_svg(curves: dict[str, Sequence[float]], *, title: str = "val top-1 per head", best: str | None = None,
                 width: int = 760, height: int = 420) -> str:  # fmt: skip
    """A small self-contained SVG line chart: one line per head, x = epoch (1..E), y = top-1 (%)."""
    left, right, top, bottom = 56, 190, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    epochs = max((len(v) for v in curves.values()), default=1)
    values = [y for v in curves.values() for y in v if y == y]  # drop NaN
    low, high = max(0.0, min(values, default=0.0) - 2), min(100.0, max(values, default=100.0) + 2)
    tick = next(t for t in (1, 2, 5, 10, 20, 25, 50, 100) if (high - low) / t <= 8)
    low, high = math.floor(low / tick) * tick, math.ceil(high / tick) * tick
    if high <= low:
        low, high = low - tick, high + tick

    def x(epoch: int) -> float:  # epoch from 1
        return left + (plot_w * (epoch - 1) / (epochs - 1) if epochs > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - low) / (high - low))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14">{html.escape(title)}</text>',
    ]
    for i in range(round((high - low) / tick) + 1):  # horizontal grid and y labels
        value = low + i * tick
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>')
    step = max(1, math.ceil(epochs / 10))
    for epoch in range(1, epochs + 1, step):
        out.append(f'<text x="{x(epoch):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{epoch}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">epoch</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2:.1f}" transform="rotate(-90 14 {top + plot_h / 2:.1f})" '
               'text-anchor="middle">top-1 (%)</text>')  # fmt: skip
    for i, (name, series) in enumerate(curves.items()):
        colour, dash = _PALETTE[i % len(_PALETTE)], _DASHES[(i // len(_PALETTE)) % len(_DASHES)]
        stroke = 3 if name == best else 1.5
        points = " ".join(f"{x(e + 1):.1f},{y(v):.1f}" for e, v in enumerate(series) if v == v)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{stroke}"{dash_attr}/>')
        for e, v in enumerate(series):
            if v == v:
                out.append(f'<circle cx="{x(e + 1):.1f}" cy="{y(v):.1f}" r="2" fill="{colour}"/>')
        ly = top + 8 + 15 * i
        label = html.escape(name + (" (best)" if name == best else ""))
        out.append(f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 34}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="{stroke}"{dash_attr}/>')  # fmt: skip
        out.append(f'<text x="{left + plot_w + 40}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_accuracy_png(curves: dict[str, Sequence[float]], path: Path, best: str | None = None) -> bool:
    """The same chart as a PNG when matplotlib is installed (it is optional); returns whether it wrote."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, series in curves.items():
        ax.plot(range(1, len(series) + 1), series, marker="o", lw=3 if name == best else 1.5, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    try:
        write_atomically(Path(path), lambda temp: fig.savefig(temp, format="png", dpi=120))
    finally:
        plt.close(fig)
    return True


def head_metadata(spec: probing.HeadSpec, index: int, head: AttentiveClassifier, class_names: Sequence[str], **extra: Any) -> dict[str, str]:
    pooler = head.pooler
    meta = {
        "format": "pt",
        "kind": "vjepa2_attentive_classifier",
        "head_index": str(index),
        "lr": repr(spec.lr),
        "weight_decay": repr(spec.weight_decay),
        "embed_dim": str(pooler.query_tokens.shape[-1]),
        "num_classes": str(len(class_names)),
        "probe_depth": str(len(pooler.blocks) + 1),
        "probe_num_heads": str(pooler.cross_attention_block.xattn.num_heads),
        "class_names": json.dumps(list(class_names)),
    }
    meta.update({key: str(value) for key, value in extra.items()})
    return meta


def save_probe_weights(path: Path, head: AttentiveClassifier, metadata: dict[str, str]) -> None:
    """One head in V-JEPA 2's `AttentiveClassifier` key names (`pooler.*`, `linear.*`), atomically."""
    from safetensors.torch import save_file

    state = {key: value.detach().cpu().contiguous() for key, value in head.state_dict().items()}
    write_atomically(path, lambda temp: save_file(state, str(temp), metadata=metadata))


def save_all_heads(path: Path, probe: probing.MultiHeadProbe, metadata: dict[str, str]) -> None:
    """Every head, keys `heads.{i}.pooler.*` / `heads.{i}.linear.*`; metadata lists the grid."""
    from safetensors.torch import save_file

    state = {key: value.detach().cpu().contiguous() for key, value in probe.state_dict().items()}
    grid = [{"lr": s.lr, "weight_decay": s.weight_decay} for s in probe.specs]
    metadata = {"format": "pt", **metadata, "grid": json.dumps(grid)}
    write_atomically(path, lambda temp: save_file(state, str(temp), metadata=metadata))


def build_classifier(encoder: nn.Module, head: AttentiveClassifier, class_names: Sequence[str], *,
                     frames: int | None = None, resolution: int | None = None,
                     out_layers: Sequence[int] | None = None) -> VJEPA2AreaForVideoClassification:  # fmt: skip
    """A `VJEPA2AreaForVideoClassification` with the encoder's weights and a trained probe head.

    Its `forward` classifies one clip (`pixel_values_videos [B, T, C, H, W]`). The probe was trained on
    S segments' tokens concatenated per view; to score a video the way the probe was evaluated, encode
    each segment and view, join with `group_views` and run `model.head` (see docs/probe.md).
    `frames` / `resolution` (the probe's clip size) become the config's `num_frames` / `img_size`, so the
    saved video processor crops like the probe did; RoPE encoders only (others have a sized pos_embed).
    `out_layers` (the blocks a multi-level probe read) becomes `probe_out_layers`.
    """
    pooler = head.pooler
    fields = {k: v for k, v in encoder.config.to_dict().items()
              if k not in ("architectures", "auto_map", "model_type", "transformers_version")}  # fmt: skip
    fields.update(
        id2label={i: str(name) for i, name in enumerate(class_names)},
        label2id={str(name): i for i, name in enumerate(class_names)},
        probe_depth=len(pooler.blocks) + 1,
        probe_num_heads=pooler.cross_attention_block.xattn.num_heads,
        probe_out_layers=list(out_layers) if out_layers is not None else None,
    )
    config = VJEPA2AreaConfig(**fields)
    if encoder.config.use_rope and (frames or resolution):
        sized = {**fields, "num_frames": frames or config.num_frames, "img_size": resolution or config.img_size}
        try:
            config = VJEPA2AreaConfig(**sized)
        except ValueError:  # e.g. area splits larger than that grid: keep the encoder's own size
            pass
    model = VJEPA2AreaForVideoClassification(config)
    model.encoder.load_state_dict(encoder.state_dict())
    model.head.load_state_dict(head.state_dict())
    return model.eval()


def probe_input(out_layers) -> str:
    if out_layers is None:
        return "the last block's tokens"
    return f"the tokens of blocks {list(out_layers)}, each through the final norm, concatenated (multi-level)"


def classifier_model_card(results: dict, repo_id: str | None = None) -> str:
    best = results["best_head"]
    encoder = results["encoder"]
    data = results["data"]
    config = results["config"]
    if config.get("cache_features"):
        augmentation = "none (cached features of the centre view of each segment)"
    else:
        augmentation = (f"random resized crop, RandAugment {'on' if config.get('auto_augment') else 'off'}, "
                        f"random erasing p {config.get('erase_prob') or 0:g}")  # fmt: skip
    protocol = results["protocol_global_batch_size"]
    batch_note = (f"V-JEPA 2's protocol" if results["matches_protocol_batch"] else
                  f"V-JEPA 2's protocol: {protocol}" if protocol else "no V-JEPA 2 protocol")  # fmt: skip
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: video-classification",
        "tags: [vjepa2, video, attentive-probe, st-a2]",
        "---",
        f"# {repo_id or 'V-JEPA 2 frozen attentive probe'}",
        "",
        f"A frozen `{encoder['model']}` encoder with a V-JEPA 2 attentive probe "
        f"({config['probe_depth']} blocks, {config['probe_heads']} heads) trained by `examples/k400_probe.py` of "
        "hf_vjepa_area.",
        "",
        f"- classes: {data['num_classes']} (train {data['num_train']}, val {data['num_val']} videos)",
        f"- clips: {config['frames']} frames, step {config['frame_step']}, {config['segments']} segments x "
        f"{config['views']} views at {config['resolution']} px",
        f"- probe input: {probe_input(results['probe_out_layers'])}",
        f"- training augmentation: {augmentation}",
        f"- global batch {results['global_batch_size']} ({batch_note})",
        f"- area attention: splits {encoder['area_splits']}, layers {encoder['area_layers']}",
        f"- best head of the lr x wd grid: lr {best['lr']:g}, weight decay {best['weight_decay']:g}; "
        f"val top-1 {best['val_top1']:.2f}% (epoch {best['epoch']})",
        "",
        "`model(pixel_values_videos)` classifies one clip; the reported accuracy averages the softmax over "
        "views with the segments' tokens concatenated, as in V-JEPA 2 (docs/probe.md shows how).",
    ]
    return "\n".join(lines) + "\n"



if __name__ == "__main__":
    run_main(main)
