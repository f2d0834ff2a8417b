"""`vjepa2-area-convert` (also `python -m hf_vjepa_area.conversion`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..modeling import VARIANTS
from .convert import DEFAULT_TOLERANCE, VerificationError, convert, export_to_transformers
from ..checkpoint_keys import ConversionError
from .load import PT_OPTIONS

DESCRIPTION = """\
Write a V-JEPA 2 checkpoint as an hf_vjepa_area repo folder (config.json, model.safetensors in the original
key names, predictor.safetensors, modeling files for trust_remote_code, model card), optionally verified
against transformers' implementation, and publish it. No conversion is needed just to use the released
weights: hf_vjepa_area.load_model(...) and timm.create_model("vjepa2_vitl", pretrained=True) read them.

SOURCE is Meta's released encoder .pt (vitl.pt, vith.pt, vitg.pt, vitg-384.pt; the `target_encoder`
entry, as Meta's own hub loader reads: facebookresearch/vjepa2, src/hub/backbones.py; for vjepa2-ac-vitg.pt its
`encoder`, with the action-conditioned predictor written as ac_predictor.safetensors), optionally with
--probe (a released probe .pt), or transformers' V-JEPA 2 (a Hub id such as facebook/vjepa2-vitl-fpc64-256,
or a folder); with --to transformers, one of our folders. Files are read with torch.load(weights_only=True)
or safetensors only: a file that would run code when unpickled is refused.
"""

EPILOG = """\
examples:
  vjepa2-area-convert vitl.pt out/vjepa2-vitl --verify
  vjepa2-area-convert facebook/vjepa2-vitl-fpc64-256 out/vjepa2-vitl-st-a2 --area-splits 2,2,1 --verify
  vjepa2-area-convert vitl.pt out/vjepa2-vitl-ssv2 --probe ssv2-vitl-16x2x3.pt --verify
  vjepa2-area-convert my-vits.pt out/my-vits --variant small --predictor-heads 4 --img-size 64 --num-frames 8 --verify
  vjepa2-area-convert vitl.pt out/vjepa2-vitl-diving48 --probe diving48-vitl-256.pt --verify   # multi-level probe
  vjepa2-area-convert vitl.pt out/vjepa2-vitl --verify --push-to-hub ORG/vjepa2-vitl
  vjepa2-area-convert out/vjepa2-vitl out/vjepa2-vitl-transformers --to transformers

