"""What a model source is, answered once for every entry point: the probe, the anneal, feature extraction
and the converter load through `load_encoder`, `load_model` or `load_ssl_models`.

A source is one of:

- `"demo"`: the built-in demo encoder (`DEMO_ENCODER_CONFIG`, random init from a seed);
- a model instance (`VJEPA2AreaModel`);
- Meta's released `.pt` (or any checkpoint file), read by the conversion's reader;
- a folder or Hub id whose config.json says `model_type: vjepa2` (transformers' `facebook/vjepa2-*`);
- a folder or Hub id of ours (`model_type: vjepa2_area`, written by `save_repo_folder` / the converter);
- a timm name (`vjepa2_vitl_area`), `hf-hub:ORG/NAME` or `local-dir:PATH`.

config.json is read once per load. A local-looking source never touches the network, `HF_HUB_OFFLINE=1`
reads the cache alone, and every failure is one `SourceError` line. Area attention is set by one rule,
`AreaOptions.overrides`, whatever the kind.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file
from torch import nn
from transformers.utils import SAFE_WEIGHTS_NAME as ENCODER_WEIGHTS_NAME

from ._build import build_holding
from .checkpoint_keys import ConversionError
from .conversion.load import CONVERT_FIRST, UnstoredFactsError, build_model, read_config, read_source, read_transformers
from .locate import SourceError, looks_like_path, resolve_folder
from .modeling import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel
from .modeling.released import DEFAULT_AREA_SPLITS, parse_area_layers
from .modeling.predictor_vjepa2_area import CONTEXT_ENCODER_WEIGHTS_NAME, PREDICTOR_WEIGHTS_NAME, VJEPA2AreaPredictor

# The built-in demo encoder: a seeded random-init ST-A² ViT, tiny enough for CPU. A frozen *random*
# encoder is enough for the demo's motion-direction classes: with near-uniform random attention and
# small residual branches its tokens are dominated by the tubelet embedding, a random linear map of two
# frames, which keeps the direction in which the bright square's edges moved; the probe learns to read
# it (see docs/probe.md).
DEMO_ENCODER_CONFIG = dict(
    img_size=64, patch_size=16, num_frames=8, tubelet_size=2, embed_dim=96, depth=4, num_heads=4,
    area_splits=DEFAULT_AREA_SPLITS,  # ST-A² in the first 75% of blocks (0..2), global attention in block 3
)  # fmt: skip
TIMM_PREFIXES = ("hf-hub:", "local-dir:")


def build_demo_encoder(seed: int = 0, **overrides: Any) -> VJEPA2AreaModel:
    """The built-in demo encoder (`DEMO_ENCODER_CONFIG`), random init from `seed`, global RNG untouched."""
    config = VJEPA2AreaConfig(**{**DEMO_ENCODER_CONFIG, **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VJEPA2AreaModel(config)


@dataclass(frozen=True)
class AreaOptions:
    """Area attention asked for: `splits` (time, height, width), `layers` ("0:18" or block indices), or
    `full_attention`. Unset fields keep the model's own; `default_splits` applies to a model that has no
    area attention when no splits are given (the anneal's: ST-A² by default)."""

    splits: Sequence[int] | None = None
    layers: str | Sequence[int] | None = None
    full_attention: bool = False
    default_splits: Sequence[int] | None = None

    def overrides(self, config: Mapping) -> dict:
        """The config fields to change in `config` (a config dict): new splits keep the model's area blocks
        if it has some, else take the default (the first 75% of blocks); new layers need splits, the
        given ones or the model's."""
        if self.full_attention:
            if self.splits is not None or self.layers is not None:
                raise ValueError("full attention cannot be combined with area splits / area layers")
            return {"area_splits": None, "area_layers": []}
        has_area = config.get("area_splits") is not None
        if self.splits is None and self.layers is None and (has_area or self.default_splits is None):
            return {}
        splits = next((s for s in (self.splits, config.get("area_splits"), self.default_splits) if s is not None), None)
        if splits is None:
            raise ValueError("area layers need area splits: this model has full attention, pass area splits too")
        layers = self.layers
        if layers is None and has_area and config.get("area_layers"):
            layers = list(config["area_layers"])
        return {"area_splits": [int(s) for s in splits], "area_layers": layers}

    def apply(self, config: VJEPA2AreaConfig) -> VJEPA2AreaConfig:
        """`config`, or a copy rebuilt with the overrides (so the splits are validated, the layers normalised)."""
        changes = self.overrides(config.to_dict())
        return VJEPA2AreaConfig(**{**config.to_dict(), **changes}) if changes else config


class Resolved(NamedTuple):
    kind: str  # "demo", "instance", "pt", "transformers", "ours" or "timm"
    where: Any  # the instance, the checkpoint file, the local folder, or the timm name
    config: dict | None = None  # a folder's config.json (read once here); None for the other kinds


def resolve(source: str | os.PathLike | nn.Module, revision: str | None = None) -> Resolved:
    """What `source` is, with a Hub id resolved to its local snapshot (see the module docstring)."""
    if isinstance(source, nn.Module):
        return Resolved("instance", source)
    text = os.fspath(source)
    if text == "demo":
        return Resolved("demo", text)
    if text.startswith(TIMM_PREFIXES):
        return Resolved("timm", text)
    path = Path(text).expanduser()
    if path.is_file():
        if revision:
            raise SourceError(f"--revision: {text} is a local file, which has no revisions (they are for Hub ids)")
        return Resolved("pt", path)
    if "/" not in text and not looks_like_path(text):  # a bare name: timm's
        if _is_timm_name(text):
            return Resolved("timm", text)
        raise SourceError(f"{text}: no such local file or folder, Hub id (ORG/NAME) or timm model name "
                          "(e.g. vjepa2_vitl_area)")  # fmt: skip
    folder = resolve_folder(text, revision)  # a local folder, or a Hub id's snapshot
    try:
        config = read_config(folder, text)
    except ConversionError as error:
        raise SourceError(f"{error}: not a model folder") from None
    kind = {"vjepa2": "transformers", VJEPA2AreaConfig.model_type: "ours"}.get(config.get("model_type"))
    if kind is None:
        raise SourceError(f"{text} is a {config.get('model_type')!r} model, not a V-JEPA 2 one")
    return Resolved(kind, folder, config)


@contextlib.contextmanager
def _one_line(source):
    """Any failure to read `source` as one `SourceError` line naming it (with the converter's hint where a
    `.pt` lacks what its tensors do not store)."""
    try:
        yield
    except SourceError:
        raise
    except UnstoredFactsError as error:
        raise SourceError(f"{_name(source)}: {' '.join(str(error).split())}; {CONVERT_FIRST}") from None
    except (ValueError, OSError) as error:
        raise SourceError(f"{_name(source)}: {' '.join(str(error).split())}") from None


def _name(source) -> str:
    if isinstance(source, Resolved):
        source = source.where
    return "a model instance" if isinstance(source, nn.Module) else os.fspath(source)


def load_model(source: str | os.PathLike | nn.Module | Resolved, *, area: AreaOptions = AreaOptions(), pretrained: bool = True,
               revision: str | None = None, seed: int = 0, read_options: dict | None = None) -> nn.Module:  # fmt: skip
    """The model of `source` (or of what `resolve` found) with `area` applied: a `VJEPA2AreaModel`, a
    `VJEPA2AreaForVideoClassification` (a classifier's folder or a `.pt` with `read_options=dict(probe=...)`),
    or for a timm source timm's `VJEPA2Area` without a head. `pretrained=False`: the same architecture, random init (ours and timm);
    `read_options`: what a `.pt` does not store (`variant`, `predictor_heads`, `img_size`, `num_frames`)."""
    with _one_line(source):
        found = source if isinstance(source, Resolved) else resolve(source, revision)
        if found.kind == "demo":
            return build_demo_encoder(seed, **area.overrides(DEMO_ENCODER_CONFIG))
        if found.kind == "instance":
            model = found.where
            config = area.apply(model.config)
            return model if config is model.config else build_holding(lambda: type(model)(config), model.state_dict())
        if found.kind == "timm":
            return _timm_model(found.where, area, pretrained, revision)
        if found.kind == "ours":
            config = area.apply(VJEPA2AreaConfig.from_dict(found.config))
            classifier = found.config.get("architectures") == [VJEPA2AreaForVideoClassification.__name__]
            model_class = VJEPA2AreaForVideoClassification if classifier else VJEPA2AreaModel
            return model_class.from_pretrained(found.where, config=config) if pretrained else model_class(config)
        read = _read_released(found, source, read_options or {}, with_predictor=False)
        return build_model(read.model_class, area.apply(read.config), read.encoder)


def load_encoder(source: str | os.PathLike | nn.Module, *, area: AreaOptions = AreaOptions(), pretrained: bool = True,
                 revision: str | None = None, seed: int = 0, read_options: dict | None = None) -> nn.Module:  # fmt: skip
    """The frozen encoder to probe or encode with: `.encode(x [B, C, T, H, W]).last_hidden_state`, a
    `VJEPA2AreaConfig` at `.config`, eval mode, gradients off. A classifier's encoder is taken without
    its head. Arguments as for `load_model`."""
    model = load_model(source, area=area, pretrained=pretrained, revision=revision, seed=seed, read_options=read_options)
    if isinstance(model, VJEPA2AreaForVideoClassification):
        model = model.encoder
    return model.eval().requires_grad_(False)


def _read_released(found: Resolved, source, read_options: dict, with_predictor: bool):
    if found.kind == "pt":
        return read_source(found.where, with_predictor=with_predictor, **read_options)
    options = dict(read_options)
    out_layers = options.pop("probe_out_layers", None)
    return read_transformers(source, found.where, found.config, with_predictor=with_predictor, out_layers=out_layers, **options)


def _is_timm_name(name: str) -> bool:
    """One of our timm entry points (`vjepa2_vitl_area`, ...); timm's other models are no V-JEPA 2 encoders."""
    from timm.models import is_model, model_entrypoint

    from . import timm_models

    return is_model(name) and model_entrypoint(name).__module__ == timm_models.__name__


def _timm_model(name: str, area: AreaOptions, pretrained: bool, revision: str | None) -> nn.Module:
    """timm's model (no head) with `area` applied by the one rule to the model's own config: a registered
    entry's defaults, or the config.json of `hf-hub:` / `local-dir:` (a Hub id resolved offline-aware)."""
    import timm

    from . import timm_models

    if name.startswith(TIMM_PREFIXES):
        repo = name.split(":", 1)[1]
        folder = Path(repo).expanduser() if name.startswith("local-dir:") else resolve_folder(repo, revision)
        base, name = read_config(folder, name), f"local-dir:{folder}"
    else:
        base = timm.create_model(name, pretrained=False, num_classes=0, device="meta").config.to_dict()
    kwargs = {key: value for key, value in area.overrides(base).items() if value is not None}  # timm drops None
    if pretrained and not name.startswith(TIMM_PREFIXES):
        kwargs.update(_published_weights(name, revision))
    if "area_splits" in kwargs and "area_layers" not in kwargs:  # the default blocks, not a saved (empty) list
        kwargs["area_layers"] = parse_area_layers(None, base["depth"])
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    if not isinstance(model, timm_models.VJEPA2Area):
        raise SourceError(f"{name}: a timm {type(model).__name__}, not a V-JEPA 2 encoder (architecture vjepa2_*)")
    return model


def _published_weights(name: str, revision: str | None) -> dict:
    """A frozen encoder needs weights: refuse a random-init entry (timm would only warn), else the released
    weights at `revision` (`timm_models.released_weights`)."""
    from timm.models import get_pretrained_cfg

    from .timm_models import released_weights

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise SourceError(f"{name}: this timm model has no published weights: pass pretrained=False (--no-pretrained) "
                          "for a random init, or a converted model (a folder or Hub id written by vjepa2-area-convert)")  # fmt: skip
    return released_weights(name, revision)


# ----------------------------------------------------------------------------------------------
# Self-supervised training: encoder, target encoder, predictor
# ----------------------------------------------------------------------------------------------


class SSLModels(NamedTuple):
    encoder: VJEPA2AreaModel  # the context encoder (trained)
    target_encoder: VJEPA2AreaModel  # EMA of the encoder, frozen; what an anneal publishes
    predictor: VJEPA2AreaPredictor


def load_ssl_models(source: str | os.PathLike | VJEPA2AreaModel, *, area: AreaOptions = AreaOptions(),
                    init_predictor: str = "checkpoint", revision: str | None = None, read_options: dict | None = None,
                    seed: int | None = None, **overrides) -> SSLModels:  # fmt: skip
    """Encoder, target encoder and predictor for V-JEPA 2 training, all float32.

    `source` as for `load_model` except timm names: one of ours (`model.safetensors` = the target
    encoder, optional `predictor.safetensors` and `context_encoder.safetensors`), a released `.pt`
    (`target_encoder`, `predictor`, `encoder`) or transformers folder (encoder and predictor), a
    `VJEPA2AreaModel`, or "demo" (`build_demo_encoder(seed)` with `overrides`). The context encoder starts
    from the source's context encoder when it has one, else from the target encoder.
    `init_predictor`: "checkpoint" (the source's predictor; its mask-token count wins over the config's)
    or "random" (released init, drawn from `seed` when given). `area` applies to the encoder and the target
    encoder alike; `overrides` are config fields (`predictor_*` ones included).
    """
    if init_predictor not in ("checkpoint", "random"):
        raise ValueError(f"init_predictor must be 'checkpoint' or 'random', got {init_predictor!r}")
    unknown = sorted(set(overrides) - set(VJEPA2AreaConfig.__annotations__))
    if unknown:
        raise ValueError(f"{unknown} are not VJEPA2AreaConfig fields")
    if {"area_splits", "area_layers"} & set(overrides):
        raise ValueError("the encoder's area attention is set by area=AreaOptions(splits, layers, full_attention)")
    with _one_line(source), torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext():
        if seed is not None:  # a random predictor's init depends on the seed only
            torch.manual_seed(seed)
        found = resolve(source, revision)
        if found.kind == "demo":
            found, overrides = Resolved("instance", build_demo_encoder(seed or 0, **overrides)), {}
        config_dict, encoder_state, predictor_state, context_state, what = _read_weights(
            found, source, read_options or {}, with_predictor=init_predictor == "checkpoint")
        # A classifier's file holds its probe as `head.*` beside the encoder: not part of SSL training.
        encoder_state = {key: value for key, value in encoder_state.items() if not key.startswith("head.")}
        if init_predictor == "random":
            predictor_state = None
        elif predictor_state is None:
            raise SourceError(
                f"{what} has no predictor weights: use a released .pt or facebook/vjepa2-* folder, convert the source "
                f"with its predictor (conversion writes {PREDICTOR_WEIGHTS_NAME}), or start a fresh predictor with "
                "init_predictor='random' (--init-predictor random)"
            )
        else:  # the released files carry 10 mask tokens whatever the training that follows uses
            overrides = {**overrides, "predictor_num_mask_tokens": sum(k.startswith("mask_tokens.") for k in predictor_state)}
        config_dict = {**config_dict, **overrides}
        if "predictor_area_splits" in overrides and "predictor_area_layers" not in overrides:
            config_dict["predictor_area_layers"] = None  # new splits: their default blocks, not the saved list
        config = VJEPA2AreaConfig.from_dict({**config_dict, **area.overrides(config_dict)})

        def holding(model_class, state, name):
            return build_holding(lambda: model_class(config), state, what=name).float()

        target_encoder = holding(VJEPA2AreaModel, encoder_state, ENCODER_WEIGHTS_NAME)
        encoder = copy.deepcopy(target_encoder) if context_state is None else holding(
            VJEPA2AreaModel, context_state, CONTEXT_ENCODER_WEIGHTS_NAME)  # fmt: skip
        predictor = VJEPA2AreaPredictor(config) if predictor_state is None else holding(
            VJEPA2AreaPredictor, predictor_state, PREDICTOR_WEIGHTS_NAME)  # fmt: skip
    target_encoder.requires_grad_(False).eval()
    return SSLModels(encoder.train(), target_encoder, predictor.train())


def _read_weights(found: Resolved, source, read_options: dict,
                  with_predictor: bool) -> tuple[dict, dict, dict | None, dict | None, str]:  # fmt: skip
    """(config dict, encoder state, predictor state, context-encoder state, what) of any source we train from."""
    if found.kind == "instance":
        model = found.where
        state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        return model.config.to_dict(), state, None, None, "a model instance"
    if found.kind == "timm":
        raise SourceError(f"{found.where}: a timm name has no predictor or config.json to train from: pass a released "
                          "source or a folder written by vjepa2-area-convert")  # fmt: skip
    if found.kind in ("pt", "transformers"):
        read = _read_released(found, source, read_options, with_predictor)
        return read.config.to_dict(), read.encoder, read.predictor or None, read.context_encoder or None, _name(source)
    given = sorted(name for name, value in read_options.items() if value)
    if given:
        raise SourceError(f"{_name(source)}: {', '.join(given)} are for a .pt or transformers source; our folders' "
                          "config.json says")  # fmt: skip
    folder = found.where
    if not (folder / ENCODER_WEIGHTS_NAME).is_file():
        raise SourceError(f"{folder / ENCODER_WEIGHTS_NAME} not found: expected one of our folders (config.json, "
                          f"{ENCODER_WEIGHTS_NAME}), a transformers V-JEPA 2 folder or a released .pt")  # fmt: skip
    predictor, context = folder / PREDICTOR_WEIGHTS_NAME, folder / CONTEXT_ENCODER_WEIGHTS_NAME
    return (found.config, load_file(folder / ENCODER_WEIGHTS_NAME), load_file(predictor) if predictor.is_file() else None,
            load_file(context) if context.is_file() else None, _name(source))  # fmt: skip


__all__ = [
    "DEMO_ENCODER_CONFIG",
    "AreaOptions",
    "Resolved",
    "SSLModels",
    "SourceError",
    "build_demo_encoder",
    "load_encoder",
    "load_model",
    "load_ssl_models",
    "resolve",
]
