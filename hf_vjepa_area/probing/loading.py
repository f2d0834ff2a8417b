"""The encoder to probe from a source string: the built-in demo encoder, our folders and Hub ids, Meta's
released weights, or a timm name, with the area-attention options applied to its config."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modeling import VJEPA2AreaConfig, VJEPA2AreaModel

# The built-in demo encoder: a seeded random-init ST-A² ViT, tiny enough for CPU. A frozen *random*
# encoder is enough for the demo's motion-direction classes: with near-uniform random attention and
# small residual branches its tokens are dominated by the tubelet embedding, a random linear map of two
# frames, which keeps the direction in which the bright square's edges moved; the probe learns to read
# it (see docs/probe.md).
DEMO_ENCODER_CONFIG = dict(
    img_size=64,
    patch_size=16,
    num_frames=8,
    tubelet_size=2,
    embed_dim=96,
    depth=4,
    num_heads=4,
    area_splits=(2, 2, 1),  # ST-A² in the first 75% of blocks (0..2), global attention in block 3
)


def build_demo_encoder(seed: int = 0, **overrides: Any) -> VJEPA2AreaModel:
    """The built-in demo encoder (`DEMO_ENCODER_CONFIG`), random init from `seed`, global RNG untouched."""
    config = VJEPA2AreaConfig(**{**DEMO_ENCODER_CONFIG, **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VJEPA2AreaModel(config)


def _area_overrides(config: VJEPA2AreaConfig, area_splits, area_layers, full_attention: bool) -> dict | None:
    if full_attention:
        if area_splits is not None or area_layers is not None:
            raise ValueError("full_attention=True cannot be combined with area_splits / area_layers")
        return {"area_splits": None, "area_layers": None}
    if area_splits is None and area_layers is None:
        return None
    splits = list(area_splits) if area_splits is not None else config.area_splits
    if splits is None:
        raise ValueError("area_layers needs area splits: this encoder has full attention, pass area_splits too")
    if area_layers is None:  # keep the encoder's own area layers if it has some, else the default 75%
        area_layers = config.area_layers if config.area_splits is not None and config.area_layers else None
    return {"area_splits": splits, "area_layers": area_layers}


def with_area(config: VJEPA2AreaConfig, area_splits=None, area_layers=None, full_attention: bool = False) -> VJEPA2AreaConfig:
    """A copy of `config` with other area-attention settings, validated and normalised.

    The config is rebuilt from its dict (not patched, and not passed to `from_pretrained` as kwargs),
    so `__post_init__` normalises `area_layers` ("0:18" -> a list) and validates the splits.
    """
    overrides = _area_overrides(config, area_splits, area_layers, full_attention)
    if overrides is None:
        return config
    return VJEPA2AreaConfig(**{**config.to_dict(), **overrides})


def _read_hub_config(model: str, revision: str | None) -> dict | None:
    """config.json of a local folder or a Hub repo; None when there is none."""
    path = Path(model).expanduser()
    if path.is_dir():
        file = path / "config.json"
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
    if model.count("/") != 1:
        return None
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(model, "config.json", revision=revision)).read_text(encoding="utf-8"))


def load_encoder(
    model: str | None,
    *,
    area_splits: Sequence[int] | None = None,
    area_layers: str | Sequence[int] | None = None,
    full_attention: bool = False,
    pretrained: bool = True,
    revision: str | None = None,
    seed: int = 0,
) -> nn.Module:
    """The frozen encoder to probe: a module with `.encode(x [B, C, T, H, W]).last_hidden_state` and a
    `VJEPA2AreaConfig` at `.config`, in eval mode with gradients off.

    `model`:
      - None: the built-in demo encoder (`DEMO_ENCODER_CONFIG`, random init from `seed`);
      - a local folder or Hub id whose config.json has `model_type: vjepa2_area` (written by
        `save_repo_folder` / the converter): `VJEPA2AreaModel.from_pretrained` (a classifier repo's
        encoder loads too; its head is ignored);
      - a released source, as `load_released` reads it: Meta's `.pt` (`vitl.pt`) or a transformers
        `facebook/vjepa2-*` Hub id or folder (config.json `model_type: vjepa2`); no conversion needed;
      - a timm name (`vjepa2_vitl_area`, ...) or `hf-hub:ORG/NAME`: `timm.create_model(num_classes=0)`.
    Area options: `area_splits` (time, height, width), `area_layers` ("0:18" or a list), or
    `full_attention=True`. With transformers they rebuild the loaded config; with timm they are model
    arguments (`vjepa2_vitl` is full attention, `vjepa2_vitl_area` ST-A², each overridable).
    """
    if model is None:
        demo = VJEPA2AreaConfig(**DEMO_ENCODER_CONFIG)
        encoder = build_demo_encoder(seed, **(_area_overrides(demo, area_splits, area_layers, full_attention) or {}))
    elif model.startswith("hf-hub:") or model.startswith("local-dir:"):
        encoder = _timm_encoder(model, area_splits, area_layers, full_attention, pretrained)
    elif Path(model).expanduser().is_file():
        encoder = _released_encoder(model, revision, area_splits, area_layers, full_attention)
    else:
        config_dict = _read_hub_config(model, revision)
        if config_dict is not None and config_dict.get("model_type") == VJEPA2AreaConfig.model_type:
            config = VJEPA2AreaConfig.from_pretrained(model, revision=revision)
            config = with_area(config, area_splits, area_layers, full_attention)
            if pretrained:
                encoder = VJEPA2AreaModel.from_pretrained(model, config=config, revision=revision)
            else:
                encoder = VJEPA2AreaModel(config)
        elif config_dict is None and _is_timm_name(model):
            encoder = _timm_encoder(model, area_splits, area_layers, full_attention, pretrained)
        elif config_dict is not None and config_dict.get("model_type") == "vjepa2":
            encoder = _released_encoder(model, revision, area_splits, area_layers, full_attention)
        elif config_dict is not None:
            raise ValueError(f"{model!r} is a {config_dict.get('model_type')!r} model, not a V-JEPA 2 one")
        else:
            raise ValueError(
                f"cannot load {model!r}: not a local folder with config.json, a checkpoint file, a Hub id (ORG/NAME), "
                "or a registered timm model name (e.g. vjepa2_vitl_area)"
            )
    encoder.eval().requires_grad_(False)
    return encoder


def _released_encoder(model: str, revision, area_splits, area_layers, full_attention: bool) -> nn.Module:
    """Released weights through the conversion's reader, with the area options as config fields."""
    from ..conversion import load_released

    from ..conversion import ConversionError
    from ..conversion.load import CONVERT_FIRST

    area = _area_overrides(VJEPA2AreaConfig(), area_splits, area_layers, full_attention) or {}
    try:
        loaded = load_released(model, revision=revision, **area)
    except ConversionError as error:  # what a custom .pt does not store is given to the converter
        raise ValueError(f"{error}; {CONVERT_FIRST}") from None
    return loaded if isinstance(loaded, VJEPA2AreaModel) else loaded.encoder  # a classifier's head is not probed


