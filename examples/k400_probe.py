#!/usr/bin/env python
r"""V-JEPA 2's frozen attentive probe, end to end, with accelerate.

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

import dataclasses
import math
import sys
from pathlib import Path

try:
    import hf_vjepa_area  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader

from hf_vjepa_area import probing, runs, sources
from hf_vjepa_area.data import (EvalTransform, GlobalBatchSampler, TrainTransform, VideoClipDataset, collate_skip_none,
                                make_synthetic_video_dataset, read_manifest)
from hf_vjepa_area.data.synthetic import DEMO_VIDEOS, demo_data_root
from hf_vjepa_area.data.transforms import VJEPA2_K400_TRAIN
from hf_vjepa_area.runs import UsageError, setting

# What a run writes in its output dir (--overwrite removes these and nothing else); one checkpoint per epoch.
OUTPUTS = ("checkpoints", "logs", "features", "classifier", "probe.safetensors", "probe_heads.safetensors", "accuracy.svg",
           "accuracy.png", "results.json")  # fmt: skip
CHECKPOINTS = dict(prefix="epoch_", state_file="probe_state.json")

# The protocols. The settings' defaults are V-JEPA 2's K400 frozen eval; each preset changes what its config
# changes. configs/eval/vitl/: k400-area-attn.yaml and ssv2-area-attn.yaml (facebookresearch/vjepa2),
# diving48.yaml, jester.yaml, coin.yaml (the same repo's configs, read from a fork that carries them). All five:
# 4-block 16-head probes, 256 px, bf16, no warmup, cosine to lr 0, constant weight decay; training clips as
# evals/video_classification_frozen/eval.py makes them (`VJEPA2_K400_TRAIN`). `global_batch`: what V-JEPA 2
# trained with (batch x 64 GPUs; lr not rescaled), which gradient accumulation reproduces on any process
# count. Diving48 and Jester read the multi-level input (four blocks, `MULTILEVEL_OUT_LAYERS` per encoder
# size). The demo: small everything, features cached, no protocol batch (its encoder: sources.DEMO_ENCODER_CONFIG).
MULTILEVEL = dict(frames=32, frame_step=2, segments=4, epochs=100, batch_size=2, global_batch=128,
                  lrs=(0.001, 0.0003, 0.0001), wds=(0.8,), out_layers="multilevel")  # fmt: skip
PRESETS = {
    "k400": {},
    "ssv2": dict(segments=2),
    "diving48": MULTILEVEL,
    "jester": MULTILEVEL,
    "coin": dict(batch_size=2, global_batch=128),
    "demo": dict(frames=8, segments=2, views=1, resolution=64, batch_size=8, global_batch=None, lrs=(0.003, 0.001),
                 wds=(0.01, 0.1), probe_depth=1, probe_heads=4, cache_features=True, auto_augment=False, erase_prob=0.0,
                 num_workers=0),
}  # fmt: skip


@dataclasses.dataclass
class ProbeSettings(runs.RunSettings):
    """V-JEPA 2's K400 protocol by default; `--preset` another one, and the demo without --train-csv."""

    PRESETS = PRESETS

    model: str | None = setting(None, "a released source (Meta's vitl.pt, facebook/vjepa2-vitl-fpc64-256 or its folder), "
                                "our folder / Hub id (model_type vjepa2_area), a timm name (vjepa2_vitl_area, "
                                "hf-hub:ORG/NAME), or 'demo' (the built-in random-init encoder; the default without "
                                "--train-csv)", result=True, group="encoder")  # fmt: skip
    area_splits: tuple[int, ...] | None = setting(None, "use ST-A² with these splits", result=True, nargs=3,
                                                  metavar=("T", "H", "W"), group="encoder")  # fmt: skip
    area_layers: str | None = setting(None, "blocks with area attention, e.g. 0:18 (default: the model's, or the first "
                                      "75%)", result=True, group="encoder")  # fmt: skip
    full_attention: bool = setting(False, "turn area attention off (full attention everywhere)", result=True, group="encoder")
    revision: str | None = setting(None, "Hub revision of --model", result=True, group="encoder")
    no_pretrained: bool = setting(False, "random init instead of the weights (debugging)", result=True, group="encoder")
    encoder_dtype: str = setting("auto", "autocast dtype of the frozen encoder (auto: bf16 on a GPU that has it, else "
                                 "fp32)", result=True, choices=["auto", "fp32", "bf16", "fp16"], group="encoder")  # fmt: skip
    encoder_chunk: int = setting(probing.ENCODER_CHUNK, "at most this many clips per encoder forward (0: the whole "
                                 "batch)", group="encoder")  # fmt: skip

    preset: str | None = setting(None, "V-JEPA 2's eval protocol to follow (k400 with --train-csv), or 'demo' (the "
                                 "built-in demo's small settings, e.g. on the SSL demo's videos); options given "
                                 "explicitly override it", choices=list(PRESETS), group="data")  # fmt: skip
    train_csv: str | None = setting(None, "training videos, a V-JEPA 2 manifest ('path label' per line)", result=True,
                                    path=True, group="data")  # fmt: skip
    val_csv: str | None = setting(None, "validation videos, a V-JEPA 2 manifest", result=True, path=True, group="data")
    class_names: str | None = setting(None, "class list, line i = label i (default: <train>_classes.txt or classes.txt "
                                      "beside the manifest)", group="data")  # fmt: skip
    frames: int = setting(16, "frames per clip", result=True, group="data")
    frame_step: int = setting(4, "frame step", result=True, group="data")
    segments: int = setting(8, "temporal segments per video", result=True, group="data")
    views: int = setting(3, "spatial views per segment at eval", result=True, group="data")
    resolution: int = setting(256, "crop size", result=True, group="data")
    min_frames: int = setting(1, "skip videos with fewer frames (1: pad short videos, as V-JEPA 2)", result=True, group="data")
    video_backend: str = setting("auto", "auto: torchcodec for mp4/mov/mkv/webm when it decodes here (faster), else PyAV "
                                 "(exact on every container; torchcodec returns other frames for B-frames in "
                                 "AVI/MPEG-TS)", result=True, choices=["auto", "pyav", "torchcodec"], group="data")  # fmt: skip
    demo_data_root: str | None = setting(None, "where the demo videos are generated (default: "
                                         "outputs/demo_data/CLASSESxVIDEOS, e.g. outputs/demo_data/4x40)", group="data")  # fmt: skip
    demo_classes: int = setting(DEMO_VIDEOS["num_classes"], "demo classes (motion directions), 1-4", result=True, group="data")
    demo_videos_per_class: int = setting(DEMO_VIDEOS["videos_per_class"], "demo videos per class", result=True, group="data")

    epochs: int = setting(20, "training epochs", result=True, group="probe training")
    batch_size: int = setting(4, "videos per process per micro-batch", result=True, group="probe training")
    val_batch_size: int | None = setting(None, "default: --batch-size", group="probe training")
    grad_accum: int | None = setting(None, "micro-batches per optimizer step (default: what reproduces the preset's "
                                     "global batch on this process count and --batch-size)", result=True,
                                     group="probe training")  # fmt: skip
    global_batch: int | None = setting(256, result=True, flag=False)  # the protocol's, see PRESETS
    lrs: tuple[float, ...] = setting((0.005, 0.003, 0.001, 0.0003, 0.0001), "learning rates of the grid", result=True,
                                     group="probe training")  # fmt: skip
    wds: tuple[float, ...] = setting((0.01, 0.1, 0.4, 0.8), "weight decays of the grid", result=True, group="probe training")
    warmup_epochs: float = setting(0.0, "linear warmup", result=True, group="probe training")
    wd_exclude_bias_norm: bool = setting(False, "no weight decay on biases, norms and the query token (V-JEPA 2 decays "
                                         "all)", result=True, group="probe training")  # fmt: skip
    probe_depth: int = setting(4, "attentive probe blocks", result=True, group="probe training")
    probe_heads: int = setting(16, "attention heads of the probe", result=True, group="probe training")
    out_layers: str = setting("last", probing.OUT_LAYERS_HELP, result=True, group="probe training")
    activation_checkpointing: bool | None = setting(None, "keep only each probe block's input for backward and recompute "
                                                    "the rest (about 1/3 more probe compute); default: on when one "
                                                    "head's training graph would exceed "
                                                    f"{probing.CHECKPOINTING_THRESHOLD_BYTES / 2**30:g} GiB",
                                                    group="probe training")  # fmt: skip
    cache_features: bool | None = setting(None, "encode each split once (deterministic train clips, 1 view) and train "
                                          "from the cache (default: off)", result=True, group="probe training")  # fmt: skip
    feature_cache_dir: str | None = setting(None, "default: OUTPUT_DIR/features", group="probe training")
    auto_augment: bool = setting(VJEPA2_K400_TRAIN["auto_augment"], "RandAugment (rand-m7-n4-mstd0.5-inc1, one draw per "
                                 "clip) on training clips; no effect with --cache-features", result=True,
                                 group="probe training")  # fmt: skip
    erase_prob: float = setting(VJEPA2_K400_TRAIN["erase_prob"], "random erasing probability of a training clip, one box "
                                "through all frames; no effect with --cache-features", result=True,
                                group="probe training")  # fmt: skip

    save_all_heads: bool = setting(False, "also write probe_heads.safetensors (every head)", group="outputs")
    save_classifier: str | None = setting(None, "write the best head + encoder as a VJEPA2AreaForVideoClassification repo "
                                          "folder", group="outputs")  # fmt: skip
    push_to_hub: str | None = setting(None, "push that classifier (token: HF_TOKEN or `hf auth login`)", metavar="ORG/NAME",
                                      group="outputs")  # fmt: skip
    hub_private: bool = setting(False, "make the pushed repo private", group="outputs")
    demo: bool = setting(False, flag=False)  # no --train-csv: the built-in demo

    @classmethod
    def choose_preset(cls, given: dict) -> str | None:
        if given.get("train_csv") is None and given.get("preset", "demo") != "demo":
            raise UsageError("--preset needs --train-csv and --val-csv (without them the script runs its built-in demo)")
        return given.get("preset", "k400" if given.get("train_csv") else "demo")

    def complete(self, given: set[str]) -> None:
        super().complete(given)
        self.demo = self.train_csv is None
        if self.demo and self.val_csv:
            raise UsageError("--val-csv needs --train-csv")
        if not self.demo and not self.val_csv:
            raise UsageError("--train-csv needs --val-csv")
        if not self.demo and self.model is None:
            raise UsageError("--train-csv needs --model (a Hub id, folder or timm name; 'demo' for the built-in encoder)")
        self.model = self.model or "demo"
        # one folder per data set: changing its size never meets the old one
        self.demo_data_root = self.demo_data_root or demo_data_root(self.demo_classes, self.demo_videos_per_class)
        self.output_dir = self.output_dir or f"outputs/{self.preset}_probe"
        self.cache_features = bool(self.cache_features)
        self.num_workers = runs.resolve_num_workers(self.num_workers)  # the count used, recorded in the config
        self.val_batch_size = self.val_batch_size or self.batch_size
        for name in ("frames", "frame_step", "segments", "views", "resolution", "epochs", "batch_size", "val_batch_size",
                     "grad_accum", "probe_depth", "probe_heads"):  # fmt: skip
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
        if not 0.0 <= self.erase_prob <= 1.0:
            raise UsageError("--erase-prob must be in [0, 1]")
        if self.push_to_hub and self.push_to_hub.count("/") != 1:
            raise UsageError("--push-to-hub needs ORG/NAME")
        if self.out_layers not in ("last", "multilevel") and not all(v.strip().isdigit() for v in self.out_layers.split(",")):
            raise UsageError(f"--out-layers must be 'last', 'multilevel' or block indices like 17,19,21,23, got {self.out_layers!r}")


