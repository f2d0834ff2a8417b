"""One Hub repo folder for transformers and timm (`save_repo_folder`), and publishing it (`push_folder`).

`save_repo_folder` is `save_pretrained` made atomic, plus the video processor, model card and extra files:

- `config.json`: transformers' fields with `auto_map`, and timm's `architecture`, `num_classes`,
  `num_features`, `pretrained_cfg`, `model_args` (the config derives them on every save);
- `model.safetensors`: one state dict in the original V-JEPA 2 key names (`patch_embed.proj.*`,
  `blocks.{i}.*`, `norm.*`; a classifier adds `head.pooler.*`, `head.linear.*`), which timm reads as is
  and transformers loads into every class;
- the modeling files, copied flat by `save_pretrained`, for `trust_remote_code=True`;
- `video_preprocessor_config.json` for `VJEPA2AreaVideoProcessor` (transformers' `VJEPA2VideoProcessor`, decoding with PyAV).

Converted repo ids: `{HUB_ORG}/vjepa2-vitl[-st-a2]` (`repo_id_for`, from the released-models table).
"""

from __future__ import annotations

import os
import pathlib
from typing import Mapping

import torch
from torch import nn
from transformers.utils import SAFE_WEIGHTS_NAME

from ._files import FILE_MODE, is_nonempty, write_folder_atomically
from .modeling.configuration_vjepa2_area import VJEPA2AreaConfig
from .modeling.released import RELEASED_MODELS

# The organisation that holds the converted checkpoints: set here, or with HF_VJEPA_AREA_ORG.
HUB_ORG: str = os.environ.get("HF_VJEPA_AREA_ORG", "hf-vjepa-area")


def repo_id_for(name: str, area: bool = False) -> str:
    """Our repo id for a released model (`vjepa2_vitl` -> `hf-vjepa-area/vjepa2-vitl`, `-st-a2` with area attention)."""
    if name not in RELEASED_MODELS:
        raise ValueError(f"unknown released model {name!r}: one of {sorted(RELEASED_MODELS)}")
    return f"{HUB_ORG}/{name.replace('_', '-')}{'-st-a2' if area else ''}"


def repo_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors in the original key names (the classifier's `encoder.` prefix removed); the
    weights of a model loaded with CPU/disk offload (`device_map`) are brought back, never left out."""
    state = model.state_dict()
    if any(value.device.type == "meta" for value in state.values()):
        from accelerate.utils.modeling import get_state_dict_offloaded_model

        onloaded = get_state_dict_offloaded_model(model)
        missing = sorted(set(state) - set(onloaded))
        if missing:
            raise ValueError(f"cannot save: {len(missing)} tensors have no data (meta device), e.g. {missing[:3]}; "
                             "load the model fully (without device_map offloading) before saving it")  # fmt: skip
        state = {key: onloaded[key] for key in state}
    prefix = model.base_model_prefix + "."
    if hasattr(model, "head"):
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def save_repo_folder(
    model: nn.Module,
    folder: str | os.PathLike,
    *,
    model_card: str | None = None,
    safetensors_metadata: Mapping[str, str] | None = None,
    extra_files: Mapping[str, bytes | str] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write a Hub repo folder that transformers and timm both load (see the module docstring).

    `model` is a `VJEPA2AreaModel` or `VJEPA2AreaForVideoClassification`. Written beside `folder` under a
    temporary name and renamed into place: a failure leaves no half-written repo. An existing non-empty
    `folder` is refused unless `overwrite=True`. `extra_files` maps relative names to contents.
    """
    from safetensors.torch import load_file

    from .modeling.video_processing_vjepa2_area import VJEPA2AreaVideoProcessor

    if getattr(getattr(model, "config", None), "model_type", None) != VJEPA2AreaConfig.model_type:
        raise TypeError(f"save_repo_folder expects a VJEPA2AreaModel or VJEPA2AreaForVideoClassification, got {type(model).__name__}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in (safetensors_metadata or {}).items()):
        raise ValueError(f"safetensors_metadata must map str to str, got {safetensors_metadata!r}")
    for name, content in (extra_files or {}).items():
        if not name or ".." in pathlib.PurePosixPath(name).parts or name.startswith("/") or "\\" in name:
            raise ValueError(f"extra_files name {name!r} must be a relative path inside the repo folder")
        if not isinstance(content, (str, bytes)):
            raise ValueError(f"extra_files[{name!r}] must be bytes or str, got {type(content).__name__}")
    folder = pathlib.Path(folder).expanduser().absolute()
    if is_nonempty(folder) and not overwrite:
        raise FileExistsError(f"{folder} exists and is not an empty folder; pass overwrite=True to replace it")

    def write(staging: pathlib.Path) -> None:
        model.save_pretrained(staging, state_dict=repo_state_dict(model))
        weights = staging / SAFE_WEIGHTS_NAME
        if safetensors_metadata:
            save_safetensors(load_file(weights), weights, metadata=safetensors_metadata)
        weights.chmod(FILE_MODE)  # transformers' save_pretrained writes through safetensors too
        height, width = model.config.img_size  # the released recipe: short side to crop * 256 / 224, center crop
        VJEPA2AreaVideoProcessor(crop_size={"height": height, "width": width}).save_pretrained(staging)
        files = {**({"README.md": model_card} if model_card is not None else {}), **(extra_files or {})}
        for name, content in files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)

    write_folder_atomically(folder, write)
    return folder


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """`safetensors.torch.save_file` with the permissions of the folder's other files (contiguous tensors)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt", **(metadata or {})})
    pathlib.Path(path).chmod(FILE_MODE)


def check_repo_id(repo_id: str) -> None:
    """ORG/NAME as the Hub accepts it (huggingface_hub's own rules), checked before any work is done."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("it must name an organisation or user and a repo")
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--push-to-hub needs ORG/NAME, got {repo_id!r}: {error}") from None


def push_folder(folder: str | os.PathLike, repo_id: str, *, private: bool = False,
                commit_message: str | None = None, api=None) -> dict:  # fmt: skip
    """Publish a saved folder: `create_repo(exist_ok=True)` then `upload_folder` in one commit (files the Hub
    already has are not sent again). The token comes from `HF_TOKEN` or `hf auth login`; `api` defaults to
    `huggingface_hub.HfApi()` (tests pass a recorder). `private` applies when the repo is created."""
    folder = pathlib.Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json)")
    check_repo_id(repo_id)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", ignore_patterns=[".*", "**/.*"],
                             commit_message=commit_message or f"Upload {folder.name} (hf_vjepa_area)")  # fmt: skip
    return {"repo_id": repo_id, "url": str(getattr(url, "url", url)), "commit": getattr(info, "oid", None)}


__all__ = [
    "HUB_ORG",
    "repo_id_for",
    "repo_state_dict",
    "save_repo_folder",
    "check_repo_id",
    "push_folder",
]
