"""How this suite compares floating-point results of two implementations, or of two kernels.

fp32 rounding depends on the CPU's kernels (vector width, blocking, summation order), so two correct
implementations differ by an amount that changes from machine to machine and grows with the outputs'
magnitude. Bounds are therefore relative to the reference: `max|got - expected| <= rtol * max(1, max|expected|)`
(absolute for outputs within +-1, relative for larger ones such as logits).

- Exactness claims (same maths, another implementation) run in float64, where rounding is ~1e-16 and
  `FLOAT64_RTOL` leaves a margin of several thousand while a wrong weight or position still moves the
  outputs by a sizeable fraction of their scale.
- Checks of what users run in float32 use `FLOAT32_RTOL`, the conversion tool's default tolerance.
- `torch.equal` only where the same kernels run on the same inputs (a save/load round trip, a cache).
"""

from __future__ import annotations

import torch

FLOAT64_RTOL = 1e-12
FLOAT32_RTOL = 1e-4


def scaled_max_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max|got - expected| / max(1, max|expected|)."""
    assert got.shape == expected.shape, f"shapes differ: {tuple(got.shape)} vs {tuple(expected.shape)}"
    expected = expected.detach().double()
    diff = (got.detach().double() - expected).abs().max().item()
    return diff / max(1.0, expected.abs().max().item())


def assert_matches(got: torch.Tensor, expected: torch.Tensor, rtol: float | None = None, msg: str = "") -> None:
    """Assert the scaled difference is within `rtol` (default: by the dtype compared, see the module doc)."""
    if rtol is None:
        rtol = FLOAT64_RTOL if expected.dtype == torch.float64 else FLOAT32_RTOL
    scaled = scaled_max_diff(got, expected)
    assert scaled <= rtol, f"{msg}{': ' if msg else ''}max|diff| / max(1, max|expected|) = {scaled:.3g} > {rtol:g}"
