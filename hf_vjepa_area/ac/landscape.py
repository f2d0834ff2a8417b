"""The planning energy over a grid of two action dimensions (the picture Meta's V-JEPA 2-AC notebook draws),
and a dependency-free PNG heatmap of it (zlib + struct, written atomically)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Callable

import torch

from .._files import write_atomically
from .planning import ACTION_DIM

# Colour map anchors (dark blue -> teal -> yellow, as viridis): low energy dark, high energy bright.
_ANCHORS = torch.tensor([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=torch.float64)


def energy_landscape(energy: Callable[[torch.Tensor], torch.Tensor], dims: tuple[int, int] = (0, 1),
                     extent: float = 0.05, steps: int = 21, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Energies [steps, steps] of one-step action sequences whose `dims` sweep [-extent, extent] (rows: the
    first dim, columns: the second; other action values 0), and the swept values [steps]."""
    values = torch.linspace(-extent, extent, steps, dtype=torch.float64)
    first, second = torch.meshgrid(values, values, indexing="ij")
    actions = torch.zeros(steps * steps, 1, ACTION_DIM, dtype=torch.float64)
    actions[:, 0, dims[0]], actions[:, 0, dims[1]] = first.flatten(), second.flatten()
    out = torch.cat([energy(part.float()).double().cpu() for part in actions.split(chunk or actions.shape[0])])
    return out.view(steps, steps), values


def heatmap_rgb(values: torch.Tensor, cell: int = 12, marks: list[tuple[int, int]] = ()) -> torch.Tensor:
    """A [rows, cols] array as uint8 RGB [rows*cell, cols*cell, 3] (min dark, max bright); each (row, col)
    in `marks` gets a white frame."""
    low, high = values.min(), values.max()
    scaled = (values.double() - low) / (high - low) if high > low else torch.zeros_like(values, dtype=torch.float64)
    position = scaled * (len(_ANCHORS) - 1)
    index = position.floor().long().clamp(max=len(_ANCHORS) - 2)
    frac = (position - index).unsqueeze(-1)
    rgb = _ANCHORS[index] * (1 - frac) + _ANCHORS[index + 1] * frac
    image = rgb.round().to(torch.uint8).repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    for row, col in marks:
        box = image[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell]
        box[[0, -1]], box[:, [0, -1]] = 255, 255
    return image


def write_png(path: str | Path, image: torch.Tensor, text: dict[str, str] | None = None) -> None:
    """uint8 RGB [H, W, 3] -> an 8-bit RGB PNG at `path` (atomic), with optional tEXt entries."""
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + bytes(row) for row in image.contiguous().numpy().reshape(height, width * 3))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    blob = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    for key, value in (text or {}).items():
        blob += chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace"))
    blob += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    write_atomically(Path(path), lambda temp: temp.write_bytes(blob))


__all__ = ["energy_landscape", "heatmap_rgb", "write_png"]
