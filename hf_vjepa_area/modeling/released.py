"""V-JEPA 2's size table, Meta's released files, and the parsers of block lists.

Facts about the V-JEPA 2 family and pure helpers over them, kept apart from the config class so that
each module stays small. Like the rest of `modeling/`, it ships as remote code: standard library only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

# Encoder sizes of the V-JEPA 2 family. "giant" is the released ViT-g (22 heads of 64).
# "gigantic" has no released weights; the original code intends mlp_ratio 64/13 but a misspelled
# keyword leaves it at 4.0 in one of its builders. We use the intended 64/13.
VARIANTS: dict[str, dict] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "base": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0),
    "giant": dict(embed_dim=1408, depth=40, num_heads=22, mlp_ratio=48 / 11),
    "gigantic": dict(embed_dim=1664, depth=48, num_heads=26, mlp_ratio=64 / 13),
}


def variant_of(config) -> str | None:
    """The named size of a config (width, depth, heads and MLP ratio all equal), or None for a custom size."""
    for name, fields in VARIANTS.items():
        if all(math.isclose(getattr(config, key), value) for key, value in fields.items()):
            return name
    return None


class ReleasedModel(NamedTuple):
    """One of Meta's released V-JEPA 2 encoders (RoPE, patch 16, tubelet 2, pretrained on 64-frame clips)."""

    variant: str
    img_size: int
    num_frames: int
    pt_file: str  # https://dl.fbaipublicfiles.com/vjepa2/<pt_file>
    transformers_repo: str  # the same weights as transformers' VJEPA2Model, with the predictor


# The released encoders, by timm name (`vjepa2_vitl`; `vjepa2_vitl_area` is the same weights with area
# attention). Our converted repo ids are derived from the name: `hub.repo_id_for`.
RELEASED_MODELS: dict[str, ReleasedModel] = {
    "vjepa2_vitl": ReleasedModel("large", 256, 64, "vitl.pt", "facebook/vjepa2-vitl-fpc64-256"),
    "vjepa2_vith": ReleasedModel("huge", 256, 64, "vith.pt", "facebook/vjepa2-vith-fpc64-256"),
    "vjepa2_vitg": ReleasedModel("giant", 256, 64, "vitg.pt", "facebook/vjepa2-vitg-fpc64-256"),
    "vjepa2_vitg_384": ReleasedModel("giant", 384, 64, "vitg-384.pt", "facebook/vjepa2-vitg-fpc64-384"),
}

# Meta's released `.pt` files by name -> (img_size, num_frames) of their encoder: the encoders above, and
# V-JEPA 2-AC's, whose `encoder` entry is the frozen ViT-g of vitg.pt.
RELEASED_PT_FILES: dict[str, tuple[int, int]] = {
    **{r.pt_file: (r.img_size, r.num_frames) for r in RELEASED_MODELS.values()},
    "vjepa2-ac-vitg.pt": (256, 64),
}

# Head counts of the released predictors by width (a checkpoint stores sizes, not heads): 12 heads of 32.
RELEASED_PREDICTOR_HEADS: dict[int, int] = {384: 12}

# V-JEPA 2's multi-level probe input (its Diving48 and Jester evals, `out_layers` of
# `evals/video_classification_frozen/modelcustom/vit_encoder_multiclip_multilevel.py`): the outputs of
# these four blocks, each through the encoder's final norm, concatenated along the token axis.
MULTILEVEL_OUT_LAYERS: dict[str, tuple[int, ...]] = {
    "large": (17, 19, 21, 23),
    "huge": (25, 27, 29, 31),
    "giant": (24, 29, 34, 39),
}


