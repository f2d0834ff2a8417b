"""Reading each input format safely: Meta's `.pt` files, released probes, transformers folders / Hub ids.

Every `.pt` goes through `torch.load(weights_only=True)`: tensors, containers and plain numbers only.
A file that needs arbitrary unpickling (a class, a function, a `__reduce__`) is refused.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .keys import strip_original_prefixes


class ConversionError(Exception):
    """A problem with the input or the request, with a message meant for the user."""


class UnsafeCheckpointError(ConversionError):
    pass


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def sha256_file(path: str | Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | Path) -> dict:
    path = Path(path)
    # No local path: the record goes into conversion_report.json, which is published with the model.
    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


# Pickle opcodes that make the unpickler import or call something (what a weights-only load refuses).
_GLOBAL_OPCODES = {"GLOBAL", "INST", "STACK_GLOBAL"}


def _pickled_globals(path: Path, limit: int = 1 << 30) -> list[str] | None:
    """The globals a plain (non-zip) pickle file names, read with `pickletools` (nothing is executed).

    None when the file does not start with a pickle stream (not a checkpoint, or corrupted). Torch's
    legacy format is several pickles in a row followed by raw storage bytes: the scan stops at the
    first thing that does not parse.
    """
    import pickletools

    names: list[str] = []
    strings: list[str] = []
    parsed = False
    with open(path, "rb") as handle:
        try:
            while handle.tell() < limit:
                for op, arg, _ in pickletools.genops(handle):
                    if op.name in ("GLOBAL", "INST"):
                        names.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL":
                        names.append(".".join(strings[-2:]))
                    elif isinstance(arg, str):
                        strings = [*strings[-1:], arg]
                parsed = True
        except Exception:  # noqa: BLE001 - the end of the pickles, or garbage: either way the scan is over
            pass
    return names if parsed or names else None


def _allowed_globals() -> set[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - a private torch helper; without it every global counts as refused
        return set()


def _unreadable(path: Path, detail: str) -> ConversionError:
    return ConversionError(
        f"cannot read {path.name}: not a PyTorch checkpoint, or corrupted ({detail}). Check the file (its size, "
        "sha256 against the download page) and download it again if needed"
    )


def safe_torch_load(path: str | Path):
    """`torch.load(weights_only=True)` on CPU (memory-mapped when the file allows), or a clear refusal.

    `UnsafeCheckpointError` only when the file names a global the weights-only unpickler refuses (it
    would run code); any other failure is a damaged or foreign file, reported as such.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    is_zip = zipfile.is_zipfile(path)  # the zip format can be memory-mapped: big files stay on disk
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        refused = next((line for line in lines if "GLOBAL" in line or "global" in line.lower().split(":")[0]), None)
        if refused is None and not is_zip:
            found = _pickled_globals(path)
            if found is None:
                detail = next((line for line in lines if "Unsupported" in line), lines[0] if lines else "")
                raise _unreadable(path, detail) from None
            blocked = [name for name in found if name not in _allowed_globals()]
            if blocked:
                refused = f"it names {', '.join(sorted(set(blocked))[:5])}"
        if refused is None:
            detail = next((line for line in lines if "Unsupported" in line), lines[-1] if lines else type(err).__name__)
            raise ConversionError(
                f"cannot read {path.name} with torch.load(weights_only=True): {detail}. If it is a checkpoint you "
                "trust, load it yourself and re-save its tensors with torch.save (zip format)"
            ) from None
        raise UnsafeCheckpointError(
            f"refusing to load {path.name}: it contains pickled objects beyond tensors and plain containers, "
            f"and loading it would execute code from the file ({refused}). Only "
            "torch.load(weights_only=True) is used here. If you trust the file, load it yourself and re-save "
            "only its tensors (e.g. torch.save({'encoder': ckpt['encoder']}, 'clean.pt'))."
        ) from None
    except MemoryError:
        raise  # a big legacy (non-zip) file does not fit in memory: not a damaged file
    except Exception as err:  # noqa: BLE001 - whatever a damaged or foreign file makes torch.load raise
        raise _unreadable(path, f"{type(err).__name__}: {err}".strip().splitlines()[0]) from None


def _tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


# ----------------------------------------------------------------------------------------------
# Meta's encoder checkpoints
# ----------------------------------------------------------------------------------------------

# Meta's hub loader for V-JEPA 2 (facebookresearch/vjepa2, src/hub/backbones.py, `_make_vjepa2_model`)
# reads `checkpoint_key="target_encoder"`, as do its frozen evaluations. Without an explicit key we try
# these in order (V-JEPA 2.1 files name the EMA encoder `ema_encoder`).
DEFAULT_CHECKPOINT_KEY = "target_encoder"
FALLBACK_CHECKPOINT_KEYS = ("target_encoder", "ema_encoder", "encoder")


