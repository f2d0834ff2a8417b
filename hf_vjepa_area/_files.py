"""Atomic writes of files and folders, shared by the Hub folders, the converter, run checkpoints, the manifest
builder, the synthetic data set and the probe outputs.

At the package top level (not in `data`), so that modules which need no video decoding can use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The modes `open()` and `mkdir()` give: written files and folders look like the user's other ones (safetensors
# and `tempfile.mkdtemp` create theirs private).
FILE_MODE = 0o666 & ~_umask()
FOLDER_MODE = 0o777 & ~_umask()


def temporary_sibling(path: Path) -> Path:
    """A hidden name in the same folder, so the final `os.replace` is a same-filesystem rename."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Run `write(temp)` and rename temp onto `path`: readers and reruns never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(path)
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str, *, overwrite: bool) -> None:
    """Write `text` to `path`, refusing to replace an existing file unless `overwrite`."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    write_atomically(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def is_nonempty(path: Path) -> bool:
    """What writing a folder at `path` would replace: a file, or a folder with anything in it."""
    path = Path(path)
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def move_into_place(staged: Path, folder: Path) -> None:
    """Rename a finished folder to `folder`; an existing one is swapped out and removed only after the
    new one is in place, and restored if the rename fails."""
    if not folder.exists():
        staged.rename(folder)
        return
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    folder.rename(old)
    try:
        staged.rename(folder)
    except BaseException:
        old.rename(folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_folder_atomically(folder: Path, write: Callable[[Path], None]) -> None:
    """Run `write(staging)` on an empty folder beside `folder`, then swap it into place: readers and reruns
    see the old folder or the whole new one, and a `write` that raises leaves nothing behind."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.staging-", dir=folder.parent))
    try:
        write(staging)
        staging.chmod(FOLDER_MODE)
        move_into_place(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