def multilevel_out_layers(config) -> list[int]:
    """The multi-level probe's blocks for `config`'s named size, or a clear error for another size."""
    variant = variant_of(config)
    if variant not in MULTILEVEL_OUT_LAYERS:
        known = ", ".join(f"{name} {list(layers)}" for name, layers in MULTILEVEL_OUT_LAYERS.items())
        raise ValueError(
            f"V-JEPA 2 set multi-level probe blocks for its released sizes only ({known}); this encoder is "
            f"{variant or 'a custom size'} ({config.depth} blocks): name the blocks explicitly, e.g. "
            f"{[max(config.depth - 1 - 2 * i, 0) for i in range(3, -1, -1)]}"
        )
    return list(MULTILEVEL_OUT_LAYERS[variant])


# The prototype's partition: 2 temporal x 2 height splits, width unsplit; its area blocks are the first 75%.
DEFAULT_AREA_SPLITS = (2, 2, 1)
DEFAULT_AREA_FRACTION = 0.75


def parse_area_layers(area_layers, depth: int) -> list[int]:
    """Normalise `area_layers` to a sorted list of block indices.

    Accepts None (the first 75% of blocks, like the prototype's [0, 18) for 24 blocks), a `range`,
    a "start:end" string meaning [start, end), or an explicit list of indices. Two-element lists are
    taken literally as indices: use "0:18" or range(0, 18) for a range.
    """
    if area_layers is None:
        return list(range(int(depth * DEFAULT_AREA_FRACTION)))
    if isinstance(area_layers, str):
        parts = area_layers.split(":")
        if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise ValueError(f"area_layers string must look like 'start:end' (e.g. '0:18'), got {area_layers!r}")
        area_layers = range(int(parts[0]), int(parts[1]))
    if isinstance(area_layers, range):
        area_layers = list(area_layers)
    if not isinstance(area_layers, (list, tuple)) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in area_layers
    ):
        raise ValueError(
            f"area_layers must be None, 'start:end', a range or a list of block indices, got {area_layers!r}"
        )
    layers = sorted(set(int(i) for i in area_layers))
    bad = [i for i in layers if not 0 <= i < depth]
    if bad:
        raise ValueError(f"area_layers {bad} out of range: the encoder has blocks 0..{depth - 1} (depth={depth})")
    return layers


def parse_out_layers(out_layers, depth: int) -> list[int]:
    """Validate block indices read by a multi-level probe: distinct, in range, kept in block order (the
    order the encoder emits them, whatever order they are given in)."""
    if isinstance(out_layers, str):
        parts = [p.strip() for p in out_layers.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"out_layers must be block indices like '17,19,21,23', got {out_layers!r}")
        out_layers = [int(p) for p in parts]
    if not isinstance(out_layers, (list, tuple)) or not out_layers or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in out_layers
    ):
        raise ValueError(f"probe_out_layers must be None or a non-empty list of block indices, got {out_layers!r}")
    if len(set(out_layers)) != len(out_layers):
        raise ValueError(f"probe_out_layers {list(out_layers)} names a block twice")
    bad = [i for i in out_layers if not 0 <= i < depth]
    if bad:
        raise ValueError(f"probe_out_layers {bad} out of range: the encoder has blocks 0..{depth - 1} (depth={depth})")
    return sorted(int(i) for i in out_layers)


def resolve_out_layers(spec, config) -> list[int] | None:
    """`'last'` -> None, `'multilevel'` -> V-JEPA 2's blocks for the encoder's size
    (`MULTILEVEL_OUT_LAYERS`), `'17,19,21,23'` or a list -> those blocks, validated against the encoder's depth."""
    if spec == "last":
        return None
    if spec == "multilevel":
        return multilevel_out_layers(config)
    return parse_out_layers(spec, config.depth)


__all__ = [
    "VARIANTS",
    "variant_of",
    "ReleasedModel",
    "RELEASED_MODELS",
    "RELEASED_PT_FILES",
    "RELEASED_PREDICTOR_HEADS",
    "MULTILEVEL_OUT_LAYERS",
    "multilevel_out_layers",
    "DEFAULT_AREA_SPLITS",
    "DEFAULT_AREA_FRACTION",
    "parse_area_layers",
    "parse_out_layers",
    "resolve_out_layers",
]
