"""What a V-JEPA 2 checkpoint holds, in the original key names: one key table for transformers' names,
and the unpacking of Meta's `.pt` files.

Our state-dict keys are the original encoder's, so Meta's `.pt` needs its entry
picked and `module.` / `backbone.` stripped; transformers' `VJEPA2Model` renames keys and splits each
fused `qkv` into `query` / `key` / `value` rows. The predictor is kept in Meta's names
(`predictor_embed.*`, `mask_tokens.{i}`, `predictor_blocks.{i}.*`, `predictor_norm.*`, `predictor_proj.*`).
timm's `checkpoint_filter_fn` and the converter both go through `original_parts`.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

ORIGINAL_PREFIXES = ("module.", "backbone.")
DEFAULT_CHECKPOINT_KEY = "target_encoder"  # what Meta's hub loader and frozen evaluations read


class ConversionError(ValueError):
    """A problem with the input or the request; the message says what and how to fix it."""


class UnsafeCheckpointError(ConversionError):
    pass


def _block(original: str, transformers: str) -> list[tuple[str, tuple[str, ...]]]:
    parts = [("norm1", "norm1"), ("attn.proj", "attention.proj"), ("norm2", "norm2"), ("mlp.fc1", "mlp.fc1"),
             ("mlp.fc2", "mlp.fc2"), ("attn.qkv", ("attention.query", "attention.key", "attention.value"))]  # fmt: skip
    return [(f"{original}.{{i}}.{o}.{{p}}", tuple(f"{transformers}.{{i}}.{t}.{{p}}" for t in ((t,) if isinstance(t, str) else t)))
            for o, t in parts]  # fmt: skip


# original template -> transformers template(s); several are row blocks fused on dim 0 in that order.
# Encoder and predictor are relative to their module; the head is `VJEPA2ForVideoClassification`'s.
ENCODER_KEYS = [
    ("patch_embed.proj.{p}", ("embeddings.patch_embeddings.proj.{p}",)),
    *_block("blocks", "layer"),
    ("norm.{p}", ("layernorm.{p}",)),
]
PREDICTOR_KEYS = [
    ("predictor_embed.{p}", ("embeddings.predictor_embeddings.{p}",)),
    *_block("predictor_blocks", "layer"),
    ("predictor_norm.{p}", ("layernorm.{p}",)),
    ("predictor_proj.{p}", ("proj.{p}",)),
]
HEAD_KEYS = [
    ("head.pooler.query_tokens", ("pooler.query_tokens",)),
    *[(f"head.pooler.cross_attention_block.{o}.{{p}}", (f"pooler.cross_attention_layer.{t}.{{p}}",))
      for o, t in (("norm1", "layer_norm1"), ("xattn.q", "cross_attn.q_proj"), ("norm2", "layer_norm2"),
                   ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))],
    ("head.pooler.cross_attention_block.xattn.kv.{p}", tuple(f"pooler.cross_attention_layer.cross_attn.{n}_proj.{{p}}" for n in "kv")),
    *[(f"head.pooler.blocks.{{i}}.{o}.{{p}}", (f"pooler.self_attention_layers.{{i}}.{t}.{{p}}",))
      for o, t in (("norm1", "layer_norm1"), ("attn.proj", "self_attn.out_proj"), ("norm2", "layer_norm2"),
                   ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))],
    ("head.pooler.blocks.{i}.attn.qkv.{p}", tuple(f"pooler.self_attention_layers.{{i}}.self_attn.{n}_proj.{{p}}" for n in "qkv")),
    ("head.linear.{p}", ("classifier.{p}",)),
]  # fmt: skip
MASK_TOKENS = "embeddings.mask_tokens"  # transformers: one [n, 1, 1, D] parameter; original: mask_tokens.{i}, [1, 1, D]


def _regex(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)"))


def _fill(template: str, groups: dict) -> str:
    return template.replace("{i}", groups.get("i") or "").replace("{p}", groups.get("p") or "")


def to_transformers(state_dict: dict, table, prefix: str = "") -> dict:
    """Original names -> transformers' (under `prefix`); fused tensors split into equal row blocks."""
    out = {}
    for key, tensor in state_dict.items():
        if table is PREDICTOR_KEYS and key.startswith("mask_tokens."):
            continue
        found = next(((o, m) for o, _ in table if (m := _regex(o).fullmatch(key))), None)
        if found is None:
            raise ConversionError(f"unexpected key {key}: it has no transformers counterpart")
        names, groups = dict(table)[found[0]], found[1].groupdict()
        for name, part in zip(names, tensor.chunk(len(names))):
            out[prefix + _fill(name, groups)] = part.contiguous()
    if table is PREDICTOR_KEYS:
        tokens = dict(sorted((int(k.split(".")[1]), v) for k, v in state_dict.items() if k.startswith("mask_tokens.")))
        if not tokens or list(tokens) != list(range(len(tokens))):
            raise ConversionError(f"mask tokens must be mask_tokens.0 .. mask_tokens.N-1, got indices {list(tokens)}")
        out[prefix + MASK_TOKENS] = torch.stack(list(tokens.values()))
    return out


