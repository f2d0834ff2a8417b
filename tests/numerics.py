"""How this suite compares floating-point results of two implementations, or of two kernels.

fp32 rounding depends on the CPU's kernels (vector width, blocking, summation order), so two correct
implementations differ by an amount that changes from machine to machine and grows with the outputs'
magnitude. Bounds are therefore relative to the reference: `max|got - expected| <= rtol * max(1, max|expected|)`
(absolute for outputs within +-1, relative for larger ones such as logits).

- Exactness claims (same maths, another implementation, another process count or summation order) run in
  float64, where rounding is ~1e-16 and `FLOAT64_RTOL` leaves a margin of several thousand while a wrong
  weight or position still moves the outputs by a sizeable fraction of their scale.
- Checks of what users run in float32 use `FLOAT32_RTOL`, the conversion tool's default tolerance.
- `BFLOAT16_RTOL`: what users run in bfloat16 (8 significant bits, ~4e-3 per rounding, a few roundings
  deep) against float32 of the same maths; also the bound on bf16 errors relative to the reference's norm
  (the benchmarks' parity columns, the GPU kernels' tests).
- `SAMPLE_STD_RTOL`: not an equivalence. A random init's sample standard deviation against the std it
  draws from, as a ratio: over the thousands of weights of a tensor its relative spread is ~1/sqrt(2n),
  about 1%, while a wrong init rule (another std, a missing 1/sqrt(2 * layer) rescale) is off by 29% or more.
- `SIMILAR_RTOL`: not an equivalence. Two different computations that should land close, e.g. the first
  SSL loss with area attention and with full attention from the same weights, clips and masks (the
  attention pattern changes, the loss's scale does not); a gross error (a wrong mask, a NaN, a swapped
  target) is still far outside it.
- `SEARCH_RTOL`: not an equivalence. A sampling optimiser (the CEM planner) against the known minimum of its
  energy, as a fraction of the range it searches: it stops within a few percent, where a wrong update rule
  or bound stays near its initial spread (the whole range).
- `PIXEL_MISMATCH_FRACTION`: uint8 pixels of two integer implementations of one resize (ours and OpenCV's),
  as the share of values that may differ by one grey level: OpenCV's builds for other instruction sets may
  round a few values the other way; a wrong rounding rule moves about one value in eight.
- `torch.equal` only where the same kernels run on the same inputs (a save/load round trip, a cache).

Helpers, all under that one scaling:
- `assert_matches(got, expected, rtol=None)`: tensors; rtol by the expected dtype when not given.
- `assert_differs(got, other, factor=100, rtol=None)`: the "the check has teeth" side: the scaled difference
  is over `factor` times the tolerance, so a comparison that passed under `rtol` is not of two equal things.
- `approx(expected, rtol=None)`: Python floats or lists of them, for `==` (pytest.approx with the absolute
  bound `rtol * max(1, max|expected|)`); default `FLOAT64_RTOL`, as Python floats are float64.

tests/test_numerics_rule.py fails on float comparisons in tests/ that bypass these.
"""

from __future__ import annotations

import pytest
import torch

FLOAT64_RTOL = 1e-12
FLOAT32_RTOL = 1e-4
BFLOAT16_RTOL = 2e-2
SIMILAR_RTOL = 5e-2
SAMPLE_STD_RTOL = 0.1
PIXEL_MISMATCH_FRACTION = 1e-3
SEARCH_RTOL = 0.1


def _tensor(value) -> torch.Tensor:
    return value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)


def _default_rtol(expected: torch.Tensor) -> float:
    return FLOAT64_RTOL if expected.dtype == torch.float64 else FLOAT32_RTOL


def scaled_max_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max|got - expected| / max(1, max|expected|)."""
    got, expected = _tensor(got), _tensor(expected)
    assert got.shape == expected.shape, f"shapes differ: {tuple(got.shape)} vs {tuple(expected.shape)}"
    expected = expected.double()
    diff = (got.double() - expected).abs().max().item() if expected.numel() else 0.0
    return diff / max(1.0, expected.abs().max().item() if expected.numel() else 0.0)


def assert_matches(got: torch.Tensor, expected: torch.Tensor, rtol: float | None = None, msg: str = "") -> None:
    """Assert the scaled difference is within `rtol` (default: by the dtype compared, see the module doc)."""
    expected = _tensor(expected)
    if rtol is None:
        rtol = _default_rtol(expected)
    scaled = scaled_max_diff(got, expected)
    assert scaled <= rtol, f"{msg}{': ' if msg else ''}max|diff| / max(1, max|expected|) = {scaled:.3g} > {rtol:g}"


def assert_differs(got: torch.Tensor, other: torch.Tensor, factor: float = 100, rtol: float | None = None,
                   msg: str = "") -> None:
    """Assert the scaled difference exceeds `factor * rtol`: the two differ by far more than rounding."""
    other = _tensor(other)
    if rtol is None:
        rtol = _default_rtol(other)
    scaled = scaled_max_diff(got, other)
    assert scaled > factor * rtol, (
        f"{msg}{': ' if msg else ''}max|diff| / max(1, max|other|) = {scaled:.3g} <= {factor:g} x {rtol:g}"
    )


def approx(expected, rtol: float | None = None):
    """`pytest.approx(expected)` under the suite's rule: absolute bound `rtol * max(1, max|expected|)`, rel=0."""
    rtol = FLOAT64_RTOL if rtol is None else rtol
    values = torch.as_tensor(list(expected.values()) if isinstance(expected, dict) else expected, dtype=torch.float64)
    scale = values.abs().max().item() if values.numel() else 0.0
    return pytest.approx(expected, rel=0, abs=rtol * max(1.0, scale))