def read_manifest_or_exit(flag: str, path: str) -> list:
    """read_manifest, with a one-line error naming the option instead of a traceback."""
    try:
        return read_manifest(path)
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{flag} {path} is a folder; pass the manifest file ('path label' per line)") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"{flag}: {error}") from None


def read_inputs(args: ProbeSettings, accelerator) -> list[str]:
    """The class names, after checking the manifests (generating the demo's videos first) and the classifier
    folder: bad input fails here, before an output dir is touched."""
    if args.save_classifier:
        probing.check_classifier_folder(args.save_classifier, replace=args.overwrite or bool(args.resume))
    if args.demo:
        with accelerator.main_process_first():
            try:
                demo = make_synthetic_video_dataset(args.demo_data_root, num_classes=args.demo_classes,
                                                    videos_per_class=args.demo_videos_per_class,
                                                    frames=DEMO_VIDEOS["frames"], size=DEMO_VIDEOS["size"])  # fmt: skip
            except FileExistsError as error:
                raise UsageError(f"{error}; pass another --demo-data-root (or leave it out: the default depends on "
                                 "--demo-classes and --demo-videos-per-class)") from None  # fmt: skip
            except ValueError as error:
                raise UsageError(f"demo data: {error} (--demo-classes / --demo-videos-per-class)") from None
        args.train_csv, args.val_csv = str(demo.train_manifest), str(demo.val_manifest)
    entries = read_manifest_or_exit("--train-csv", args.train_csv) + read_manifest_or_exit("--val-csv", args.val_csv)
    num_classes = max(e.label for e in entries) + 1
    if args.demo:
        return list(demo.class_names)
    train = Path(args.train_csv)
    for path in [Path(args.class_names)] if args.class_names else [train.with_name(f"{train.stem}_classes.txt"),
                                                                     train.with_name("classes.txt")]:  # fmt: skip
        if path.is_file():
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if len(names) < num_classes:
                raise UsageError(f"{path} names {len(names)} classes but the manifests use labels up to {num_classes - 1}")
            return names
        if args.class_names:
            raise UsageError(f"--class-names {path} does not exist")
    return [f"class_{i}" for i in range(num_classes)]


