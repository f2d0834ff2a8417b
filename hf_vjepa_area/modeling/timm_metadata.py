"""timm's view of a `VJEPA2AreaConfig`: the keys one config.json carries for `timm.create_model("hf-hub:...")`.

timm reads `architecture` (an entry point), `model_args` (its keyword arguments), `pretrained_cfg`
(only keys of timm's `PretrainedCfg`) and `num_classes` from the same config.json that transformers
reads. The config derives them whenever it is serialized, so they never go stale (e.g. after a
transformers fine-tune changes `num_labels`). Plain Python: this file ships with the remote code.
"""

from __future__ import annotations

from typing import Any

from .configuration_vjepa2_area import TIMM_CONFIG_KEYS
from .released import variant_of

# Released V-JEPA 2 eval preprocessing: short side to crop * 256 / 224, center crop, ImageNet mean/std, bilinear.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PCT = 224 / 256

# Config fields that are not architecture (left out of timm's `model_args`).
_NOT_MODEL_ARGS = {"drop_path_rate", "init_std"}


def timm_name(variant: str) -> str:
    """The timm entry point of a size: `vjepa2_vit` + the variant's initial (`vjepa2_vitl` for large)."""
    return f"vjepa2_vit{variant[0]}"


def timm_architecture(config) -> str:
    """The timm entry point that builds this config (with `timm_model_args` as overrides).

    Sizes without an entry point of their own map to the nearest one; `model_args` carries the actual
    width and depth, so the model is rebuilt exactly either way.
    """
    variant = variant_of(config) or "tiny"
    name = timm_name("giant" if variant == "gigantic" else variant)
    if variant == "giant" and list(config.img_size) == [384, 384]:
        name += "_384"
    if config.area_splits is not None:
        name += "_area"
    return name


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(v) for key, v in value.items()}
    if isinstance(value, (tuple, list, range)):
        return [_jsonable(v) for v in value]
    return value


def timm_model_args(config) -> dict[str, Any]:
    """Every architecture field of the config, as keyword arguments of the timm entry points."""
    names = [name for name in type(config).__annotations__ if name not in _NOT_MODEL_ARGS]
    args = {name: _jsonable(getattr(config, name)) for name in names}
    height, width = config.img_size
    args["img_size"] = height if height == width else [height, width]
    return args


def timm_pretrained_cfg(
    config,
    num_classes: int = 0,
    hf_hub_id: str | None = None,
    label_names: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """timm `pretrained_cfg` for these weights (only keys timm's `PretrainedCfg` accepts).

    timm's `input_size` is (C, H, W): the number of frames is a model argument (`num_frames`); any
    number of frames that is a multiple of `tubelet_size` runs (RoPE positions come from the input).
    """
    height, width = config.img_size
    cfg = dict(
        hf_hub_filename="model.safetensors",
        input_size=(config.in_chans, height, width),
        fixed_input_size=False,
        interpolation="bilinear",
        crop_pct=CROP_PCT,
        crop_mode="center",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_classes=num_classes,
        first_conv="patch_embed.proj",
        classifier="head.linear",
        license="mit",
        origin_url="https://github.com/facebookresearch/vjepa2",
        paper_ids="arXiv:2506.09985",
        paper_name="V-JEPA 2: Self-Supervised Video Models Enable Understanding, Prediction and Planning",
        notes=(
            f"video input [B, C, T, H, W], T a multiple of {config.tubelet_size} (model arg num_frames="
            f"{config.num_frames}); images [B, C, H, W] also run",
        ),
    )
    if hf_hub_id is not None:
        cfg["hf_hub_id"] = hf_hub_id
    if label_names is not None:
        cfg["label_names"] = tuple(label_names)
    cfg.update(extra)
    return cfg


def label_names(config, num_classes: int) -> list[str] | None:
    """Class names from `id2label`, or None when they are transformers' placeholders (LABEL_i)."""
    id2label = getattr(config, "id2label", None) or {}
    names = [id2label.get(i, id2label.get(str(i))) for i in range(num_classes)]
    if not num_classes or any(n is None for n in names) or names == [f"LABEL_{i}" for i in range(num_classes)]:
        return None
    return [str(n) for n in names]


def timm_config_fields(config, classifier: bool) -> dict[str, Any]:
    """config.json's timm keys for an encoder (`classifier=False`) or an encoder + attentive probe."""
    num_classes = config.num_labels if classifier else 0
    model_args = timm_model_args(config)
    if classifier:  # keep the trained attentive pooler when timm users ask for num_classes=0 or a new head
        model_args["global_pool"] = "attn"
    pretrained_cfg = timm_pretrained_cfg(config, num_classes=num_classes, label_names=label_names(config, num_classes))
    return dict(
        architecture=timm_architecture(config),
        num_classes=num_classes,
        num_features=config.embed_dim,
        pretrained_cfg=_jsonable(pretrained_cfg),
        model_args=model_args,
    )


__all__ = [
    "TIMM_CONFIG_KEYS",
    "timm_name",
    "timm_architecture",
    "timm_model_args",
    "timm_pretrained_cfg",
    "timm_config_fields",
    "label_names",
]
