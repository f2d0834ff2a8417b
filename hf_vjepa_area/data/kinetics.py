"""Build V-JEPA 2 manifests (`path label` lines) from a Kinetics-style folder or annotation CSV.

Labels index the sorted class names, so every split and every rerun agrees on them; the class
list is written beside the manifest (`<name>_classes.txt`, line i = label i). Build the other
splits with `classes=` pointing at that file, so a split that lacks a class cannot shift labels.
Command line: `python -m hf_vjepa_area.data.manifest --help`.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .._files import write_text_atomically
from .decoding import list_frames

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
ANNOTATION_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


@dataclass(frozen=True)
class ManifestSummary:
    manifest: Path
    classes_file: Path
    num_videos: int
    num_classes: int
    missing: list[str] = field(default_factory=list)  # annotated clips with no video file


def classes_file_for(manifest: Path) -> Path:
    return manifest.with_name(f"{manifest.stem}_classes.txt")


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Class names, one per line; line i is label i."""
    names = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: class list has duplicate names")
    return names


def kinetics_filename(youtube_id: str, time_start: str, time_end: str) -> str:
    """The file name Kinetics download scripts give a clip: `{id}_{start:06d}_{end:06d}.mp4`."""
    return f"{youtube_id}_{int(float(time_start)):06d}_{int(float(time_end)):06d}.mp4"


def build_manifest_from_folder(
    video_root: str | os.PathLike,
    output: str | os.PathLike,
    *,
    classes: str | os.PathLike | None = None,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    relative: bool = False,
    overwrite: bool = False,
) -> ManifestSummary:
    """Manifest of `video_root/<class_name>/*<ext>`; class names are the sub-folder names.

    A sub-folder of a class folder that holds frames (`decoding.FRAME_EXTENSIONS`, e.g. Jester's
    `<class>/<video_id>/00001.jpg`) is listed as one video, beside the video files.
    """
    video_root = Path(video_root)
    if not video_root.is_dir():
        raise NotADirectoryError(f"{video_root} is not a folder")
    extensions = tuple(ext.lower() for ext in extensions)

    def is_video(path: Path) -> bool:
        if path.is_dir():
            return bool(list_frames(path))
        return path.is_file() and path.suffix.lower() in extensions

    videos = [
        (path, path.parent.name)
        for class_dir in sorted(p for p in video_root.iterdir() if p.is_dir())
        for path in sorted(class_dir.iterdir())
        if is_video(path)
    ]
    return _write_manifest(videos, Path(output), classes, relative, overwrite, missing=[])


def build_manifest_from_annotations(
    annotations: str | os.PathLike,
    video_root: str | os.PathLike,
    output: str | os.PathLike,
    *,
    split: str | None = None,
    classes: str | os.PathLike | None = None,
    relative: bool = False,
    overwrite: bool = False,
) -> ManifestSummary:
    """Manifest from a Kinetics annotation CSV (`label,youtube_id,time_start,time_end,split`).

    Videos are found by file name anywhere under `video_root` (flat or per-class folders both
    work). Annotated clips without a file are common for Kinetics (deleted YouTube videos): they
    are left out, logged and listed in the summary. `split` keeps only rows of that split.
    """
    annotations, video_root = Path(annotations), Path(video_root)
    files_by_name = {path.name: path for path in video_root.rglob("*.mp4")}
    videos, missing = [], []
    with annotations.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        absent = [column for column in ANNOTATION_COLUMNS if column not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"{annotations}: missing column(s) {absent}; expected a header with {ANNOTATION_COLUMNS}")
        for row in reader:
            if split is not None and row.get("split") != split:
                continue
            try:
                name = kinetics_filename(row["youtube_id"], row["time_start"], row["time_end"])
            except ValueError:
                raise ValueError(f"{annotations}:{reader.line_num}: bad time_start/time_end in {row}") from None
            if name in files_by_name:
                videos.append((files_by_name[name], row["label"]))
            else:
                missing.append(name)
    if missing:
        total = len(missing) + len(videos)
        logger.warning("%d of %d annotated clips have no video under %s", len(missing), total, video_root)
    return _write_manifest(videos, Path(output), classes, relative, overwrite, missing)


def _write_manifest(
    videos: list[tuple[Path, str]], output: Path, classes, relative: bool, overwrite: bool, missing: list[str]
) -> ManifestSummary:
    if not videos:
        raise ValueError(f"no videos found for {output}")
    if classes is None:
        class_names = sorted({name for _, name in videos})
        classes_file = classes_file_for(output)
    else:
        class_names, classes_file = read_class_list(classes), Path(classes)
    label_of = {name: label for label, name in enumerate(class_names)}
    unknown = sorted({name for _, name in videos} - label_of.keys())
    if unknown:
        raise ValueError(f"class(es) not in {classes_file}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")

    def manifest_path(path: Path) -> str:
        path = path.resolve()
        return Path(os.path.relpath(path, output.resolve().parent)).as_posix() if relative else str(path)

    outputs = {output: "".join(f"{manifest_path(path)} {label_of[name]}\n" for path, name in videos)}
    if classes is None:
        outputs[classes_file] = "".join(f"{name}\n" for name in class_names)
    existing = [str(path) for path in outputs if path.exists()]
    if existing and not overwrite:  # checked for both files before writing either
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass overwrite=True (--overwrite) to replace")
    for path, text in outputs.items():
        write_text_atomically(path, text, overwrite=True)
    return ManifestSummary(output, classes_file, len(videos), len(class_names), missing)