def video_datasets(args: ProbeSettings) -> tuple[VideoClipDataset, VideoClipDataset]:
    """Training clips (V-JEPA 2's augmentation, or deterministic centre views to cache) and eval clips."""
    clips = dict(frames_per_clip=args.frames, frame_step=args.frame_step, num_segments=args.segments,
                 crop_size=args.resolution, min_frames=args.min_frames, backend=args.video_backend)  # fmt: skip
    if args.cache_features:
        train = VideoClipDataset(args.train_csv, train=False, num_views=1, **clips)
    else:
        augment = {**VJEPA2_K400_TRAIN, "auto_augment": args.auto_augment, "erase_prob": args.erase_prob}
        train = VideoClipDataset(args.train_csv, train=True, num_views=1, transform=TrainTransform(args.resolution, **augment), **clips)
    val = VideoClipDataset(args.val_csv, train=False, num_views=args.views, transform=EvalTransform(args.resolution, args.views), **clips)
    return train, val


def probe_data(args: ProbeSettings, run: runs.Run, encoder, encode: dict) -> tuple:
    """Training and validation sets (seeded video clips, or tokens from the feature cache), their loaders, the
    videos the cache skipped (`{split: {index: path}}`) and the manifests' sizes."""
    train_videos, val_videos = video_datasets(args)
    if args.cache_features:
        cache = dict(encoder=encoder, accelerator=run.accelerator, model=args.model, crop_size=args.resolution,
                     batch_size=args.val_batch_size, num_workers=run.num_workers,
                     progress=run.is_main and not args.no_progress, **encode)  # fmt: skip
        folder = Path(args.feature_cache_dir or run.out / "features")
        splits = {"train": probing.cached_split(folder / "train.safetensors", dataset=train_videos, num_views=1, **cache),
                  "val": probing.cached_split(folder / "val.safetensors", dataset=val_videos, num_views=args.views, **cache)}  # fmt: skip
        train_set, val_set = (probing.FeatureDataset(s["features"], s["labels"], s["indices"]) for s in splits.values())
        skipped = {split: dict(data["skipped"]) for split, data in splits.items()}
        loader_args = dict(collate_fn=probing.collate_features)
    else:
        train_set, val_set = probing.SeededSamples(train_videos, args.seed), val_videos
        skipped = {"train": {}, "val": {}}
        loader_args = dict(collate_fn=collate_skip_none, num_workers=run.num_workers)
    if len(train_set) == 0 or len(val_set) == 0:
        raise UsageError(f"no usable videos (train {len(train_set)}, val {len(val_set)}); skipped: {skipped}")
    # Our sampler, not accelerate's sharding: global batches split across processes without padding, so every
    # step trains on the same samples for any process count.
    shard = dict(rank=run.accelerator.process_index, num_replicas=run.world)
    train = GlobalBatchSampler(len(train_set), args.batch_size, shuffle=True, seed=args.seed, **shard)
    val = GlobalBatchSampler(len(val_set), args.val_batch_size, **shard)
    return (train_set, val_set, DataLoader(train_set, batch_sampler=train, **loader_args),
            DataLoader(val_set, batch_sampler=val, **loader_args), skipped, (len(train_videos), len(val_videos)))  # fmt: skip


