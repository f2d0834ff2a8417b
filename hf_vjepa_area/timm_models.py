"""timm entry points for V-JEPA 2 encoders, with full or Spatiotemporal Area (ST-A²) attention.

    import hf_vjepa_area, timm
    model = timm.create_model("vjepa2_vitl_area", pretrained=True)           # encoder, ST-A² defaults
    model = timm.create_model("vjepa2_vitl", pretrained=True, num_classes=174)  # + attentive probe head
    tokens = model.forward_features(video)                                   # video [B, C, T, H, W]

Entry points come from the released-models table: a V-JEPA 2 size, full attention or `_area`
(area_splits (2, 2, 1) over the first 75% of blocks). The released ViT-L/H/g at 256 px and ViT-g at 384 px
load Meta's weights as they are: transformers' `facebook/vjepa2-*` safetensors by default, or Meta's `.pt`
with `pretrained_cfg_overlay=dict(file="vitl.pt")`, both through `checkpoint_filter_fn`.
`vjepa2_vit{t,s,b}[_area]` are random-init sizes for experiments. Every entry point takes the
encoder's config fields as keyword overrides (`num_frames`, `img_size`, `area_splits`, `area_layers`,
`embed_dim`, `depth`, ...), plus timm's `num_classes`, `global_pool`, `drop_rate`, `drop_path_rate`.

Input is `[B, C, T, H, W]` (T a multiple of `tubelet_size`) or images `[B, C, H, W]`. timm's
`input_size` is (C, H, W), so the number of frames is a model argument, never part of `input_size`.
The state dict uses the original V-JEPA 2 names (`patch_embed.*`, `blocks.{i}.*`, `norm.*`, and
`head.pooler.*` / `head.linear.*` for the attentive probe), the same file transformers loads.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from transformers.utils import SAFE_WEIGHTS_NAME

from .checkpoint_keys import original_parts
from .locate import SourceError, resolve_folder
from .modeling.configuration_vjepa2_area import VJEPA2AreaConfig
from .modeling.released import DEFAULT_AREA_FRACTION, DEFAULT_AREA_SPLITS, RELEASED_MODELS, VARIANTS
from .modeling.modeling_vjepa2_area import AttentiveClassifier, VJEPA2AreaEncoderMixin, init_weights
from .modeling.timm_metadata import timm_name, timm_pretrained_cfg

__all__ = ["VJEPA2Area", "checkpoint_filter_fn"]

# Encoder config fields the model accepts as keyword arguments.
CONFIG_FIELDS = tuple(VJEPA2AreaConfig.__annotations__)
GLOBAL_POOLS = ("attn", "avg", "")


def _resolve_global_pool(global_pool: str | None, num_classes: int) -> str:
    if global_pool is None:
        return "attn" if num_classes > 0 else "avg"
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(
            f"global_pool must be one of {GLOBAL_POOLS} ('attn': V-JEPA 2 attentive probe, 'avg': mean of the "
            f"tokens, '': no pooling), got {global_pool!r}"
        )
    return global_pool


class VJEPA2Area(VJEPA2AreaEncoderMixin, nn.Module):
    """V-JEPA 2 video ViT (optionally with ST-A² area attention) with timm's model interface.

    Args:
        num_classes: classes of the head; 0 for an encoder.
        global_pool: 'attn' (V-JEPA 2 attentive probe: `head.pooler`, `head.linear`; the default when
            num_classes > 0), 'avg' (mean of the tokens, then `head` Linear; the default for num_classes=0)
            or '' (no pooling: `forward_head` returns tokens).
        drop_rate: dropout before the final linear.
        `probe_out_layers` (a config field): `forward` feeds the attentive probe those blocks' tokens, each
        through the final norm, concatenated (V-JEPA 2's multi-level probe); `forward_features` stays the
        last block's tokens.
        device, dtype: where and in which dtype to build (timm's factory arguments; 'meta' builds no storage).
        **kwargs: `VJEPA2AreaConfig` fields (embed_dim, depth, num_heads, img_size, num_frames,
            area_splits, area_layers, probe_depth, probe_num_heads, ...). Unknown names raise.
    """

    def __init__(
        self,
        num_classes: int = 0,
        global_pool: str | None = None,
        drop_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ):
        super().__init__()
        unknown = sorted(set(kwargs) - set(CONFIG_FIELDS))
        if unknown:
            raise TypeError(
                f"VJEPA2Area got unexpected model arguments {unknown}; valid ones are num_classes, global_pool, "
                f"drop_rate and the VJEPA2AreaConfig fields {list(CONFIG_FIELDS)}"
            )
        self.config = config = VJEPA2AreaConfig(**kwargs)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.embed_dim = config.embed_dim
        self.num_prefix_tokens = 0
        self.grad_checkpointing = False
        self.global_pool = _resolve_global_pool(global_pool, num_classes)

        with torch.device(device) if device is not None else contextlib.nullcontext():
            self._build_encoder(config)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = self._make_head(num_classes)
            self.init_weights()
        if dtype is not None:
            self.to(dtype=dtype)
        self.feature_info = [
            dict(module=f"blocks.{i}", num_chs=config.embed_dim, reduction=config.patch_size) for i in range(config.depth)
        ]

    # ---- construction ------------------------------------------------------------------------

    def _make_head(self, num_classes: int) -> nn.Module:
        config = self.config
        if self.global_pool == "attn":
            return AttentiveClassifier(
                config.embed_dim,
                num_classes,
                num_heads=config.probe_num_heads,
                depth=config.probe_depth,
                mlp_ratio=4.0,
                eps=config.probe_layer_norm_eps,
            )
        return nn.Linear(config.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _init(self, module: nn.Module) -> None:
        module.apply(functools.partial(init_weights, std=self.config.init_std))

    def init_weights(self) -> None:
        """The released init (trunc normal 0.02, depth-scaled residual outputs); fixed sincos pos_embed."""
        self._init(self)
        self._fill_pos_embed()

    # ---- timm model interface ----------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # The probe's query token is decayed, as in V-JEPA 2's probe training; pos_embed is a frozen buffer.
        return {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^patch_embed|^pos_embed",
            blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for block in self.blocks:
            block.gradient_checkpointing = enable
            block._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.linear if isinstance(self.head, AttentiveClassifier) else self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New classifier for `num_classes` (0: none). The attentive pooler is kept unless `global_pool` changes."""
        self.num_classes = num_classes
        if global_pool is not None:
            global_pool = _resolve_global_pool(global_pool, num_classes)
            if global_pool != self.global_pool:
                self.global_pool = global_pool
                self.head = self._new_head_part(self._make_head(num_classes))
                return
        if isinstance(self.head, AttentiveClassifier):
            linear = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
            self.head.linear = self._new_head_part(linear)
        else:
            self.head = self._new_head_part(self._make_head(num_classes))

    def _new_head_part(self, module: nn.Module) -> nn.Module:
        """Initialised, and on the trunk's device and dtype (a bf16 or GPU model stays usable)."""
        self._init(module)
        weight = self.patch_embed.proj.weight
        return module.to(device=weight.device, dtype=weight.dtype)

    def forward_features(self, x: torch.Tensor, masks=None) -> torch.Tensor:
        """Pixels [B, C, T, H, W] or [B, C, H, W] -> normed tokens [B, N, D] in (t, h, w) raster order.

        `masks`: V-JEPA 2 visible-token ids (LongTensor [B, K], or a list of them) -> [B * len, K, D].
        """
        return self.encode(x, masks).last_hidden_state

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "attn":
            x = self.head(x, pre_logits=True)
        elif self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        if pre_logits:
            return x
        return self.get_classifier()(x)

    def forward(self, x: torch.Tensor, masks=None) -> torch.Tensor:
        out_layers = self.config.probe_out_layers
        if out_layers is not None and self.global_pool == "attn":  # a multi-level probe: its blocks' tokens, joined
            return self.forward_head(torch.cat(self.encode(x, masks, out_layers=out_layers).intermediate_states, dim=1))
        return self.forward_head(self.forward_features(x, masks))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        masks=None,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Block outputs as well as the final tokens.

        Args:
            indices: last n blocks if an int, else block indices (negative from the end); None: all.
            norm: apply the final norm to the intermediates.
            stop_early: stop after the last block asked for (the returned final tokens are then its output).
            output_fmt: 'NCHW' gives feature maps [B, D, t, h, w] for video input and [B, D, h, w] for
                images; 'NLC' gives tokens [B, N, D]. Masked input (`masks`) only has 'NLC'.
            intermediates_only: return only the intermediates.
        """
        fmt = getattr(output_fmt, "value", output_fmt)
        if fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        if masks is not None and fmt == "NCHW":
            raise ValueError("masked input has no full token grid: use output_fmt='NLC' with masks")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        take = set(take_indices)
        tokens, rope, plan, restore, grid = self._prepare_tokens(x, masks)
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks

        intermediates = []
        for i, block in enumerate(blocks):
            tokens = block(tokens, rope, plan)
            if i in take:
                intermediates.append(restore(self.norm(tokens) if norm else tokens))
        if fmt == "NCHW":
            batch = intermediates[0].shape[0] if intermediates else x.shape[0]
            shape = grid[1:] if x.ndim == 4 else grid
            intermediates = [
                y.transpose(1, 2).reshape(batch, y.shape[-1], *shape).contiguous() for y in intermediates
            ]
        if intermediates_only:
            return intermediates
        return restore(self.norm(tokens)), intermediates

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the blocks after the last one in `indices` (and the norm / head); returns the indices."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def checkpoint_filter_fn(state_dict: dict, model: VJEPA2Area) -> dict[str, torch.Tensor]:
    """Any V-JEPA 2 checkpoint in our key names: transformers' `facebook/vjepa2-*` safetensors (query/key/value
    fused into qkv), Meta's `.pt` (`target_encoder`, prefixes stripped, predictor and the rest ignored), our
    repo files, and transformers' `save_pretrained` of our classifier (`encoder.` prefix).

    A sincos `pos_embed` (models without RoPE) is a function of the configured grid, so the model's own
    table replaces a checkpoint's table of another size; another channel count adapts the stem.
    """
    state_dict = original_parts(state_dict)["encoder"]
    own = model.state_dict()
    if "pos_embed" in state_dict and "pos_embed" in own and state_dict["pos_embed"].shape != own["pos_embed"].shape:
        state_dict = dict(state_dict, pos_embed=own["pos_embed"])
    stem = state_dict.get("patch_embed.proj.weight")
    in_chans = own["patch_embed.proj.weight"].shape[1]
    if stem is not None and stem.shape[1] != in_chans:
        state_dict = dict(state_dict, **{"patch_embed.proj.weight": adapt_stem(stem, in_chans)})
    return state_dict


def adapt_stem(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Pretrained patch-embed weights for another channel count, by timm's rule: a grey input sums the
    colour filters; otherwise the source channels repeat and scale by source / in_chans.

    Done here for the 5-D tubelet Conv3d, which timm's own `adapt_input_conv` does not take (some timm
    versions drop it to random init, older ones fail); `_create` keeps timm from trying.
    """
    source = weight.shape[1]
    adapted = weight.float()
    if in_chans == 1:
        adapted = adapted.sum(1, keepdim=True)
    else:
        repeats = [1, -(-in_chans // source)] + [1] * (weight.ndim - 2)
        adapted = adapted.repeat(*repeats)[:, :in_chans] * (source / in_chans)
    return adapted.to(weight.dtype)


# ----------------------------------------------------------------------------------------------
# Pretrained configs and entry points
# ----------------------------------------------------------------------------------------------


def _cfg(variant: str, img_size: int, num_frames: int, hf_hub_id: str | None = None) -> dict[str, Any]:
    config = VJEPA2AreaConfig(**VARIANTS[variant], img_size=img_size, num_frames=num_frames)
    cfg = timm_pretrained_cfg(config, num_classes=0, hf_hub_id=hf_hub_id)
    if hf_hub_id is None:
        cfg.pop("license")  # random init: no weights, no weight license
    return cfg


# name -> (variant, img_size, num_frames, Hub repo of its weights): the released models, whose weights load
# as they are (transformers' `facebook/vjepa2-*` safetensors by default, or Meta's `.pt` with
# `pretrained_cfg_overlay=dict(file="vitl.pt")`, both through checkpoint_filter_fn), then random-init sizes.
_MODELS = {
    **{name: (r.variant, r.img_size, r.num_frames, r.transformers_repo) for name, r in RELEASED_MODELS.items()},
    **{timm_name(variant): (variant, 256, 16, None) for variant in ("tiny", "small", "base")},
}
default_cfgs = generate_default_cfgs({name + suffix: _cfg(*spec) for name, spec in _MODELS.items() for suffix in ("", "_area")})


def released_weights(name: str, revision: str | None = None, overlay: dict | None = None) -> dict[str, Any]:
    """timm's arguments that load an entry's released weights from the Hub snapshot `resolve_folder` finds
    (offline-aware, one `SourceError` line on failure), as every other entry point reads them; `overlay` is
    the caller's `pretrained_cfg_overlay` (another `hf_hub_id`, or a `file` read as it is). A sharded repo (no
    single model.safetensors) goes through timm's own download."""
    import timm.models

    cfg, overlay = timm.models.get_pretrained_cfg(name), overlay or {}
    hub_id, file = overlay.get("hf_hub_id") or getattr(cfg, "hf_hub_id", None), overlay.get("file") or getattr(cfg, "file", None)
    if file or not hub_id:
        return {}
    try:
        weights = resolve_folder(hub_id, revision) / SAFE_WEIGHTS_NAME
    except SourceError as error:
        released = RELEASED_MODELS.get(name.removesuffix("_area"))
        meta_file = released.pt_file if released else "vitl.pt"
        raise SourceError(f"{name}: pretrained weights: {error}; or pass Meta's file: "
                          f"pretrained_cfg_overlay=dict(file={meta_file!r})") from None  # fmt: skip
    return {"pretrained_cfg_overlay": {"file": str(weights)}} if weights.is_file() else {}


def _create(name: str, pretrained: bool = False, **kwargs: Any) -> VJEPA2Area:
    depth = kwargs.get("depth", VJEPA2AreaConfig.depth)
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    if pretrained:
        overlay.update(released_weights(name, overlay=overlay).get("pretrained_cfg_overlay", {}))
    if kwargs.get("in_chans", 3) != 3:  # the stem is adapted by checkpoint_filter_fn, not by timm
        overlay["first_conv"] = None
    if overlay:
        kwargs["pretrained_cfg_overlay"] = overlay
    return build_model_with_cfg(
        VJEPA2Area,
        name,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=min(3, depth)),
        **kwargs,
    )


def _entry(name: str, variant: str, area: bool, img_size: int, num_frames: int):
    def entry(pretrained: bool = False, **kwargs: Any) -> VJEPA2Area:
        args = dict(VARIANTS[variant], img_size=img_size, num_frames=num_frames)
        if area:
            args["area_splits"] = DEFAULT_AREA_SPLITS
        return _create(name, pretrained, **{**args, **kwargs})

    weights = f"released fpc64 weights at {img_size} px" if _MODELS[name.removesuffix("_area")][3] else "random init"
    attention = (f"ST-A² area attention: area_splits {DEFAULT_AREA_SPLITS} over the first {DEFAULT_AREA_FRACTION:.0%} of blocks"
                 if area else "full attention")  # fmt: skip
    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"V-JEPA 2 {variant} encoder, {weights}, {num_frames} frames; {attention}."
    with warnings.catch_warnings():  # re-registering our own names (module reload) is not a conflict
        warnings.filterwarnings("ignore", message=f"Overwriting {name} in registry", category=UserWarning)
        return register_model(entry)


# One entry point per model, full attention and `_area`: vjepa2_vitl, vjepa2_vitl_area, ..., vjepa2_vitb_area.
for _name, (_variant, _img_size, _num_frames, _) in _MODELS.items():
    for _suffix in ("", "_area"):
        globals()[_name + _suffix] = _entry(_name + _suffix, _variant, bool(_suffix), _img_size, _num_frames)
del _name, _variant, _img_size, _num_frames, _suffix
