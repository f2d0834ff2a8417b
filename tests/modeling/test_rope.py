"""3-axis RoPE: the released layout, and attention scores that depend only on relative positions."""

import torch

from hf_vjepa_area.modeling.rope import apply_rope, build_rope_tables, rope_axis_dim, token_positions
from tests.modeling.reference import rope as reference_rope
from tests.numerics import FLOAT32_RTOL, approx, assert_differs, assert_matches


def test_token_positions_are_raster_tdw():
    grid = (2, 3, 4)
    pos = token_positions(torch.arange(24), grid)
    expected = torch.stack(torch.meshgrid(torch.arange(2), torch.arange(3), torch.arange(4), indexing="ij"), -1)
    assert torch.equal(pos, expected.reshape(24, 3))


def test_matches_per_slice_reference_with_unrotated_tail():
    head_dim = 64  # 3 slices of 20, 4 channels left unrotated
    assert rope_axis_dim(head_dim) == 20
    ids = torch.randperm(60)[:25]
    pos = token_positions(ids, (3, 4, 5))
    for dtype in (torch.float64, torch.float32):
        x = torch.randn(1, 25, 2, head_dim, dtype=dtype)
        for interleave in (False, True):
            ours = apply_rope(x, build_rope_tables(pos.unsqueeze(0), head_dim, interleave, dtype=dtype))
            ref = reference_rope(x[0].transpose(0, 1), pos[:, 0], pos[:, 1], pos[:, 2], interleave).transpose(0, 1)
            assert ours.dtype == dtype
            assert_matches(ours[0], ref)
            assert torch.equal(ours[..., 60:], x[..., 60:])


def test_interleave_flag_changes_the_rotation():
    pos = token_positions(torch.arange(8), (2, 2, 2)).unsqueeze(0)
    x = torch.randn(1, 8, 1, 12)
    tiled = apply_rope(x, build_rope_tables(pos, 12, interleave=False))
    interleaved = apply_rope(x, build_rope_tables(pos, 12, interleave=True))
    assert_differs(tiled, interleaved)


def relative_scores(interleave: bool) -> tuple[float, float, float]:
    head_dim = 48
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, head_dim, generator=gen), torch.randn(1, 1, 1, head_dim, generator=gen)

    def score(pos_q, pos_k):
        tq = build_rope_tables(torch.tensor([[pos_q]]), head_dim, interleave)
        tk = build_rope_tables(torch.tensor([[pos_k]]), head_dim, interleave)
        return (apply_rope(q, tq) * apply_rope(k, tk)).sum().item()

    base = score((1, 2, 3), (0, 5, 1))
    shifted = score((4, 9, 7), (3, 12, 5))  # both moved by (3, 7, 4)
    other_offset = score((1, 2, 3), (0, 5, 2))
    return base, shifted, other_offset


def test_interleaved_rope_scores_depend_only_on_relative_positions():
    base, shifted, other_offset = relative_scores(interleave=True)
    assert shifted == approx(base, rtol=FLOAT32_RTOL)
    assert_differs(other_offset, base, rtol=FLOAT32_RTOL)


def test_released_tiled_rope_is_not_translation_invariant():
    """The released quirk pairs channels j, j+1 that carry different frequencies, so the map is no
    rotation and scores also depend on absolute positions. We reproduce it because the weights
    were trained with it; `rope_interleave=True` is the V-JEPA 2.1 fix."""
    base, shifted, _ = relative_scores(interleave=False)
    assert_differs(shifted, base, rtol=FLOAT32_RTOL)


def test_tables_are_fp32_and_rotation_keeps_dtype_under_bf16():
    pos = token_positions(torch.arange(8), (2, 2, 2)).unsqueeze(0)
    tables = build_rope_tables(pos, 64, dtype=torch.bfloat16)
    assert tables.cos.dtype == torch.float32
    x = torch.randn(1, 8, 2, 64, dtype=torch.bfloat16)
    assert apply_rope(x, tables).dtype == torch.bfloat16
    assert build_rope_tables(pos, 64, dtype=torch.float64).cos.dtype == torch.float64