@dataclass
class OriginalEncoder:
    state_dict: dict[str, torch.Tensor]
    checkpoint_key: str | None  # None: the file is a bare state dict
    file: dict
    unused_entries: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_original_encoder(path: str | Path, checkpoint_key: str | None = None) -> OriginalEncoder:
    """Encoder weights from a Meta `.pt`: `ckpt[checkpoint_key]` with `module.` / `backbone.` stripped.

    `checkpoint_key=None` means the default: `target_encoder` (then `ema_encoder`, `encoder`).
    A file holding a bare state dict is accepted as is.
    """
    path = Path(path)
    ckpt = safe_torch_load(path)
    record = file_record(path)
    notes = []
    if _tensor_dict(ckpt):
        if checkpoint_key is not None:
            raise ConversionError(
                f"{path.name} is a bare state dict (no {checkpoint_key!r} entry): drop --checkpoint-key"
            )
        return OriginalEncoder(strip_original_prefixes(ckpt), None, record, [], ["the file is a bare state dict"])
    if not isinstance(ckpt, dict):
        raise ConversionError(f"{path.name} holds a {type(ckpt).__name__}, not a checkpoint dict")
    candidates = [k for k in ckpt if _tensor_dict(ckpt[k])]
    if checkpoint_key is None:
        key = next((k for k in FALLBACK_CHECKPOINT_KEYS if k in candidates), None)
        if key is None and "classifiers" in ckpt:
            raise ConversionError(
                f"{path.name} looks like a probe checkpoint (it has 'classifiers'): pass it with --probe, "
                "next to the encoder checkpoint it was trained on"
            )
        if key is None:
            raise ConversionError(
                f"{path.name} has none of {list(FALLBACK_CHECKPOINT_KEYS)}; its state-dict entries are "
                f"{candidates or 'none'}: pick one with --checkpoint-key"
            )
        if key != DEFAULT_CHECKPOINT_KEY:
            notes.append(f"{DEFAULT_CHECKPOINT_KEY!r} is absent; used {key!r}")
    else:
        key = checkpoint_key
        if key not in ckpt:
            raise ConversionError(
                f"{path.name} has no {key!r} entry; its state-dict entries are {candidates or 'none'} "
                f"(all entries: {sorted(map(str, ckpt))})"
            )
        if not _tensor_dict(ckpt[key]):
            raise ConversionError(f"{path.name}[{key!r}] is not a state dict of tensors")
    unused = sorted(str(k) for k in ckpt if k != key)
    return OriginalEncoder(strip_original_prefixes(ckpt[key]), key, record, unused, notes)


# ----------------------------------------------------------------------------------------------
# Meta's probes
# ----------------------------------------------------------------------------------------------


@dataclass
class OriginalProbe:
    state_dict: dict[str, torch.Tensor]  # still with `module.` and `pooler.` / `linear.` names
    file: dict
    index: int
    num_classifiers: int
    frames_hint: int | None


def read_original_probe(path: str | Path, index: int = 0) -> OriginalProbe:
    """`ckpt["classifiers"][index]` of a released probe (or a bare `pooler.*` / `linear.*` state dict)."""
    path = Path(path)
    ckpt = safe_torch_load(path)
    record = file_record(path)
    if isinstance(ckpt, dict) and "classifiers" in ckpt:
        classifiers = ckpt["classifiers"]
        if isinstance(classifiers, dict):
            classifiers = [classifiers]
        if not isinstance(classifiers, (list, tuple)) or not classifiers:
            raise ConversionError(f"{path.name}['classifiers'] is not a non-empty list of state dicts")
        if not 0 <= index < len(classifiers):
            raise ConversionError(f"{path.name} has {len(classifiers)} classifiers; --probe-index {index} is out of range")
        state_dict, count = classifiers[index], len(classifiers)
    elif _tensor_dict(ckpt):
        state_dict, count = ckpt, 1
    else:
        entries = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ConversionError(f"{path.name} is not a probe checkpoint (no 'classifiers' entry; has {entries})")
    if not _tensor_dict(state_dict):
        raise ConversionError(f"{path.name}['classifiers'][{index}] is not a state dict of tensors")
    # File names like ssv2-vitl-16x2x3.pt: frames x clips x views.
    found = re.search(r"(\d+)x(\d+)x(\d+)", path.stem)
    return OriginalProbe(state_dict, record, index, count, int(found.group(1)) if found else None)


# ----------------------------------------------------------------------------------------------
# transformers folders and Hub ids
# ----------------------------------------------------------------------------------------------

HF_ARCHITECTURES = ("VJEPA2Model", "VJEPA2ForVideoClassification")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class TransformersSource:
    folder: Path
    config: dict
    architecture: str
    state_dict: dict[str, torch.Tensor]
    files: list[dict]
    repo_id: str | None = None
    revision: str | None = None

    @property
    def classification(self) -> bool:
        return self.architecture == "VJEPA2ForVideoClassification"


# A spec ending in one of these names a file: a Hub repo id never does (it is ORG/NAME).
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".safetensors", ".ckpt")