def check_read(args: ProbeSettings, epoch: int, summaries: dict, skipped: dict) -> None:
    """Stop with one line when not one video of a split could be read this epoch (the summaries are the
    same on every process: the records are gathered)."""
    for split, summary in summaries.items():
        if summary["num_samples"] == 0:
            raise UsageError(
                f"epoch {epoch + 1}: not one {split} video could be read ({len(skipped[split])} skipped, e.g. "
                f"{sorted(set(skipped[split].values()))[:3]}); see the warnings above, fix the paths in "
                f"{getattr(args, f'{split}_csv')} or the files, and run again"
            )  # fmt: skip


def build_probe(args: ProbeSettings, dim: int, num_classes: int, n_tokens: int, steps_per_epoch: int) -> tuple:
    """The heads of the lr x wd grid (seeded: their init depends on nothing else), one AdamW, the schedule."""
    set_seed(args.seed)
    checkpointing = args.activation_checkpointing
    if checkpointing is None:  # one training view per video
        checkpointing = probing.head_activation_bytes(args.batch_size * n_tokens * dim, args.probe_depth) > probing.CHECKPOINTING_THRESHOLD_BYTES
    probe = probing.MultiHeadProbe(dim, num_classes, probing.hparam_grid(args.lrs, args.wds), num_heads=args.probe_heads,
                                   depth=args.probe_depth, activation_checkpointing=checkpointing)  # fmt: skip
    optimizer = probing.build_optimizer(probe, exclude_bias_and_norm=args.wd_exclude_bias_norm)
    total, warmup = args.epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch)
    return probe, optimizer, probing.build_scheduler(optimizer, total, warmup)


