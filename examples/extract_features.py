#!/usr/bin/env python
r"""Frozen V-JEPA 2 (ST-A²) features of every video in a manifest, into one safetensors file.

    python examples/extract_features.py --model hf-vjepa-area/vjepa2-vitl-st-a2 --manifest k400/val.csv \
        --output val_features.safetensors
    python examples/extract_features.py --model demo --manifest outputs/demo_data/4x40/val.csv --output demo.safetensors

Each video gives `--segments` clips x `--views` crops (V-JEPA 2's eval sampling); per view the segments'
tokens are concatenated, as the attentive probe reads them; `--out-layers multilevel` gives V-JEPA 2's
Diving48/Jester input (four blocks' tokens, each through the final norm, joined per clip). `--pool mean` (default) stores the mean token
[N, V, D]; `--pool none` stores all tokens [N, V, S*T'*H'*W', D] (large: ViT-L at 16 frames x 8 segments x 3 views is ~200 MB per video).
Unreadable videos are skipped and listed in the file's metadata. An existing --output is kept unless
--overwrite; the file is written to a temporary name and renamed, so it is never left half written.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

try:
    import hf_vjepa_area  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safetensors.torch import save_file

from hf_vjepa_area import probing, runs, sources
from hf_vjepa_area.data import VideoClipDataset
from hf_vjepa_area._files import write_atomically


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo", help="Hub id / folder / timm name, or 'demo'")
    p.add_argument("--manifest", required=True, help="V-JEPA 2 manifest: 'path label' per line")
    p.add_argument("--output", required=True)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--frame-step", type=int, default=4)
    p.add_argument("--segments", type=int, default=1)
    p.add_argument("--views", type=int, default=1)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default: the CPUs, at most 8)")
    p.add_argument("--out-layers", default="last", help=probing.OUT_LAYERS_HELP + " (default %(default)s)")
    p.add_argument("--pool", choices=["mean", "none"], default="mean")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = p.parse_args(argv)
    output = Path(args.output)
    if output.exists() and not args.overwrite:  # checked before hours of encoding, not after
        raise SystemExit(f"error: {output} already exists; pass --overwrite to replace it")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        encoder = sources.load_encoder(args.model).to(device)
    except sources.SourceError as error:
        raise SystemExit(f"error: --model {error}") from None
    try:
        out_layers = probing.resolve_out_layers(args.out_layers, encoder.config)
    except ValueError as error:
        raise SystemExit(f"error: --out-layers {args.out_layers}: {error}") from None
    dataset = VideoClipDataset(args.manifest, train=False, frames_per_clip=args.frames, frame_step=args.frame_step,
                               num_segments=args.segments, num_views=args.views, crop_size=args.resolution)  # fmt: skip
    data = probing.extract_features(
        encoder, dataset, device=device, num_segments=args.segments, num_views=args.views,
        pool=(lambda tokens: tokens.mean(2)) if args.pool == "mean" else None, batch_size=args.batch_size,
        num_workers=runs.resolve_num_workers(args.num_workers), autocast_dtype=runs.autocast_dtype("auto"),
        out_layers=out_layers,
    )  # fmt: skip
    if not len(data["labels"]):
        raise SystemExit(f"error: no readable video in {args.manifest}")
    skipped = [path for _, path in data["skipped"]]
    runs.SkippedFiles().add(skipped)  # names each unreadable file once
    metadata = {"model": args.model, "pool": args.pool, "skipped": json.dumps(skipped), "out_layers": json.dumps(out_layers),
                **{k: str(v) for k, v in vars(args).items() if k in ("frames", "frame_step", "segments", "views", "resolution")}}  # fmt: skip
    tensors = {key: data[key].contiguous() for key in ("features", "labels", "indices")}
    # Through a temporary file and a rename: a killed run never leaves half a file under --output.
    write_atomically(output, lambda temp: save_file(tensors, str(temp), metadata=metadata))
    print(f"{args.output}: features {tuple(tensors['features'].shape)} of {len(dataset) - len(skipped)} videos; "
          f"{len(skipped)} skipped")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.main(main))
