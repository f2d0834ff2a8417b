"""Config from tensor shapes (original checkpoints) or from transformers' config.json, and the key check.

Shapes give embed_dim, depth, patch/tubelet size, channels, MLP width, qkv bias, SwiGLU and (when a
`pos_embed` is present) the token count of a non-RoPE model. They do not give the number of heads:
that comes from the variant table, or from `--num-heads` for sizes not in the table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

from ..modeling import VARIANTS
from .sources import ConversionError


class KeyMismatchError(ConversionError):
    pass


@dataclass
class EncoderShapes:
    embed_dim: int
    depth: int
    in_chans: int
    patch_size: int
    tubelet_size: int | None  # None: a Conv2d (image) patch embedding
    mlp_hidden: int
    use_silu: bool
    qkv_bias: bool
    pos_tokens: int | None

    @property
    def mlp_ratio(self) -> float:
        return self.mlp_hidden / self.embed_dim


# Keys only V-JEPA 2.1 encoders have (per-block norms, a separate image patch embedding, modality embeddings).
_V21_MARKERS = (re.compile(r"^norms_block\."), re.compile(r"^patch_embed_img\."), re.compile(r"(^|\.)\w*_mod_embed$"))


def refuse_unsupported_layouts(state_dict: dict) -> None:
    """Name a V-JEPA 2.1 encoder as such, instead of listing its keys as unexpected one by one."""
    found = sorted(k for k in state_dict if any(marker.search(k) for marker in _V21_MARKERS))
    if found:
        raise ConversionError(
            f"V-JEPA 2.1 checkpoints are not supported (this one has {', '.join(found[:4])}"
            + (f" and {len(found) - 4} more V-JEPA 2.1 keys" if len(found) > 4 else "")
            + "): only V-JEPA 2 (and V-JEPA 1-style) encoders convert"
        )


def encoder_shapes(state_dict: dict, prefix: str = "") -> EncoderShapes:
    def get(name):
        key = prefix + name
        if key not in state_dict:
            raise KeyMismatchError(
                f"missing key {key!r}: this does not look like a V-JEPA encoder state dict "
                f"(first keys: {sorted(state_dict)[:6]})"
            )
        return state_dict[key]

    patch = get("patch_embed.proj.weight")
    if patch.ndim not in (4, 5):
        raise KeyMismatchError(f"{prefix}patch_embed.proj.weight has shape {tuple(patch.shape)}: expected a Conv2d/Conv3d kernel")
    block_ids = {
        int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))
    }
    if not block_ids:
        raise KeyMismatchError(f"no {prefix}blocks.* keys: this does not look like a V-JEPA encoder state dict")
    depth = max(block_ids) + 1
    holes = sorted(set(range(depth)) - block_ids)
    if holes:
        raise KeyMismatchError(f"blocks {holes} are missing (found blocks up to {depth - 1})")
    pos = state_dict.get(prefix + "pos_embed")
    return EncoderShapes(
        embed_dim=patch.shape[0],
        depth=depth,
        in_chans=patch.shape[1],
        patch_size=patch.shape[-1],
        tubelet_size=patch.shape[2] if patch.ndim == 5 else None,
        mlp_hidden=get("blocks.0.mlp.fc1.weight").shape[0],
        use_silu=prefix + "blocks.0.mlp.fc3.weight" in state_dict,
        qkv_bias=prefix + "blocks.0.attn.qkv.bias" in state_dict,
        pos_tokens=pos.shape[1] if pos is not None else None,
    )


def match_variant(embed_dim: int, depth: int, mlp_hidden: int | None = None) -> str | None:
    for name, spec in VARIANTS.items():
        if spec["embed_dim"] == embed_dim and spec["depth"] == depth:
            if mlp_hidden is None or int(embed_dim * spec["mlp_ratio"]) == mlp_hidden:
                return name
    return None


def describe_fit(shapes: EncoderShapes) -> str:
    name = match_variant(shapes.embed_dim, shapes.depth, shapes.mlp_hidden)
    if name:
        return f"the checkpoint fits variant {name!r} (--variant {name})"
    return (
        f"the checkpoint (embed_dim={shapes.embed_dim}, depth={shapes.depth}, mlp hidden={shapes.mlp_hidden}) fits no "
        f"named variant: use --variant custom --num-heads N"
    )


def exact_mlp_ratio(dim: int, hidden: int) -> float:
    """A float r with int(dim * r) == hidden (the modeling code sizes the MLP as int(dim * mlp_ratio))."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


