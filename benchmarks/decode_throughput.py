"""Video decode throughput: PyAV vs torchcodec (when it loads) on a generated, Kinetics-like set.

Why: in a frozen-probe run the encoder is fast and decoding often is the bottleneck, so this
measures what the loader does per video: open, pick V-JEPA 2 clip indices, decode them. `train`
is one random 16x4 clip, `eval` the 8 overlapping 16x4 segments of the K400 protocol. The set is
generated once (H.264 mp4, 300 frames = 10 s at 30 fps like a K400 clip) and reused; the first
pass over it only warms the file cache. Decode only: no resizing or normalization.

    python benchmarks/decode_throughput.py                    # 8 videos, 256x256, threads 1 and auto
    python benchmarks/decode_throughput.py --videos 16 --size 320 --threads 1
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from hf_vjepa_area.data import (
    clip_indices,
    make_synthetic_video_dataset,
    open_video,
    read_manifest,
    torchcodec_available,
)

MODES = {"train": dict(num_segments=1, random_offset=True), "eval": dict(num_segments=8, random_offset=False)}


def decode_pass(paths: list[str], backend: str, threads: int, mode: str, generator: torch.Generator) -> tuple[int, int]:
    """Decode every video's clips once; returns (clips, frames) delivered."""
    clips = frames = 0
    for path in paths:
        with open_video(path, backend, threads) as video:
            indices = clip_indices(video.info.num_frames, 16, 4, generator=generator, **MODES[mode])
            frames += len(video.get_frames(indices.reshape(-1)))
            clips += len(indices)
    return clips, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8, help="number of generated videos")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=256, help="frame height = width")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="decoder threads; 0 = FFmpeg's choice")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the set")
    parser.add_argument("--root", help="where to generate (and reuse) the videos; default: a temp folder")
    args = parser.parse_args()

    root = Path(args.root) if args.root else Path(tempfile.gettempdir()) / "hf_vjepa_area_decode_bench"
    root = root / f"{args.videos}x{args.frames}f_{args.size}px"
    start = time.perf_counter()
    data = make_synthetic_video_dataset(root, num_classes=1, videos_per_class=args.videos, frames=args.frames,
                                        size=args.size, fps=30, val_fraction=1 / args.videos)  # fmt: skip
    paths = [entry.path for manifest in (data.train_manifest, data.val_manifest) for entry in read_manifest(manifest)]
    print(f"{len(paths)} videos ({data.encoder}, {args.frames} frames, {args.size}x{args.size}) in {root}, "
          f"ready in {time.perf_counter() - start:.1f} s")  # fmt: skip
    backends = ["pyav"] + (["torchcodec"] if torchcodec_available() else [])
    print(f"backends: {', '.join(backends)}{'' if torchcodec_available() else ' (torchcodec not available)'}; "
          f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}\n")  # fmt: skip

    header = f"{'backend':<11} {'mode':<5} {'threads':>7} {'clips/s':>9} {'frames/s':>9} {'ms/video':>9}"
    print(header + "\n" + "-" * len(header))
    for backend in backends:
        for mode in MODES:
            for threads in args.threads:
                generator = torch.Generator().manual_seed(0)
                decode_pass(paths, backend, threads, mode, generator)  # warm the file cache
                start = time.perf_counter()
                totals = [decode_pass(paths, backend, threads, mode, generator) for _ in range(args.repeats)]
                seconds = time.perf_counter() - start
                clips, frames = (sum(column) for column in zip(*totals))
                per_video_ms = 1000 * seconds / (len(paths) * args.repeats)
                print(f"{backend:<11} {mode:<5} {threads or 'auto':>7} {clips / seconds:>9.1f} "
                      f"{frames / seconds:>9.0f} {per_video_ms:>9.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
