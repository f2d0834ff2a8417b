"""One Hub repo layout for transformers and timm.

A repo folder written by `save_repo_folder` holds:

- `config.json`: the transformers config (with `auto_map`) plus timm's `architecture`, `num_classes`,
  `num_features`, `pretrained_cfg` and `model_args`, which `timm.create_model("hf-hub:...")` reads;
- `model.safetensors`: one state dict in the original V-JEPA 2 key names (`patch_embed.proj.*`,
  `blocks.{i}.*`, `norm.*`; a classifier adds `head.pooler.*`, `head.linear.*`). timm reads it as is;
  transformers adds the `encoder.` prefix of `VJEPA2AreaForVideoClassification` per key (its
  `base_model_prefix`), so the same file loads into every class;
- the modeling files, copied flat, for `trust_remote_code=True`;
- `video_preprocessor_config.json` for transformers' `VJEPA2VideoProcessor`;
- `README.md` (model card) and any extra files.

Repo ids: `{HUB_ORG}/vjepa2-{vitl,vith,vitg,...}[-st-a2][-384]` (see `repo_id_for`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile
import uuid
from typing import Any, Mapping

import torch
from torch import nn

from ._files import write_text_atomically
from .modeling.configuration_vjepa2_area import VARIANTS, VJEPA2AreaConfig, variant_of
from .modeling.timm_metadata import (
    timm_architecture,
    timm_config_fields,
    timm_model_args,
    timm_pretrained_cfg,
)
from .modeling.modeling_vjepa2_area import AUTO_MAP, VJEPA2AreaForVideoClassification, VJEPA2AreaModel

# The organisation that holds the converted checkpoints: set here, or with HF_VJEPA_AREA_ORG.
HUB_ORG: str = os.environ.get("HF_VJEPA_AREA_ORG", "hf-vjepa-area")

WEIGHTS_NAME = "model.safetensors"

_VARIANT_ALIASES = {"t": "tiny", "s": "small", "b": "base", "l": "large", "h": "huge", "g": "giant"}
_ENCODER_CLASSES = ("VJEPA2AreaModel",)
_CLASSIFIER_CLASSES = ("VJEPA2AreaForVideoClassification",)


def normalize_variant(variant: str) -> str:
    """'large', 'vitl', 'ViT-L', 'l' -> 'large' (spell the 1664-wide ViT as 'gigantic')."""
    if not isinstance(variant, str):
        raise ValueError(f"variant must be a string such as 'large' or 'vitl', got {variant!r}")
    key = variant.strip()
    if key.lower() in VARIANTS:
        return key.lower()
    if key.lower() in ("vitgigantic", "vit-gigantic", "vit_gigantic"):
        return "gigantic"
    short = key.lower().replace("-", "").replace("_", "")
    short = short.removeprefix("vjepa2").removeprefix("vit")
    if short in _VARIANT_ALIASES:
        return _VARIANT_ALIASES[short]
    if short in VARIANTS:
        return short
    raise ValueError(
        f"unknown variant {variant!r}: use one of {sorted(VARIANTS)} or a short name such as 'vitl', 'vith', 'vitg'"
    )


def _size_suffix(img_size) -> str:
    if isinstance(img_size, (list, tuple)):
        if len(img_size) != 2:
            raise ValueError(f"img_size must be an int or (height, width), got {img_size!r}")
        height, width = (int(v) for v in img_size)
        if height != width:
            return f"-{height}x{width}"
        img_size = height
    img_size = int(img_size)
    return "" if img_size == 256 else f"-{img_size}"


def repo_id_for(variant: str, area: bool, img_size: int = 256) -> str:
    """Hub repo id of a converted encoder.

    >>> repo_id_for("large", area=True)   # doctest: +SKIP
    'hf-vjepa-area/vjepa2-vitl-st-a2'
    >>> repo_id_for("vitg", area=False, img_size=384)   # doctest: +SKIP
    'hf-vjepa-area/vjepa2-vitg-384'
    """
    variant = normalize_variant(variant)
    short = "vitgigantic" if variant == "gigantic" else f"vit{variant[0]}"
    return f"{HUB_ORG}/vjepa2-{short}{'-st-a2' if area else ''}{_size_suffix(img_size)}"


def _kind(model: nn.Module) -> str | None:
    """'encoder' / 'classifier' for our transformers classes, also when loaded as remote code."""
    if isinstance(model, VJEPA2AreaForVideoClassification):
        return "classifier"
    if isinstance(model, VJEPA2AreaModel):
        return "encoder"
    if getattr(getattr(model, "config", None), "model_type", None) == VJEPA2AreaConfig.model_type:
        if type(model).__name__ in _CLASSIFIER_CLASSES:
            return "classifier"
        if type(model).__name__ in _ENCODER_CLASSES:
            return "encoder"
    return None


def repo_timm_fields(model: nn.Module) -> dict[str, Any]:
    """config.json's timm keys for a transformers model (see `timm_metadata.timm_config_fields`)."""
    return timm_config_fields(model.config, classifier=_kind(model) == "classifier")


