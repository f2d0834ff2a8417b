"""`vjepa2-area-convert` (also `python -m hf_vjepa_area.conversion`)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..modeling import VARIANTS
from .convert import (
    ConvertOptions,
    VerificationError,
    check_inputs_outside_output,
    check_output_path,
    convert,
    existing_conversion,
)
from .push import check_repo_id
from .sources import ConversionError, source_kind
from .verify import DEFAULT_TOLERANCE

DESCRIPTION = """\
Convert a V-JEPA 2 checkpoint into an hf_vjepa_area repo folder (config.json, model.safetensors in the
original key names, modeling files for trust_remote_code, model card), optionally verify it against the
source model, and publish it.

SOURCE is one of:
  * Meta's released encoder .pt (vitl.pt, vith.pt, vitg.pt, vitg-384.pt). The encoder weights are read
    from the `target_encoder` entry by default: that is what Meta's own hub loader reads
    (facebookresearch/vjepa2, src/hub/backbones.py: _make_vjepa2_model(checkpoint_key="target_encoder"))
    and what its frozen evaluations use. Pass --checkpoint-key encoder for the context encoder (read by
    older copies of that loader and by the V-JEPA 2-AC loader).
  * the same with --probe PROBE.pt (e.g. ssv2-vitl-16x2x3.pt): encoder + attentive probe classifier.
  * a transformers V-JEPA 2 folder or Hub id (VJEPA2Model or VJEPA2ForVideoClassification), e.g.
    facebook/vjepa2-vitl-fpc64-256. The JEPA predictor is not converted (listed as dropped).
  * with --to transformers: one of our repo folders, exported back to transformers' V-JEPA 2 format.
A missing SOURCE with a checkpoint suffix (.pt .pth .tar .bin .safetensors .ckpt), or whose first path
component exists here, is reported as a missing local path, never looked up on the Hub.

Files are read with torch.load(weights_only=True) only: a file that would need arbitrary unpickling is refused.
"""

EPILOG = """\
examples:
  vjepa2-area-convert vitl.pt out/vjepa2-vitl --verify
  vjepa2-area-convert vitl.pt out/vjepa2-vitl-st-a2 --area-splits 2,2,1 --area-layers 0:18 --verify
  vjepa2-area-convert vitl.pt out/vjepa2-vitl-ssv2 --probe ssv2-vitl-16x2x3.pt --verify
  vjepa2-area-convert facebook/vjepa2-vitl-fpc64-256 out/vjepa2-vitl --verify --push-to-hub ORG/vjepa2-vitl
  vjepa2-area-convert out/vjepa2-vitl out/vjepa2-vitl-transformers --to transformers \\
      --predictor-from facebook/vjepa2-vitl-fpc64-256