def from_transformers(state_dict: dict, table, prefix: str = "") -> tuple[dict, list[str]]:
    """transformers' names under `prefix` -> original; returns (state dict, keys under `prefix` no rule claims)."""
    out, parts, unknown = {}, {}, []
    for key, tensor in state_dict.items():
        if not key.startswith(prefix):
            continue
        rel = key[len(prefix):]
        if table is PREDICTOR_KEYS and rel == MASK_TOKENS:
            out.update({f"mask_tokens.{i}": t for i, t in enumerate(tensor)})
            continue
        hit = next(((o, t, i, m) for o, t in table for i, n in enumerate(t) if (m := _regex(n).fullmatch(rel))), None)
        if hit is None:
            unknown.append(key)
            continue
        original, names, index, found = hit
        parts.setdefault(_fill(original, found.groupdict()), [None] * len(names))[index] = tensor
    for key, tensors in parts.items():
        if any(t is None for t in tensors):
            raise ConversionError(f"{prefix}: the parts of {key} are incomplete (query/key/value rows missing)")
        out[key] = torch.cat(tensors)
    return out, unknown


def strip_original_prefixes(state_dict: dict) -> dict:
    """Keys without their leading `module.` / `backbone.` (any combination, e.g. `module.backbone.`)."""
    out = {}
    for key, tensor in state_dict.items():
        while key.startswith(ORIGINAL_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = tensor
    return out


def _tensor_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def is_ac_predictor(state: dict) -> bool:
    """A V-JEPA 2-AC action-conditioned predictor (original names), rather than the masked predictor."""
    return "action_encoder.weight" in state


def default_checkpoint_key(checkpoint: dict) -> str:
    """`target_encoder`; for a V-JEPA 2-AC file without one, its frozen `encoder` (what Meta's hub loader reads)."""
    predictor = strip_original_prefixes(checkpoint.get("predictor") or {})
    if DEFAULT_CHECKPOINT_KEY not in checkpoint and "encoder" in checkpoint and is_ac_predictor(predictor):
        return "encoder"
    return DEFAULT_CHECKPOINT_KEY


def original_parts(checkpoint: dict, checkpoint_key: str | None = None) -> dict[str, dict]:
    """Any V-JEPA 2 checkpoint -> {"encoder", "predictor", "context_encoder"} in original names.

    Reads Meta's `.pt` dict (`checkpoint_key` entry, default `default_checkpoint_key`; `predictor`, the
    masked or the action-conditioned one; the context `encoder`), transformers' `VJEPA2Model` /
    `VJEPA2ForVideoClassification` state dicts, and our own files (also `save_pretrained` of our
    classifier, under `encoder.`). A classifier's encoder dict includes `head.*`. Parts the checkpoint
    lacks are empty dicts.
    """
    if not _tensor_dict(checkpoint):  # Meta's training checkpoint: a dict of state dicts and training state
        entries = sorted(k for k, v in checkpoint.items() if _tensor_dict(v))
        key = checkpoint_key or default_checkpoint_key(checkpoint)
        if key not in entries:
            hint = " (a probe file: pass it as the probe)" if "classifiers" in checkpoint else ""
            raise ConversionError(f"the checkpoint has no {key!r} entry{hint}; its state dicts are {entries}")
        return {
            "encoder": strip_original_prefixes(checkpoint[key]),
            "predictor": strip_original_prefixes(checkpoint.get("predictor") or {}),
            "context_encoder": strip_original_prefixes(checkpoint.get("encoder") or {}),
        }
    if checkpoint_key is not None:
        raise ConversionError(f"checkpoint_key {checkpoint_key!r}: the checkpoint is one state dict, with no entries")
    for root in ("", "vjepa2."):  # transformers: VJEPA2Model, VJEPA2ForVideoClassification
        if any(k.startswith(root + "encoder.layer.") for k in checkpoint):
            encoder, unknown = from_transformers(checkpoint, ENCODER_KEYS, root + "encoder.")
            predictor, unknown_predictor = from_transformers(checkpoint, PREDICTOR_KEYS, root + "predictor.")
            head, _ = from_transformers({k: v for k, v in checkpoint.items() if not k.startswith(root)}, HEAD_KEYS)
            if unknown or unknown_predictor:
                raise ConversionError(f"transformers keys with no V-JEPA 2 counterpart: {(unknown + unknown_predictor)[:8]}")
            return {"encoder": {**encoder, **head}, "predictor": predictor, "context_encoder": {}}
    state = strip_original_prefixes(checkpoint)
    if not any(k.startswith("blocks.") for k in state) and any(k.startswith("encoder.blocks.") for k in state):
        state = {k.removeprefix("encoder."): v for k, v in state.items()}  # transformers' save of our classifier
    return {"encoder": state, "predictor": {}, "context_encoder": {}}


def original_probe(checkpoint: dict) -> dict:
    """A released probe (`classifiers[0]`, `module.pooler.*` / `module.linear.*`) -> our `head.*` keys."""
    classifiers = checkpoint.get("classifiers") if isinstance(checkpoint, dict) else None
    state = classifiers[0] if isinstance(classifiers, (list, tuple)) and classifiers else classifiers or checkpoint
    if not _tensor_dict(state) or not all(k.startswith(("pooler.", "linear.")) for k in strip_original_prefixes(state)):
        raise ConversionError("not a probe checkpoint: expected classifiers[0] with pooler.* and linear.* tensors")
    return {"head." + k: v for k, v in strip_original_prefixes(state).items()}


def safe_torch_load(path: str | Path):
    """`torch.load(weights_only=True)` on CPU (memory-mapped for zip files), or a clear refusal.

    A file naming a global the weights-only unpickler refuses would run code when loaded: refused as
    unsafe, never loaded. Anything else unreadable is reported as not a checkpoint, or corrupted.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    is_zip = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL (\S+)", str(err))
        if named:
            raise UnsafeCheckpointError(
                f"refusing to load {path.name}: it names {named[1]}, which loading would import and run "
                "(only torch.load(weights_only=True) is used). If you trust the file, load it yourself and "
                "re-save only its tensors with torch.save"
            ) from None
        detail = "legacy or foreign pickle" if not is_zip else "unreadable pickle"
        raise ConversionError(
            f"cannot read {path.name} with torch.load(weights_only=True) ({detail}): not a PyTorch checkpoint of "
            "tensors, or corrupted. If it is a checkpoint you trust, re-save its tensors with torch.save"
        ) from None
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever a damaged or foreign file makes torch.load raise
        detail = f"{type(err).__name__}: {err}".strip().splitlines()[0]
        raise ConversionError(f"cannot read {path.name}: not a PyTorch checkpoint, or corrupted ({detail})") from None
