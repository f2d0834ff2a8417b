"""Atomic file writes shared by the Hub cache, the manifest builder, the synthetic data set and the probe outputs.

At the package top level (not in `data`), so that modules which need no video decoding can use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


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