def _is_timm_name(name: str) -> bool:
    import timm

    from .. import timm_models  # noqa: F401  (registers the vjepa2_* entry points)

    return "/" not in name and timm.is_model(name)


def _timm_encoder(name: str, area_splits, area_layers, full_attention: bool, pretrained: bool) -> nn.Module:
    import timm

    from .. import timm_models  # noqa: F401

    kwargs: dict[str, Any] = {}
    if full_attention:
        if area_splits is not None or area_layers is not None:
            raise ValueError("full_attention=True cannot be combined with area_splits / area_layers")
        kwargs["area_layers"] = []  # timm drops None-valued kwargs, so "no area blocks" says full attention
    if area_splits is not None:
        kwargs["area_splits"] = tuple(area_splits)
    if area_layers is not None:
        kwargs["area_layers"] = area_layers
    if pretrained and not _has_published_weights(name):
        raise ValueError(
            f"timm model {name!r} has no published weights: pass pretrained=False (--no-pretrained) for a random "
            "init, or a converted model (a folder or Hub id written by vjepa2-area-convert)"
        )
    encoder = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    if not hasattr(encoder, "encode") or not isinstance(getattr(encoder, "config", None), VJEPA2AreaConfig):
        raise TypeError(f"timm model {name!r} is not a V-JEPA 2 area encoder (needs .encode and a VJEPA2AreaConfig)")
    return encoder


def _has_published_weights(name: str) -> bool:
    from timm.models import get_pretrained_cfg

    if name.startswith(("hf-hub:", "local-dir:")):
        return True
    cfg = get_pretrained_cfg(name)
    return cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file)