@dataclass
class InferredConfig:
    fields: dict
    variant: str  # a VARIANTS name or "custom"
    notes: list[str] = field(default_factory=list)


def _grid_from_tokens(tokens: int, patch: int, tubelet: int | None, img_size, num_frames, candidates) -> tuple[int, int]:
    """(img_size, num_frames) consistent with a pos_embed of `tokens` rows (square images)."""
    if tubelet is None:  # image model
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ConversionError(f"pos_embed has {tokens} rows: not a square image grid")
        if img_size is not None and img_size != side * patch:
            raise ConversionError(f"pos_embed has {tokens} rows = {side}x{side} patches: --img-size must be {side * patch}")
        return side * patch, 1
    sizes = [img_size] if img_size is not None else list(candidates)
    for size in sizes:
        per_frame = (size // patch) ** 2
        if size % patch or tokens % per_frame:
            continue
        frames = tokens // per_frame * tubelet
        if num_frames is None or num_frames == frames:
            return size, frames
    if num_frames is not None and (num_frames < tubelet or num_frames % tubelet):
        raise ConversionError(
            f"--num-frames {num_frames}: the checkpoint's video patch embedding groups {tubelet} frames per tubelet, "
            f"so the clip length must be a positive multiple of {tubelet}"
        )
    if num_frames is not None and img_size is None:
        per_frame, rem = divmod(tokens, num_frames // tubelet)
        side = math.isqrt(per_frame)
        if not rem and side * side == per_frame:
            return side * patch, num_frames
    raise ConversionError(
        f"pos_embed has {tokens} rows, which fits no (--img-size, --num-frames) among the tried sizes {sizes}: "
        "pass --img-size (and --num-frames) matching the training resolution"
    )


def infer_encoder_config(
    state_dict: dict,
    *,
    variant: str | None = None,
    num_heads: int | None = None,
    img_size: int | None = None,
    num_frames: int | None = None,
    use_rope: bool | None = None,
    name_hint: str = "",
) -> InferredConfig:
    """Encoder config fields for an original-format (our-key) state dict."""
    shapes = encoder_shapes(state_dict)
    notes = []
    if variant not in (None, "custom"):
        if variant not in VARIANTS:
            raise ConversionError(f"unknown variant {variant!r}: choose one of {sorted(VARIANTS)} or 'custom'")
        spec = VARIANTS[variant]
        expected_hidden = int(spec["embed_dim"] * spec["mlp_ratio"])
        problems = []
        if shapes.embed_dim != spec["embed_dim"]:
            w = state_dict["patch_embed.proj.weight"]
            problems.append(
                f"patch_embed.proj.weight: checkpoint {list(w.shape)}, variant {variant!r} expects "
                f"{[spec['embed_dim'], *w.shape[1:]]}"
            )
        if shapes.depth != spec["depth"]:
            problems.append(f"blocks.*: checkpoint has {shapes.depth} blocks, variant {variant!r} has {spec['depth']}")
        if not shapes.use_silu and shapes.embed_dim == spec["embed_dim"] and shapes.mlp_hidden != expected_hidden:
            problems.append(
                f"blocks.0.mlp.fc1.weight: checkpoint {[shapes.mlp_hidden, shapes.embed_dim]}, variant {variant!r} "
                f"expects {[expected_hidden, spec['embed_dim']]}"
            )
        if problems:
            raise KeyMismatchError(
                f"the checkpoint does not match --variant {variant}:\n  " + "\n  ".join(problems) + f"\n{describe_fit(shapes)}"
            )
        chosen = variant
    elif variant is None:
        chosen = match_variant(shapes.embed_dim, shapes.depth, None if shapes.use_silu else shapes.mlp_hidden) or "custom"
    else:
        chosen = "custom"

    if chosen == "custom":
        if num_heads is None:
            table = ", ".join(f"{n} {v['embed_dim']}/{v['depth']}" for n, v in VARIANTS.items())
            raise ConversionError(
                f"embed_dim={shapes.embed_dim}, depth={shapes.depth} (mlp hidden {shapes.mlp_hidden}) matches no variant "
                f"in the table (embed_dim/depth: {table}); the number "
                f"of heads is not stored in the weights: pass --num-heads N (a divisor of {shapes.embed_dim})"
            )
        heads = num_heads
    else:
        heads = VARIANTS[chosen]["num_heads"]
        if num_heads is not None and num_heads != heads:
            notes.append(f"--num-heads {num_heads} overrides variant {chosen!r}'s {heads} heads")
            heads = num_heads
    if shapes.embed_dim % heads:
        raise ConversionError(f"--num-heads {heads} does not divide embed_dim {shapes.embed_dim}")

    fields = dict(
        embed_dim=shapes.embed_dim,
        depth=shapes.depth,
        num_heads=heads,
        in_chans=shapes.in_chans,
        patch_size=shapes.patch_size,
        qkv_bias=shapes.qkv_bias,
        layer_norm_eps=1e-6,
    )
    if shapes.use_silu:
        fields["use_silu"] = True
        wide = (int(2 * int(shapes.embed_dim * 4.0) / 3) + 7) // 8 * 8
        if wide == shapes.mlp_hidden:
            fields.update(wide_silu=True, mlp_ratio=4.0)
        else:
            fields.update(wide_silu=False, mlp_ratio=exact_mlp_ratio(shapes.embed_dim, shapes.mlp_hidden))
    elif chosen != "custom":
        fields["mlp_ratio"] = VARIANTS[chosen]["mlp_ratio"]
    else:
        fields["mlp_ratio"] = exact_mlp_ratio(shapes.embed_dim, shapes.mlp_hidden)

    # Positions: RoPE models carry no pos_embed; V-JEPA 1 style models carry a frozen sincos table.
    has_pos = shapes.pos_tokens is not None
    if use_rope is None:
        use_rope = not has_pos
        notes.append("no pos_embed in the checkpoint: RoPE model" if use_rope else "pos_embed present: non-RoPE model")
    elif use_rope and has_pos:
        notes.append("--rope given: the checkpoint's pos_embed is dropped")
    elif not use_rope and not has_pos:
        raise ConversionError("--no-rope needs the checkpoint's pos_embed, but it has none (RoPE models carry no pos_embed)")
    fields["use_rope"] = use_rope

    # A standalone 384 in the file name (vitg-384.pt, vitg_384px.pt), not digits or a word containing it
    # (vitl_step13840.pt, vitl-ep384.pt).
    hint_size = 384 if re.search(r"(?<![0-9A-Za-z])384(?![0-9])", name_hint) else None
    if shapes.tubelet_size is None:
        fields["num_frames"] = 1
    else:
        fields["tubelet_size"] = shapes.tubelet_size
    if not use_rope:
        candidates = [s for s in (hint_size, 256, 224, 384, 448, 512, 320, 288, 192, 160, 128, 112, 96, 64, 32) if s]
        size, frames = _grid_from_tokens(
            shapes.pos_tokens, shapes.patch_size, shapes.tubelet_size, img_size, num_frames, candidates
        )
        fields.update(img_size=size, num_frames=frames)
        notes.append(f"img_size {size} and num_frames {frames} from pos_embed's {shapes.pos_tokens} rows")
    else:
        fields["img_size"] = img_size or hint_size or 256
        if img_size is None and hint_size:
            notes.append(f"img_size 384 from the file name {name_hint!r} (pass --img-size to override)")
        if shapes.tubelet_size is not None:
            fields["num_frames"] = num_frames or 64
    return InferredConfig(fields, chosen, notes)


def detect_uniform_power(pos_embed: torch.Tensor, embed_dim: int, grid) -> tuple[bool | None, float]:
    """Which sincos table the stored pos_embed is (None: neither; it is kept as stored either way)."""
    from ..modeling.modeling_vjepa2_area import sincos_2d, sincos_3d

    table = pos_embed.detach().float().reshape(-1, embed_dim)
    best = (None, float("inf"))
    options = (False, True) if len(grid) == 3 else (False,)
    for uniform in options:
        ref = sincos_3d(embed_dim, grid, uniform) if len(grid) == 3 else sincos_2d(embed_dim, grid)
        if ref.shape != table.shape:
            continue
        diff = (ref - table).abs().max().item()
        if diff < best[1]:
            best = (uniform, diff)
    return (best[0] if best[1] < 1e-4 else None), best[1]


# ----------------------------------------------------------------------------------------------
# transformers' config.json -> ours
# ----------------------------------------------------------------------------------------------


def from_hf_config(config: dict, classification: bool) -> tuple[dict, list[str]]:
    """Our config fields from a transformers `VJEPA2Config` dict. Returns (fields, notes)."""
    notes = []
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConversionError(f"hidden_act {act!r} is not supported (the V-JEPA 2 encoders use exact GELU)")
    patch = config.get("patch_size", 16)
    if isinstance(patch, (list, tuple)):
        if len(set(patch)) != 1:
            raise ConversionError(f"non-square patch_size {patch} is not supported")
        patch = patch[0]
    fields = dict(
        img_size=config.get("crop_size", 256),
        num_frames=config.get("frames_per_clip", 64),
        patch_size=patch,
        tubelet_size=config.get("tubelet_size", 2),
        in_chans=config.get("in_chans", 3),
        embed_dim=config.get("hidden_size", 1024),
        depth=config.get("num_hidden_layers", 24),
        num_heads=config.get("num_attention_heads", 16),
        mlp_ratio=config.get("mlp_ratio", 4.0),
        qkv_bias=config.get("qkv_bias", True),
        layer_norm_eps=config.get("layer_norm_eps", 1e-6),
        drop_path_rate=config.get("drop_path_rate", 0.0),
        init_std=config.get("initializer_range", 0.02),
        use_rope=True,
    )
    if classification:
        # transformers' pooler uses the encoder's head count and LayerNorm eps, and num_pooler_layers
        # self-attention layers before the cross-attention one (our probe_depth counts both).
        fields.update(
            probe_depth=config.get("num_pooler_layers", 3) + 1,
            probe_num_heads=fields["num_heads"],
            probe_layer_norm_eps=fields["layer_norm_eps"],
        )
        id2label = config.get("id2label")
        if id2label:
            fields["id2label"] = {int(k): v for k, v in id2label.items()}
            fields["label2id"] = {v: int(k) for k, v in id2label.items()}
        notes.append(
            "probe: transformers' pooler uses the encoder's num_attention_heads "
            f"({fields['num_heads']}) and layer_norm_eps ({fields['layer_norm_eps']}); kept as is"
        )
    return fields, notes


# ----------------------------------------------------------------------------------------------
# Probes
# ----------------------------------------------------------------------------------------------


def probe_fields(head_state_dict: dict, embed_dim: int, probe_num_heads: int) -> dict:
    """Config fields of our probe from a `head.*` state dict (num_labels, probe_depth, heads, eps)."""
    def shape(key):
        if key not in head_state_dict:
            raise KeyMismatchError(f"probe: missing key {key!r} (has {sorted(head_state_dict)[:6]} ...)")
        return tuple(head_state_dict[key].shape)

    queries = shape("head.pooler.query_tokens")
    if queries[-1] != embed_dim:
        raise KeyMismatchError(
            f"head.pooler.query_tokens: probe width {queries[-1]} but the encoder's embed_dim is {embed_dim} "
            "(is this the probe of another encoder? multi-level probes on concatenated layers are not supported)"
        )
    if len(queries) != 3 or queries[1] != 1:
        raise KeyMismatchError(f"head.pooler.query_tokens has shape {queries}: only single-query probes are supported")
    linear = shape("head.linear.weight")
    blocks = {int(m.group(1)) for k in head_state_dict if (m := re.match(r"head\.pooler\.blocks\.(\d+)\.", k))}
    if embed_dim % probe_num_heads:
        raise ConversionError(f"--probe-num-heads {probe_num_heads} does not divide the probe width {embed_dim}")
    return dict(num_labels=linear[0], probe_depth=len(blocks) + 1, probe_num_heads=probe_num_heads)


# ----------------------------------------------------------------------------------------------
# Key check against the model that will hold the weights
# ----------------------------------------------------------------------------------------------


def check_state_dict(model: torch.nn.Module, state_dict: dict, fit_hint: str | None = None) -> None:
    """Refuse missing / unexpected keys and shape mismatches, listing each with both shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k}: checkpoint {list(state_dict[k].shape)}, model expects {list(expected[k])}"
        for k in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[k].shape) != expected[k]
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            parts.append(f"{title} ({len(items)}):\n    " + "\n    ".join(items))
    message = "the weights do not fit the model:\n  " + "\n  ".join(parts)
    if fit_hint:
        message += f"\n{fit_hint}"
    raise KeyMismatchError(message)


__all__ = [
    "KeyMismatchError",
    "EncoderShapes",
    "InferredConfig",
    "encoder_shapes",
    "refuse_unsupported_layouts",
    "match_variant",
    "describe_fit",
    "exact_mlp_ratio",
    "infer_encoder_config",
    "detect_uniform_power",
    "from_hf_config",
    "probe_fields",
    "check_state_dict",
]
