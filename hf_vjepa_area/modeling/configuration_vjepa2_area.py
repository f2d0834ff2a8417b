"""Configuration of V-JEPA 2 encoders with Spatiotemporal Area Attention (ST-A²)."""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import math

from transformers import PreTrainedConfig

from .released import VARIANTS, parse_area_layers, parse_out_layers

AREA_KERNELS = ("auto", "mask", "dense", "varlen", "segment")

# config.json keys that belong to timm (see timm_metadata.py): derived when saving, ignored when loading.
TIMM_CONFIG_KEYS = ("architecture", "num_classes", "num_features", "pretrained_cfg", "model_args")


# Set while `from_dict` / `from_json_file` rebuild a saved config: its extra attributes are legal there.
_LOADING = contextvars.ContextVar("vjepa2_area_config_loading", default=False)


def _field_names(cls) -> list[str]:
    """Names a caller may mean: our own fields and their transformers aliases."""
    return [*cls.__annotations__, *cls.attribute_map, "intermediate_size"]


def _ratio_for_width(size, dim: int) -> float:
    """The `mlp_ratio` whose `int(dim * ratio)` is `size` (a plain quotient can round down by one)."""
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"intermediate_size must be a positive int, got {size!r}")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise ValueError(f"embed_dim must be a positive int, got {dim!r}")
    ratio = size / dim
    while int(dim * ratio) < size:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _as_pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")


