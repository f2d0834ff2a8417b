"""Command line for the manifest builder (`kinetics.py`). Build train first, then reuse its classes:

    python -m hf_vjepa_area.data.manifest folder /data/k400/train train.csv
    python -m hf_vjepa_area.data.manifest annotations validate.csv /data/k400/val val.csv --classes train_classes.txt
"""

from __future__ import annotations

import argparse
import logging

from .kinetics import VIDEO_EXTENSIONS, build_manifest_from_annotations, build_manifest_from_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_vjepa_area.data.manifest",
        description="Write a V-JEPA 2 manifest ('path label' per line) and its class list.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    folder = commands.add_parser(
        "folder", help="from VIDEO_ROOT/<class_name>/*.mp4 and frame folders VIDEO_ROOT/<class_name>/<video>/*.jpg"
    )
    folder.add_argument("video_root")
    folder.add_argument("output")
    folder.add_argument("--extensions", nargs="+", default=list(VIDEO_EXTENSIONS))
    annotated = commands.add_parser("annotations", help="from a Kinetics annotation CSV")
    annotated.add_argument("annotations", help="CSV with label,youtube_id,time_start,time_end[,split]")
    annotated.add_argument("video_root", help="folder searched recursively for {youtube_id}_{start:06d}_{end:06d}.mp4")
    annotated.add_argument("output")
    annotated.add_argument("--split", help="keep only rows whose 'split' column equals this")
    for command in (folder, annotated):
        command.add_argument("--classes", help="existing class list to reuse (e.g. the train split's)")
        command.add_argument("--relative", action="store_true", help="paths relative to the manifest's folder")
        command.add_argument("--overwrite", action="store_true", help="replace an existing manifest / class list")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    common = dict(classes=args.classes, relative=args.relative, overwrite=args.overwrite)
    try:
        if args.command == "folder":
            summary = build_manifest_from_folder(args.video_root, args.output, extensions=args.extensions, **common)
        else:
            summary = build_manifest_from_annotations(
                args.annotations, args.video_root, args.output, split=args.split, **common
            )
    except (FileExistsError, ValueError, NotADirectoryError) as error:
        parser.exit(2, f"error: {error}\n")
    print(
        f"wrote {summary.manifest}: {summary.num_videos} videos, {summary.num_classes} classes "
        f"(class list {summary.classes_file}); {len(summary.missing)} annotated clips missing"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