# ----------------------------------------------------------------------------------------------
# Writing a repo folder
# ----------------------------------------------------------------------------------------------


def repo_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors in the original key names (`encoder.` prefix of the classifier removed)."""
    state = model.state_dict()
    if any(value.device.type == "meta" for value in state.values()):
        state = _onloaded_state_dict(model, state)
    if _kind(model) == "classifier":
        prefix = model.base_model_prefix + "."
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def _onloaded_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of a model loaded with CPU/disk offload (`device_map`), whose own state dict holds meta
    placeholders: accelerate brings each module's tensors back in turn. Anything still without data is an
    error, never a silently smaller checkpoint."""
    from accelerate.utils.modeling import get_state_dict_offloaded_model

    onloaded = get_state_dict_offloaded_model(model)
    missing = sorted(set(state) - set(onloaded))
    if missing:
        raise ValueError(
            f"cannot save: {len(missing)} tensors have no data (meta device), e.g. {missing[:3]}; "
            "load the model fully (without device_map offloading) before saving it"
        )
    return {key: onloaded[key] for key in state}


def _modeling_files(model: nn.Module) -> list[pathlib.Path]:
    """The file defining the model class and its sibling-relative imports (what remote code needs)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    model_file = pathlib.Path(sys.modules[type(model).__module__].__file__)
    config_file = pathlib.Path(sys.modules[type(model.config).__module__].__file__)
    files = [model_file, config_file, *(pathlib.Path(f) for f in get_relative_import_files(str(model_file)))]
    unique: dict[str, pathlib.Path] = {}
    for path in files:
        unique.setdefault(path.name, path)
    return list(unique.values())


def _config_dict(model: nn.Module) -> dict[str, Any]:
    config = model.config
    data = json.loads(config.to_json_string(use_diff=False))
    data.pop("_name_or_path", None)
    data["architectures"] = [type(model).__name__]
    data["auto_map"] = dict(AUTO_MAP)
    data["model_type"] = config.model_type
    data["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    data.update(repo_timm_fields(model))
    return data


def _check_extra_name(name: str) -> pathlib.PurePosixPath:
    path = pathlib.PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise ValueError(f"extra_files name {name!r} must be a relative path inside the repo folder")
    return path


def _write_folder(
    model: nn.Module,
    target: pathlib.Path,
    model_card: str | None,
    safetensors_metadata: Mapping[str, str] | None,
    extra_files: Mapping[str, bytes | str] | None,
) -> None:
    from safetensors.torch import save_file
    from transformers import VJEPA2VideoProcessor

    metadata = {"format": "pt"}
    for key, value in (safetensors_metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"safetensors_metadata must map str to str; got {key!r}: {type(value).__name__}")
        metadata[key] = value
    save_file(repo_state_dict(model), str(target / WEIGHTS_NAME), metadata=metadata)
    (target / WEIGHTS_NAME).chmod(0o644)  # safetensors writes through a private (0600) temporary file

    (target / "config.json").write_text(json.dumps(_config_dict(model), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for source in _modeling_files(model):
        shutil.copyfile(source, target / source.name)

    height, width = (int(side) for side in model.config.img_size)
    # The released recipe: resize the short side to crop * 256 / 224 (from the crop height), then center crop.
    VJEPA2VideoProcessor(crop_size={"height": height, "width": width}).save_pretrained(str(target))

    if model_card is not None:
        (target / "README.md").write_text(model_card, encoding="utf-8")
    for name, content in (extra_files or {}).items():
        path = target / _check_extra_name(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        elif isinstance(content, (bytes, bytearray)):
            path.write_bytes(bytes(content))
        else:
            raise ValueError(f"extra_files[{name!r}] must be bytes or str, got {type(content).__name__}")


def move_into_place(staged: pathlib.Path, folder: pathlib.Path) -> None:
    """Rename a finished folder to `folder`; an existing one is swapped out and removed only after the
    new one is in place, and restored if the rename fails."""
    if not folder.exists():
        staged.rename(folder)
        return
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    folder.rename(old)
    try:
        staged.rename(folder)
    except BaseException:
        old.rename(folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_repo_folder(
    model: nn.Module,
    folder: str | os.PathLike,
    *,
    model_card: str | None = None,
    safetensors_metadata: dict[str, str] | None = None,
    extra_files: dict[str, bytes | str] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write a Hub repo folder that both transformers and timm load (see the module docstring).

    `model` is a `VJEPA2AreaModel` or a `VJEPA2AreaForVideoClassification`. The folder is written
    beside `folder` under a temporary name and renamed into place, so a failure leaves no half-written
    repo. An existing non-empty `folder` is refused unless `overwrite=True`.
    """
    if _kind(model) is None:
        raise TypeError(
            f"save_repo_folder expects a VJEPA2AreaModel or VJEPA2AreaForVideoClassification, got {type(model).__name__}"
        )
    folder = pathlib.Path(folder).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a directory")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder} exists and is not empty; pass overwrite=True to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)

    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        _write_folder(model, staging, model_card, safetensors_metadata, extra_files)
        staging.chmod(0o755)
        move_into_place(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


# ----------------------------------------------------------------------------------------------
# Offline Hub cache (tests, air-gapped machines)
# ----------------------------------------------------------------------------------------------


def add_folder_to_hub_cache(
    folder: str | os.PathLike,
    repo_id: str,
    cache_dir: str | os.PathLike | None = None,
    commit_hash: str | None = None,
) -> pathlib.Path:
    """Copy a repo folder into a Hugging Face Hub cache as `repo_id`'s `main` revision.

    With `HF_HUB_OFFLINE=1`, `from_pretrained(repo_id)` and `timm.create_model("hf-hub:" + repo_id)` then
    load it without a network. Returns the snapshot folder.
    """
    from huggingface_hub import constants

    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    cache = pathlib.Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    commit_hash = commit_hash or uuid.uuid4().hex + uuid.uuid4().hex[:8]
    if len(commit_hash) != 40 or any(c not in "0123456789abcdef" for c in commit_hash):
        raise ValueError(f"commit_hash must be 40 lowercase hex digits, got {commit_hash!r}")
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit_hash
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    # Copied beside the snapshot and swapped in, and the ref replaced by rename: a failed copy leaves the
    # cache as it was, never a ref pointing at half a snapshot.
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{commit_hash}.tmp-", dir=snapshot.parent))
    try:
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        move_into_place(staging, snapshot)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_text_atomically(repo_dir / "refs" / "main", commit_hash, overwrite=True)
    return snapshot


__all__ = [
    "HUB_ORG",
    "WEIGHTS_NAME",
    "normalize_variant",
    "repo_id_for",
    "variant_of",
    "timm_architecture",
    "timm_model_args",
    "timm_pretrained_cfg",
    "timm_config_fields",
    "repo_timm_fields",
    "repo_state_dict",
    "save_repo_folder",
    "add_folder_to_hub_cache",
]