class VJEPA2AreaConfig(PreTrainedConfig):
    r"""
    Configuration of a V-JEPA 2 video ViT encoder, optionally with ST-A² area attention.

    Encoder fields follow the original `VisionTransformer` arguments. Area fields:

    area_splits (`tuple[int, int, int]` or `None`):
        Number of areas along (time, height, width) in token-grid units; `None` means full attention in
        every block. `(2, 2, 1)` reproduces the prototype's partition. Leftover rows/frames of a grid
        not divisible by the split go to the last area.
    area_layers (`list[int]`, `"start:end"`, `range` or `None`):
        Blocks that use area attention; `None` means the first 75% of blocks. Stored as a list.
    area_residual_scale (`float`):
        Scale on the area-attention output before the output projection (prototype option).
    area_kernel (`str`):
        Which area-attention implementation to run: "auto" (fastest available), "mask" (dense SDPA with
        a boolean same-area mask; the reference, any device), "dense" (reshape into equal areas; only
        when no tokens are masked and the grid divides), "varlen" (packed variable-length attention,
        CUDA, fp16/bf16) or "segment" (one SDPA call per area segment; what "auto" runs on CPU in eager
        mode; reads the segment lengths on the host once per forward).
    probe_* fields size the attentive probe of `VJEPA2AreaForVideoClassification`.
    probe_out_layers (`list[int]` or `None`):
        Blocks whose outputs, each through the final norm, the probe reads concatenated along the token
        axis (V-JEPA 2's multi-level probe, `released.MULTILEVEL_OUT_LAYERS`); `None` means the last block's.
    predictor_* fields size V-JEPA 2's predictor (self-supervised training only; the encoder ignores
    them). Released L/H/g predictors: width 384, depth 12, 12 heads, MLP ratio 4, 10 mask tokens, full
    attention. `predictor_area_splits` / `predictor_area_layers` mean what the encoder's area fields
    mean, over the predictor's blocks.
    """

    model_type = "vjepa2_area"
    # transformers' standard names (and V-JEPA 2's own `frames_per_clip`, `in_chans`) for our fields: one
    # value under either name, resolved before validation (`intermediate_size` is the property below).
    attribute_map = {
        "hidden_size": "embed_dim",
        "num_hidden_layers": "depth",
        "num_attention_heads": "num_heads",
        "initializer_range": "init_std",
        "frames_per_clip": "num_frames",
        "num_channels": "in_chans",
    }

    img_size: int | list[int] | tuple[int, int] = 256
    patch_size: int = 16
    num_frames: int = 16
    tubelet_size: int = 2
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    use_rope: bool = True
    rope_interleave: bool = False
    use_silu: bool = False
    wide_silu: bool = True
    layer_norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    init_std: float = 0.02
    uniform_power: bool = False
    area_splits: list[int] | tuple[int, int, int] | None = None
    area_layers: list[int] | str | range | None = None
    area_residual_scale: float = 1.0
    area_kernel: str = "auto"
    probe_depth: int = 4
    probe_num_heads: int = 16
    probe_layer_norm_eps: float = 1e-5
    probe_out_layers: list[int] | tuple[int, ...] | None = None
    predictor_embed_dim: int = 384
    predictor_depth: int = 12
    predictor_num_heads: int = 12
    predictor_mlp_ratio: float = 4.0
    predictor_num_mask_tokens: int = 10
    predictor_area_splits: list[int] | tuple[int, int, int] | None = None
    predictor_area_layers: list[int] | str | range | None = None

    def __post_init__(self, **kwargs):
        for key in TIMM_CONFIG_KEYS:  # timm's keys in config.json are derived on save, never read back
            kwargs.pop(key, None)
        if "variant" in kwargs:
            raise ValueError(
                f"variant is not a config field: use VJEPA2AreaConfig.from_variant({kwargs['variant']!r}, ...)"
            )
        self._resolve_standard_names(kwargs)
        # Extra keys become plain attributes. A caller's typo is refused; a saved config (it carries the
        # `transformers_version` that `to_dict` writes, or comes through `from_dict`) keeps every attribute
        # that was set on it, as in transformers.
        if not _LOADING.get() and self.transformers_version is None:
            for key in kwargs:
                close = difflib.get_close_matches(key, _field_names(type(self)), n=1, cutoff=0.8)
                if close:
                    raise ValueError(f"{key!r} is not a VJEPA2AreaConfig field; did you mean {close[0]!r}?")
        self.img_size = list(_as_pair(self.img_size, "img_size"))
        self._validate()
        if self.probe_out_layers is not None:
            self.probe_out_layers = parse_out_layers(self.probe_out_layers, self.depth)
        if self.area_splits is not None:
            self.area_splits = [int(s) for s in self.area_splits]
            self.area_layers = parse_area_layers(self.area_layers, self.depth)
        else:
            self.area_layers = []
        if self.predictor_area_splits is not None:
            self.predictor_area_splits = [int(s) for s in self.predictor_area_splits]
            self.predictor_area_layers = parse_area_layers(self.predictor_area_layers, self.predictor_depth)
        else:
            self.predictor_area_layers = []
        super().__post_init__(**kwargs)

    def _resolve_standard_names(self, kwargs: dict) -> None:
        """Move transformers' names in `kwargs` onto our fields before anything is validated or derived."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for alias, field in self.attribute_map.items():
            if alias not in kwargs:
                continue
            value = kwargs.pop(alias)
            current = getattr(self, field)
            if current != defaults[field] and current != value:
                raise ValueError(f"{alias}={value!r} and {field}={current!r} name the same field: pass one of them")
            setattr(self, field, value)
        if "intermediate_size" in kwargs:
            size = kwargs.pop("intermediate_size")
            if self.mlp_ratio != defaults["mlp_ratio"] and size != int(self.embed_dim * self.mlp_ratio):
                raise ValueError(
                    f"intermediate_size={size!r} and mlp_ratio={self.mlp_ratio!r} (MLP width "
                    f"{int(self.embed_dim * self.mlp_ratio)}) disagree: pass one of them"
                )
            self.mlp_ratio = _ratio_for_width(size, self.embed_dim)

    @property
    def intermediate_size(self) -> int:
        """transformers' name for the MLP width, `int(embed_dim * mlp_ratio)`; setting it sets `mlp_ratio`."""
        return int(self.embed_dim * self.mlp_ratio)

    @intermediate_size.setter
    def intermediate_size(self, size: int) -> None:
        self.mlp_ratio = _ratio_for_width(size, self.embed_dim)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        token = _LOADING.set(True)
        try:
            return super().from_dict(config_dict, **kwargs)
        finally:
            _LOADING.reset(token)

    @classmethod
    def from_json_file(cls, json_file):
        token = _LOADING.set(True)
        try:
            return super().from_json_file(json_file)
        finally:
            _LOADING.reset(token)

    def timm_config(self) -> dict:
        """The keys timm reads from config.json (`architecture`, `num_classes`, `num_features`,
        `pretrained_cfg`, `model_args`), derived from this config. A classifier is recognised by
        `architectures`, which `save_pretrained` sets."""
        from .timm_metadata import timm_config_fields

        classifier = "VJEPA2AreaForVideoClassification" in (self.architectures or [])
        return timm_config_fields(self, classifier=classifier)

    def to_dict(self) -> dict:
        """transformers' fields plus timm's (see `timm_config`), so one config.json serves both libraries."""
        return {**super().to_dict(), **self.timm_config()}

    def to_diff_dict(self) -> dict:
        return {**super().to_diff_dict(), **self.timm_config()}

    @classmethod
    def from_variant(cls, variant: str, **kwargs) -> "VJEPA2AreaConfig":
        """A config for a named size ("tiny" ... "gigantic"); kwargs set or override any field."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        return cls(**{**VARIANTS[variant], **kwargs})

    def to_transformers_config(self, classifier: bool = False):
        """transformers' `VJEPA2Config` of the same model (what its `VJEPA2Model` needs to hold our weights).

        Refuses, naming each, what transformers' V-JEPA 2 cannot express. A classifier's pooler there uses
        the encoder's heads and LayerNorm eps, so ours must match them.
        """
        from transformers import VJEPA2Config

        problems = [text for bad, text in (
            (not self.use_rope, "use_rope=False (transformers' V-JEPA 2 has RoPE only)"),
            (self.rope_interleave, "rope_interleave=True (transformers uses the released tiled sin/cos)"),
            (self.use_silu, "use_silu=True (transformers' MLP is GELU)"),
            (self.num_frames == 1, "an image model (num_frames=1)"),
            (self.img_size[0] != self.img_size[1], f"non-square img_size {self.img_size}"),
            (classifier and self.probe_num_heads != self.num_heads, "a probe whose heads differ from the encoder's"),
            (classifier and self.probe_out_layers is not None, "a multi-level probe (its pooler reads the last block)"),
        ) if bad]  # fmt: skip
        if problems:
            raise ValueError("transformers' V-JEPA 2 cannot express " + "; ".join(problems))
        fields = {theirs: getattr(self, ours) for theirs, ours in _TRANSFORMERS_FIELDS.items()}
        fields["crop_size"] = self.img_size[0]
        if classifier:
            fields.update(num_pooler_layers=self.probe_depth - 1, id2label=dict(self.id2label))
        return VJEPA2Config(**fields)

    @classmethod
    def from_transformers_config(cls, config, classifier: bool = False, **overrides) -> "VJEPA2AreaConfig":
        """Our config for transformers' `VJEPA2Config` (a `VJEPA2Model` or, with `classifier`, its
        `VJEPA2ForVideoClassification`); `overrides` set any other field (area options, ...)."""
        if config.hidden_act != "gelu":
            raise ValueError(f"hidden_act {config.hidden_act!r}: the V-JEPA 2 encoders use exact GELU")
        fields = {ours: getattr(config, theirs) for theirs, ours in _TRANSFORMERS_FIELDS.items()}
        fields["img_size"] = config.crop_size
        if classifier:  # transformers' pooler: the encoder's heads and eps; num_pooler_layers + cross-attention
            fields.update(probe_depth=config.num_pooler_layers + 1, probe_num_heads=config.num_attention_heads,
                          probe_layer_norm_eps=config.layer_norm_eps, id2label=dict(config.id2label))  # fmt: skip
        return cls(**{**fields, **overrides})

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Token grid (t, h, w) at the configured input size; an image model (num_frames=1) has t = 1."""
        return (
            1 if self.num_frames == 1 else self.num_frames // self.tubelet_size,
            self.img_size[0] // self.patch_size,
            self.img_size[1] // self.patch_size,
        )

    def _validate(self) -> None:
        def positive_int(name):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

        for name in ("patch_size", "num_frames", "tubelet_size", "in_chans", "embed_dim", "depth", "num_heads"):
            positive_int(name)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        for side, name in zip(self.img_size, ("height", "width")):
            if side % self.patch_size:
                raise ValueError(
                    f"img_size {name} ({side}) must be divisible by patch_size ({self.patch_size})"
                )
        if self.num_frames > 1 and self.num_frames % self.tubelet_size:
            raise ValueError(
                f"num_frames ({self.num_frames}) must be divisible by tubelet_size ({self.tubelet_size})"
            )
        if self.use_rope:
            rope_dim = 2 * ((self.head_dim // 3) // 2)
            if rope_dim == 0 or self.head_dim % 2:
                raise ValueError(
                    f"use_rope=True needs an even head_dim of at least 6 (embed_dim / num_heads); got "
                    f"head_dim={self.head_dim} from embed_dim={self.embed_dim}, num_heads={self.num_heads}"
                )
        if not (isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0 and math.isfinite(self.mlp_ratio)):
            raise ValueError(f"mlp_ratio must be a positive number, got {self.mlp_ratio!r}")
        if not 0.0 <= float(self.drop_path_rate) < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}")
        if self.area_kernel not in AREA_KERNELS:
            raise ValueError(f"area_kernel must be one of {AREA_KERNELS}, got {self.area_kernel!r}")
        self._validate_area_splits("area_splits", "area_layers")
        self._validate_area_splits("predictor_area_splits", "predictor_area_layers")
        if not isinstance(self.area_residual_scale, (int, float)):
            raise ValueError(f"area_residual_scale must be a number, got {self.area_residual_scale!r}")
        for name in ("probe_depth", "probe_num_heads", "predictor_embed_dim", "predictor_depth",
                     "predictor_num_heads", "predictor_num_mask_tokens"):
            positive_int(name)
        if self.predictor_embed_dim % self.predictor_num_heads:
            raise ValueError(
                f"predictor_embed_dim ({self.predictor_embed_dim}) must be divisible by predictor_num_heads "
                f"({self.predictor_num_heads})"
            )

    def _validate_area_splits(self, splits_name: str, layers_name: str) -> None:
        splits = getattr(self, splits_name)
        if splits is None:
            if getattr(self, layers_name):
                raise ValueError(f"{layers_name} is set but {splits_name} is None: set {splits_name}, e.g. (2, 2, 1)")
            return
        if (
            not isinstance(splits, (list, tuple))
            or len(splits) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in splits)
        ):
            raise ValueError(
                f"{splits_name} must be None or three positive ints (time, height, width), e.g. (2, 2, 1); "
                f"got {splits!r}"
            )
        grid = self.grid_size
        for axis, split, size in zip(("time", "height", "width"), splits, grid):
            if split > size:
                raise ValueError(
                    f"{splits_name} {axis} split {split} exceeds the token grid's {axis} size {size} at the "
                    f"configured input (grid t,h,w = {grid}); use a split <= {size}"
                )


# transformers' `VJEPA2Config` field -> ours (crop_size <-> img_size is the one field of another shape).
_TRANSFORMERS_FIELDS = {
    "frames_per_clip": "num_frames", "patch_size": "patch_size", "tubelet_size": "tubelet_size",
    "in_chans": "in_chans", "hidden_size": "embed_dim", "num_hidden_layers": "depth",
    "num_attention_heads": "num_heads", "mlp_ratio": "mlp_ratio", "qkv_bias": "qkv_bias",
    "layer_norm_eps": "layer_norm_eps", "drop_path_rate": "drop_path_rate", "initializer_range": "init_std",
    "pred_hidden_size": "predictor_embed_dim", "pred_num_hidden_layers": "predictor_depth",
    "pred_num_attention_heads": "predictor_num_heads", "pred_mlp_ratio": "predictor_mlp_ratio",
    "pred_num_mask_tokens": "predictor_num_mask_tokens",
}  # fmt: skip

# `save_pretrained` copies this file and its relative imports (released.py) beside config.json and records
# it in `auto_map` (remote code).
VJEPA2AreaConfig.register_for_auto_class()

__all__ = ["VJEPA2AreaConfig", "AREA_KERNELS", "TIMM_CONFIG_KEYS"]