exit status: 0 done, 1 verification failed (nothing written at OUTPUT), 2 refused (bad input or options, or an
unexpected error, reported in one line; --debug shows its traceback), 3 the upload failed (OUTPUT is complete:
run the same command again to resume).
"""


def _area_splits(text: str):
    if text.lower() == "none":
        return None
    parts = [p for p in re.split(r"[,x\s]+", text.strip()) if p]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected three positive ints T,H,W (e.g. 2,2,1) or 'none', got {text!r}")
    return [int(p) for p in parts]


def _area_layers(text: str):
    if ":" in text:
        return text
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected START:END (e.g. 0:18) or a list like 0,1,2; got {text!r}")
    return [int(p) for p in parts]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vjepa2-area-convert",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="Meta .pt file, transformers V-JEPA 2 folder or Hub id, or (--to transformers) our folder")
    parser.add_argument("output", help="output folder (written to a temporary folder, then renamed into place)")
    parser.add_argument("--to", choices=("hf_vjepa_area", "transformers"), default="hf_vjepa_area",
                        help="target format (default: hf_vjepa_area; 'transformers' exports our folder back, full attention)")

    src = parser.add_argument_group("source")
    src.add_argument("--checkpoint-key", default=None,
                     help="entry of the .pt holding the encoder (default: target_encoder, as Meta's hub loader; "
                          "then ema_encoder, encoder if absent)")
    src.add_argument("--probe", default=None, help="Meta probe .pt (classifiers[...]) to convert with the encoder")
    src.add_argument("--probe-index", type=int, default=0, help="which of the probe file's classifiers (default 0)")
    src.add_argument("--probe-num-heads", type=int, default=16, help="probe attention heads (not in the weights; released probes: 16)")
    src.add_argument("--labels", default=None,
                     help="class names of a classifier: .json (list or {id: name}) or .txt (one name a line)")
    src.add_argument("--source-revision", dest="revision", default=None, help="revision of a Hub-id source")
    src.add_argument("--local-files-only", action="store_true", help="resolve Hub ids from the local cache only")

    arch = parser.add_argument_group("architecture (inferred from tensor shapes; these override or complete it)")
    arch.add_argument("--variant", choices=[*VARIANTS, "custom"], default=None,
                      help="check the weights (or a transformers source's config.json) against this size, refusing a mismatch; "
                           "'custom' takes sizes from the shapes and heads from --num-heads")
    arch.add_argument("--num-heads", type=int, default=None, help="attention heads for sizes not in the variant table")
    arch.add_argument("--img-size", type=int, default=None, help="training resolution (default 256, or 384 when the file name has a standalone 384, e.g. vitg-384.pt)")
    arch.add_argument("--num-frames", type=int, default=None, help="training clip length (default 64, or the probe's NxMxK name)")
    arch.add_argument("--rope", dest="use_rope", action=argparse.BooleanOptionalAction, default=None,
                      help="force RoPE on/off (default: RoPE unless the checkpoint carries a pos_embed)")

    area = parser.add_argument_group("area attention (default: none, full attention in every block)")
    area.add_argument("--area-splits", type=_area_splits, default=None, metavar="T,H,W",
                      help="areas along time, height, width, e.g. 2,2,1; 'none' for full attention")
    area.add_argument("--area-layers", type=_area_layers, default=None, metavar="START:END|I,J,...",
                      help="blocks with area attention (default with --area-splits: the first 75%%)")

    out = parser.add_argument_group("output")
    out.add_argument("--dtype", choices=("keep", "float32", "bfloat16", "float16"), default="keep",
                     help="dtype of the written weights (default: keep the source's)")
    out.add_argument("--overwrite", action="store_true",
                     help="replace an existing OUTPUT folder (refused when an input lies inside it, or it is the "
                          "working directory or a parent of it)")
    out.add_argument("--license", default="mit", help="model card license (default mit, as Meta's V-JEPA 2 release)")
    out.add_argument("--base-model", default=None, help="model card base_model (default: the facebook/vjepa2-* of the variant)")
    out.add_argument("--predictor-from", default=None,
                     help="--to transformers: copy the JEPA predictor from this transformers folder / Hub id")
    out.add_argument("--predictor-revision", default=None,
                     help="revision of a Hub-id --predictor-from (default: its main; --source-revision is the SOURCE's)")

    ver = parser.add_argument_group("verification")
    ver.add_argument("--verify", action="store_true",
                     help="run the source model and the written one on a fixed input; write the figures into "
                          "conversion_report.json and the card; fail above --tolerance")
    ver.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help=f"max abs difference allowed, times max(1, max abs of the output) (default {DEFAULT_TOLERANCE:g})")
    ver.add_argument("--verify-frames", type=int, default=None, help="frames of the verification clip (default 2 tubelets)")
    ver.add_argument("--verify-batch", type=int, default=1, help="batch size of the verification input")
    ver.add_argument("--seed", type=int, default=0, help="seed of the verification input")

    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")

    hub = parser.add_argument_group("publishing (token from HF_TOKEN or `hf auth login`, never a flag)")
    hub.add_argument("--push-to-hub", metavar="ORG/NAME", default=None, help="create the repo if needed and upload OUTPUT")
    hub.add_argument("--private", action="store_true", help="create the repo private (only with --push-to-hub)")
    hub.add_argument("--revision", dest="push_revision", default=None, help="branch to upload to (created if missing; only with --push-to-hub)")
    hub.add_argument("--commit-message", default=None, help="message of the upload commit (only with --push-to-hub)")
    return parser


# Options that shape a conversion to hf_vjepa_area; with --to transformers the folder's config and
# weights are exported as they are, so setting any of them is refused rather than ignored.
CONVERT_ONLY = (
    "checkpoint_key", "probe", "probe_index", "probe_num_heads", "labels", "variant", "num_heads", "img_size",
    "num_frames", "use_rope", "area_splits", "area_layers", "dtype", "license", "base_model",
)  # fmt: skip


# Publishing options: without --push-to-hub nothing is uploaded, so setting them is refused, not ignored.
PUSH_ONLY = ("private", "push_revision", "commit_message")


def _given(parser: argparse.ArgumentParser, args, dests) -> list[str]:
    """The flags among `dests` set to something other than their default."""
    flags = {action.dest: "/".join(action.option_strings) for action in parser._actions}
    return [flags[dest] for dest in dests if getattr(args, dest) != parser.get_default(dest)]


def _options(args) -> ConvertOptions:
    return ConvertOptions(
        checkpoint_key=args.checkpoint_key,
        probe=args.probe,
        probe_index=args.probe_index,
        probe_num_heads=args.probe_num_heads,
        labels=args.labels,
        variant=args.variant,
        num_heads=args.num_heads,
        img_size=args.img_size,
        num_frames=args.num_frames,
        use_rope=args.use_rope,
        area_splits=args.area_splits,
        area_layers=args.area_layers,
        dtype=args.dtype,
        verify=args.verify,
        tolerance=args.tolerance,
        verify_frames=args.verify_frames,
        verify_batch=args.verify_batch,
        seed=args.seed,
        revision=args.revision,
        local_files_only=args.local_files_only,
        license=args.license,
        base_model=args.base_model,
        repo_id=args.push_to_hub,
    )


def _summary(report: dict) -> str:
    lines = [f"source: {report['source'].get('description', '')}", f"architecture: {report['architecture']}"]
    if "variant" in report:
        lines.append(f"variant: {report['variant']} (attention: {report.get('attention', 'full')})")
    keys = report.get("keys", {})
    if keys.get("dropped_groups"):
        lines.append(f"dropped: {', '.join(keys['dropped_groups'])}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    verification = report.get("verification")
    if verification:
        for name, entry in verification["equivalence"]["outputs"].items():
            lines.append(f"verify {name}: max abs diff {entry.get('max_abs_diff'):.3g} (tolerance {verification['tolerance']:g})")
        if verification.get("area_deviation"):
            for name, entry in verification["area_deviation"]["outputs"].items():
                lines.append(f"area attention vs source {name}: max abs diff {entry['max_abs_diff']:.3g} (information)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    output = Path(args.output)
    try:
        if args.push_to_hub is None and _given(parser, args, PUSH_ONLY):
            raise ConversionError(f"{', '.join(_given(parser, args, PUSH_ONLY))}: only with --push-to-hub")
        if args.push_to_hub is not None:
            check_repo_id(args.push_to_hub)
        for flag, revision, spec in (("--source-revision", args.revision, args.source),
                                     ("--predictor-revision", args.predictor_revision, args.predictor_from)):
            if revision and spec and Path(spec).expanduser().exists():
                raise ConversionError(f"{flag}: {spec} is a local path, which has no revisions; it applies to Hub ids only")
        if args.to == "transformers":
            ignored = _given(parser, args, CONVERT_ONLY)
            if ignored:
                raise ConversionError(
                    f"{', '.join(ignored)}: not applicable with --to transformers (the folder's config and weights "
                    "are exported as they are)"
                )
            if args.predictor_revision and not args.predictor_from:
                raise ConversionError("--predictor-revision: only with --predictor-from")
            _export(args, output)
        else:
            if args.predictor_from or args.predictor_revision:
                flags = [f for f, v in (("--predictor-from", args.predictor_from), ("--predictor-revision", args.predictor_revision)) if v]
                raise ConversionError(f"{', '.join(flags)}: only with --to transformers")
            if args.probe is None and _given(parser, args, ("probe_index", "probe_num_heads")):
                raise ConversionError(f"{', '.join(_given(parser, args, ('probe_index', 'probe_num_heads')))}: only with --probe")
            options = _options(args)
            reused = None
            if args.push_to_hub and output.exists() and not args.overwrite:
                reused = existing_conversion(output, args.source, options)
            if reused is not None:
                print(_summary(reused))
                print(f"reusing {output}: it already holds this conversion (same inputs sha256 and options); "
                      "pushing it as is")
            else:
                check_inputs_outside_output(output, {"SOURCE": args.source, "--probe": args.probe, "--labels": args.labels})
                check_output_path(output, args.overwrite)
                if source_kind(args.source) == "ours":
                    raise ConversionError(f"{args.source} is already one of our folders: add --to transformers to export it")
                report = convert(args.source, output, options, overwrite=args.overwrite).report
                print(_summary(report))
                print(f"wrote {output}")
        if args.push_to_hub:
            return _push(args, output)
    except VerificationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ConversionError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - reported in one line below; --debug re-raises
        # Not anticipated by the checks above: most likely an input they do not recognise, possibly a bug.
        # One line and exit 2 (exit 1 means "verification failed"); --debug shows the traceback.
        if args.debug:
            raise
        detail = " ".join(str(err).split())[:500]
        print(f"error: {type(err).__name__}: {detail} (unexpected; rerun with --debug for the traceback, and please "
              "report it if the input is valid)", file=sys.stderr)
        return 2
    return 0


def _push(args, output: Path) -> int:
    """Upload the finished OUTPUT; a failed upload (network, permissions) exits 3 and says how to resume."""
    from .push import push_folder

    try:
        pushed = push_folder(
            output, args.push_to_hub, private=args.private, revision=args.push_revision,
            commit_message=args.commit_message,
        )
    except Exception as err:  # noqa: BLE001 - whatever the Hub client raises; shown in one line, --debug re-raises
        if args.debug:
            raise
        detail = " ".join(str(err).split())[:500]
        print(
            f"error: upload of {output} to {args.push_to_hub} failed ({type(err).__name__}: {detail}). {output} is "
            "complete and kept: run the same command again to resume (the folder is reused, and files the Hub "
            "already has are not sent again)",
            file=sys.stderr,
        )
        return 3
    print(f"pushed to {pushed['url']} (revision {pushed['revision']}, commit {pushed['commit']})")
    return 0


def _export(args, output: Path):
    from .export import ExportOptions, existing_export, export_to_transformers

    options = ExportOptions(
        predictor_from=args.predictor_from,
        verify=True,
        tolerance=args.tolerance,
        verify_frames=args.verify_frames,
        verify_batch=args.verify_batch,
        seed=args.seed,
        revision=args.revision,
        predictor_revision=args.predictor_revision,
        local_files_only=args.local_files_only,
    )
    reused = None
    if args.push_to_hub and output.exists() and not args.overwrite:
        reused = existing_export(output, args.source, options)
    if reused is not None:
        print(f"reusing {output}: it already holds this export (same inputs sha256 and options); pushing it as is")
        return reused
    report = export_to_transformers(args.source, output, options, overwrite=args.overwrite).report
    print(f"exported {report['architecture']} to {output}")
    for note in report["notes"]:
        print(f"note: {note}")
    for name, entry in report["verification"]["equivalence"]["outputs"].items():
        print(f"verify {name}: max abs diff {entry['max_abs_diff']:.3g} (tolerance {args.tolerance:g})")
    return report


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