exit status: 0 done, 1 verification failed (nothing written at OUTPUT), 2 refused (bad input or options, or an
unexpected error, in one line; --debug shows its traceback), 3 the upload failed (OUTPUT is complete).
"""


def _ints(text: str) -> list[int]:
    parts = text.replace("x", ",").split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected three positive ints T,H,W (e.g. 2,2,1), got {text!r}")
    return [int(p) for p in parts]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vjepa2-area-convert", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("source", help="Meta .pt, transformers V-JEPA 2 Hub id or folder, or (--to transformers) our folder")
    parser.add_argument("output", help="output folder (written beside it under a temporary name, then renamed into place)")
    parser.add_argument("--to", choices=("hf_vjepa_area", "transformers"), default="hf_vjepa_area",
                        help="'transformers' writes our folder as transformers' VJEPA2Model (full attention)")
    parser.add_argument("--checkpoint-key", help="entry of a .pt holding the encoder (default target_encoder)")
    parser.add_argument("--context-encoder", action="store_true",
                        help="also write the .pt's `encoder` (context) entry as context_encoder.safetensors")
    parser.add_argument("--probe", help="a released probe .pt (classifiers[0]) to convert with the encoder")
    parser.add_argument("--probe-out-layers", metavar="last|multilevel|I,J,...",
                        help="blocks the --probe (or a transformers classifier SOURCE) reads: 'last', 'multilevel' (V-JEPA 2's "
                        "Diving48/Jester four blocks) or indices; default: the released probe's known setting (an unknown "
                        "probe needs it), a transformers classifier's last block")  # fmt: skip
    parser.add_argument("--labels", help="class names of a classifier, one per line")
    parser.add_argument("--variant", choices=list(VARIANTS), help="head count of a size not in the table (sizes come from the tensors)")
    parser.add_argument("--predictor-heads", type=int, metavar="N",
                        help="head count of a .pt's predictor (V-JEPA 2's or V-JEPA 2-AC's) whose width is not a released one (384: 12, AC 1024: 16)")
    parser.add_argument("--img-size", type=int, help="training resolution of a .pt that is not a released file (required there)")
    parser.add_argument("--num-frames", type=int, help="frames per clip of a .pt that is not a released file (required there)")
    parser.add_argument("--revision", help="revision of a Hub-id SOURCE")
    parser.add_argument("--area-splits", type=_ints, metavar="T,H,W", help="area attention: areas along time, height, width")
    parser.add_argument("--area-layers", metavar="START:END", help="blocks with area attention (default the first 75%%)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    parser.add_argument("--verify", action="store_true", help="compare with transformers' implementation on a fixed input; "
                        "report in conversion_report.json; fail above the tolerance")  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"allowed max abs difference, times max(1, max abs of the output) (default {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="create the repo if needed and upload OUTPUT "
                        "(token from HF_TOKEN or `hf auth login`)")  # fmt: skip
    parser.add_argument("--private", action="store_true", help="create the repo private (with --push-to-hub)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    return parser


# Options of `read_source` / `convert` (refused with --to transformers, which exports a folder as is).
READ_OPTIONS = ("checkpoint_key", *PT_OPTIONS, "revision", "area_splits", "area_layers", "probe_out_layers")
CONVERSION_ONLY = (*READ_OPTIONS, "context_encoder", "probe", "labels")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.private and not args.push_to_hub:
            raise ConversionError("--private: only with --push-to-hub")
        if args.push_to_hub:
            from ..hub import check_repo_id

            check_repo_id(args.push_to_hub)
        given = [f"--{name.replace('_', '-')}" for name in CONVERSION_ONLY if getattr(args, name)]
        if args.to == "transformers":
            if given:
                raise ConversionError(f"{', '.join(given)}: not applicable with --to transformers (the folder is exported as is)")
            report = export_to_transformers(args.source, args.output, overwrite=args.overwrite, tolerance=args.tolerance)
            print(f"exported {report['architecture']} to {args.output} (predictor: {report['predictor']})")
            outputs = report["verification"]["outputs"]
        else:
            labels = [n.strip() for n in Path(args.labels).read_text(encoding="utf-8").splitlines() if n.strip()] if args.labels else None
            options = {name: getattr(args, name) for name in READ_OPTIONS if getattr(args, name)}
            report = convert(args.source, args.output, overwrite=args.overwrite, verify=args.verify, tolerance=args.tolerance,
                             context_encoder=args.context_encoder, probe=args.probe, labels=labels, repo_id=args.push_to_hub,
                             **options)  # fmt: skip
            print(f"wrote {args.output}: {report['architecture']}, variant {report['variant']}, predictor {report['predictor']}")
            outputs = report.get("verification", {}).get("outputs", {})
        for name, entry in outputs.items():
            print(f"verify {name}: max abs diff {entry['max_abs_diff']:.3g} (allowed {entry['allowed']:.3g})")
    except VerificationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ConversionError, OSError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - one line and exit 2 (exit 1 means "verification failed")
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {' '.join(str(err).split())[:500]} (unexpected; --debug shows the traceback)", file=sys.stderr)
        return 2
    if args.push_to_hub:
        from ..hub import push_folder

        try:
            pushed = push_folder(args.output, args.push_to_hub, private=args.private)
        except Exception as err:  # noqa: BLE001 - whatever the Hub client raises, in one line
            if args.debug:
                raise
            print(f"error: upload to {args.push_to_hub} failed ({type(err).__name__}: {' '.join(str(err).split())[:300]}); "
                  f"{args.output} is complete: upload it with `hf upload {args.push_to_hub} {args.output}`", file=sys.stderr)  # fmt: skip
            return 3
        print(f"pushed to {pushed['url']} (commit {pushed['commit']})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