def _meant_locally(spec: str) -> str | None:
    """Why a missing `spec` is a mistyped local path rather than a Hub id (None: it may be a Hub id)."""
    path = Path(spec).expanduser()
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return f"a {path.suffix} name is a file, not a Hub repo id"
    if path.is_absolute() or spec.startswith("~"):
        return "an absolute path"
    first = path.parts[0] if path.parts else ""
    if first and Path(first).exists():
        return f"{first}/ exists here, so this names a local path (to use a Hub repo of that name, run from another directory)"
    return None


def looks_like_repo_id(spec: str) -> bool:
    return bool(_REPO_ID.match(spec)) and not Path(spec).exists() and _meant_locally(spec) is None


def _not_found(spec: str, expected: str) -> ConversionError:
    reason = _meant_locally(spec)
    if reason:
        return ConversionError(f"{spec}: no such local file or folder ({reason})")
    return ConversionError(f"{spec!r} does not exist (expected {expected})")


def resolve_hf_folder(spec: str, revision: str | None = None, local_files_only: bool = False) -> tuple[Path, str | None, str | None]:
    """A local folder, or a Hub id resolved through the HF cache / download. Returns (folder, repo_id, commit)."""
    path = Path(spec)
    if path.is_dir():
        return path, None, None
    if not looks_like_repo_id(spec):
        raise _not_found(spec, "a local model folder or a Hub repo id ORG/NAME")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            spec,
            revision=revision,
            local_files_only=local_files_only,
            allow_patterns=["config.json", "*.safetensors", "*.safetensors.index.json", "*.md", "*processor*.json"],
        )
    except LocalEntryNotFoundError as err:
        raise ConversionError(
            f"{spec} (no local file or folder of that name) is not in the local Hugging Face cache and cannot be "
            f"downloaded here ({err}); download it first (`hf download ...`) or pass a local folder"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise ConversionError(
            f"cannot fetch the Hub repo {spec} (no local file or folder of that name): {type(err).__name__}: {err}"
        ) from None
    folder = Path(folder)
    commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    return folder, spec, commit


def weight_files(folder: Path) -> list[Path]:
    """The files a transformers folder's weights are read from: `model.safetensors`, else the shards its
    index names, else `pytorch_model.bin`."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        return [folder / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file():
        return [legacy]
    raise ConversionError(f"no weights in {folder} (model.safetensors, its sharded index, or pytorch_model.bin)")


def _load_weights(folder: Path) -> tuple[dict, list[dict]]:
    from safetensors.torch import load_file

    files = weight_files(folder)
    if files[0].suffix == ".bin":
        state_dict = safe_torch_load(files[0])
        if not _tensor_dict(state_dict):
            raise ConversionError(f"{files[0]} is not a state dict of tensors")
    else:
        state_dict = {}
        for file in files:
            state_dict.update(load_file(file))
    return state_dict, [file_record(file) for file in files]


def read_config_json(folder: Path) -> dict:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{folder} has no config.json")
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{config_path} is not valid JSON: {err}") from None


def read_transformers(spec: str, revision: str | None = None, local_files_only: bool = False) -> TransformersSource:
    folder, repo_id, commit = resolve_hf_folder(spec, revision, local_files_only)
    config = read_config_json(folder)
    if config.get("model_type") != "vjepa2":
        raise ConversionError(
            f"{spec}: config.json has model_type {config.get('model_type')!r}; expected transformers' 'vjepa2'"
        )
    architectures = config.get("architectures") or ["VJEPA2Model"]
    architecture = architectures[0]
    if architecture not in HF_ARCHITECTURES:
        raise ConversionError(f"{spec}: architecture {architecture!r} is not one of {HF_ARCHITECTURES}")
    state_dict, files = _load_weights(folder)
    return TransformersSource(folder, config, architecture, state_dict, files, repo_id, commit or revision)


def source_kind(spec: str) -> str:
    """'pt' (a checkpoint file), 'transformers' (a vjepa2 folder or Hub id) or 'ours' (a vjepa2_area folder)."""
    path = Path(spec)
    if path.is_file():
        return "pt"
    if path.is_dir():
        model_type = read_config_json(path).get("model_type")
        if model_type == "vjepa2_area":
            return "ours"
        if model_type == "vjepa2":
            return "transformers"
        raise ConversionError(f"{path}/config.json has model_type {model_type!r}: expected 'vjepa2' or 'vjepa2_area'")
    if looks_like_repo_id(spec):
        return "transformers"
    raise _not_found(spec, "a .pt file, a model folder or a Hub repo id ORG/NAME")


__all__ = [
    "ConversionError",
    "UnsafeCheckpointError",
    "DEFAULT_CHECKPOINT_KEY",
    "OriginalEncoder",
    "OriginalProbe",
    "TransformersSource",
    "safe_torch_load",
    "sha256_file",
    "file_record",
    "read_original_encoder",
    "read_original_probe",
    "read_transformers",
    "resolve_hf_folder",
    "source_kind",
    "weight_files",
]