def announce(args: ProbeSettings, run: runs.Run, probe: probing.MultiHeadProbe, encoder, out_layers, n_tokens: int,
             num_train: int, num_val: int, batching: dict, estimate: bool) -> None:  # fmt: skip
    """The run's one-line description, and on CPU for a heavy run an estimate of the time per epoch."""
    dim, num_classes, heads = encoder.config.embed_dim, probe.heads[0].linear.out_features, len(probe.heads)
    run.accelerator.print(
        f"probe: {heads} heads (lr {list(args.lrs)} x wd {list(args.wds)}, depth {args.probe_depth}, {args.probe_heads} "
        f"attention heads) on {dim}-dim tokens [{args.views} views x {n_tokens}] of "
        f"{'the last block' if out_layers is None else f'blocks {out_layers}'}; {num_train} train / {num_val} "
        f"val videos, {num_classes} classes; {run.world} process(es), "
        f"{probing.batching_line(args.preset, args.batch_size, run.world, batching)}; encoder {args.model}"
        f"{' (features cached)' if args.cache_features else f'; RandAugment {args.auto_augment}, random erasing p {args.erase_prob:g}'}"
        f"; preset {args.preset}; activation checkpointing {'on' if probe.activation_checkpointing else 'off'}"
    )
    if run.device.type == "cpu" and n_tokens >= probing.HEAVY_TOKENS and run.is_main and estimate:
        print(probing.estimate_epoch(encoder, frames=args.frames, resolution=args.resolution, segments=args.segments,
                                     views=args.views, num_heads=heads, probe_heads=args.probe_heads,
                                     probe_depth=args.probe_depth, num_classes=num_classes, tokens=n_tokens,
                                     checkpointing=probe.activation_checkpointing, num_train=num_train, num_val=num_val,
                                     world=run.world), flush=True)  # fmt: skip


def main(argv=None) -> int:
    args = ProbeSettings.parse(argv, __doc__)
    # Heads train one at a time (probing.backward_per_head): every DDP pass leaves the others unused.
    run = runs.Run(args, script="k400_probe", outputs=OUTPUTS, **CHECKPOINTS, kwargs_handlers=[
        DistributedDataParallelKwargs(find_unused_parameters=True, gradient_as_bucket_view=True)])  # fmt: skip
    accelerator, device, world = run.accelerator, run.device, run.world
    progress = run.is_main and not args.no_progress
    class_names = read_inputs(args, accelerator)
    num_classes = len(class_names)
    try:
        batching = probing.resolve_batching(args.preset, args.global_batch, args.batch_size, world, args.grad_accum)
    except ValueError as error:
        raise UsageError(str(error)) from None
    run.check_output_dir()

    # ---- frozen encoder, data -----------------------------------------------------------------
    with accelerator.main_process_first():
        try:
            area = sources.AreaOptions(args.area_splits, args.area_layers, args.full_attention)
            encoder = sources.load_encoder(args.model, area=area, pretrained=not args.no_pretrained, revision=args.revision,
                                           seed=args.seed)  # fmt: skip
        except sources.SourceError as error:  # a name, folder or area option the encoder cannot take
            raise UsageError(f"--model {error}") from None
    try:
        out_layers = probing.resolve_out_layers(args.out_layers, encoder.config)
    except ValueError as error:
        raise UsageError(f"--out-layers {args.out_layers}: {error}") from None
    run.start_output_dir()
    encoder.to(device)
    dim = encoder.config.embed_dim
    n_tokens = args.segments * probing.tokens_per_clip(encoder.config, args.frames, args.resolution, out_layers)
    encode = dict(autocast_dtype=runs.autocast_dtype(args.encoder_dtype), chunk_size=args.encoder_chunk, out_layers=out_layers)
    train_set, val_set, train_loader, val_loader, skipped, sizes = probe_data(args, run, encoder, encode)

    probe, optimizer, scheduler = build_probe(args, dim, num_classes, n_tokens, math.ceil(len(train_loader) / batching["grad_accum"]))
    probe, optimizer = accelerator.prepare(probe, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # stepped by us, once per optimizer step
    state = run.resume() or dict(epoch=0, history={}, skipped={})
    # Each unreadable video named once in the log: those the feature cache skipped now, the others as met.
    named = runs.SkippedFiles(accelerator, counts={path: 1 for split in state["skipped"].values() for path in split.values()})
    named.add(sorted({path for split in skipped.values() for path in split.values()}) if run.is_main else [])
    for split, recorded in state["skipped"].items():
        skipped[split].update({int(k): v for k, v in recorded.items()})
    run.init_trackers()

    specs = accelerator.unwrap_model(probe).specs
    announce(args, run, accelerator.unwrap_model(probe), encoder, out_layers, n_tokens, len(train_set), len(val_set), batching,
             estimate=state["epoch"] < args.epochs)  # fmt: skip

    # ---- epochs -------------------------------------------------------------------------------
    history = state["history"]
    for epoch in range(state["epoch"], args.epochs):
        train_loader.batch_sampler.set_epoch(epoch)
        if isinstance(train_set, probing.SeededSamples):
            train_set.set_epoch(epoch)
        name = f"epoch {epoch + 1}/{args.epochs}"
        records, local = probing.train_one_epoch(
            accelerator, probe, optimizer, scheduler, train_loader, probing.batch_tokens(encoder, device, args.segments, 1, **encode),
            empty_tokens_shape=(1, n_tokens, dim), grad_accum=batching["grad_accum"], progress=progress, desc=f"{name} train",
        )  # fmt: skip
        train = probing.summarize_records(probing.gather_records(records))
        skipped["train"].update({item.index: item.path for item in named.add(local)})
        records, local = probing.evaluate(accelerator, probe, val_loader, probing.batch_tokens(encoder, device, args.segments, args.views, **encode),
                                          progress=progress, desc=f"{name} val")  # fmt: skip
        val = probing.summarize_records(probing.gather_records(records))
        skipped["val"].update({item.index: item.path for item in named.add(local)})
        check_read(args, epoch, {"train": train, "val": val}, skipped)
        best = probing.add_epoch(history, train, val)
        accelerator.print(f"{name}: best head {specs[best].name}: val top-1 {val['top1'][best]:.2f}%, train loss "
                          f"{train['loss'][best]:.4f}; skipped videos {len(skipped['train'])} train, {len(skipped['val'])} val")  # fmt: skip
        run.log(probing.epoch_scalars(specs, train, val, skipped=len(skipped["train"]) + len(skipped["val"])), step=epoch + 1)
        run.save_checkpoint(epoch + 1, dict(epoch=epoch + 1, history=history, skipped=skipped))

    # ---- results ------------------------------------------------------------------------------
    results = probing.build_results(args.to_config(), specs, history, skipped, encoder, class_names, num_classes=num_classes,
                                    num_train=sizes[0], num_val=sizes[1], world=world, seconds=run.elapsed,
                                    batching=batching, out_layers=out_layers)  # fmt: skip
    if run.is_main:
        probing.write_probe_outputs(run.out, results, accelerator.unwrap_model(probe), encoder, class_names,
                                    all_heads=args.save_all_heads, classifier_folder=args.save_classifier,
                                    push_to_hub=args.push_to_hub, hub_private=args.hub_private, frames=args.frames,
                                    resolution=args.resolution)  # fmt: skip
        best = results["best_head"]
        print(f"\nbest head {best['name']}: val top-1 {best['val_top1']:.2f}% (chance {100 / num_classes:.1f}%), "
              f"{results['skipped_videos']['total']} video(s) skipped; {run.elapsed:.0f} s. Results in {run.out}/results.json")  # fmt: skip
    run.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.main(main))
