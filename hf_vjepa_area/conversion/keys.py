"""State-dict key mappings: the original V-JEPA 2 names (ours) <-> transformers' V-JEPA 2 names.

One table per model part drives both directions. A rule maps one of our keys to one transformers key
(a rename) or to several whose rows are concatenated on dim 0 (our fused `qkv` / `kv` linears against
transformers' separate query/key/value projections). Templates use `{i}` for a block index and `{p}`
for `weight` / `bias`.

Our names (DESIGN.md section 4) are the original encoder's, so an original `.pt` needs prefix
stripping only; the released probes need `pooler.*` / `linear.*` moved under `head.`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

_PLACEHOLDERS = {"{i}": r"(?P<i>\d+)", "{p}": r"(?P<p>weight|bias)"}


@dataclass(frozen=True)
class Rule:
    """`ours` <-> `theirs`: one template (rename) or several fused along dim 0 in the given order."""

    ours: str
    theirs: tuple[str, ...]

    def pattern(self, template: str) -> re.Pattern:
        regex = re.escape(template)
        for placeholder, group in _PLACEHOLDERS.items():
            regex = regex.replace(re.escape(placeholder), group)
        return re.compile(regex)


def _rules(*pairs) -> tuple[Rule, ...]:
    return tuple(Rule(ours, (theirs,) if isinstance(theirs, str) else tuple(theirs)) for ours, theirs in pairs)


# Encoder: ours relative to the encoder root; theirs relative to transformers' `VJEPA2Encoder`.
ENCODER_RULES = _rules(
    ("patch_embed.proj.{p}", "embeddings.patch_embeddings.proj.{p}"),
    ("blocks.{i}.norm1.{p}", "layer.{i}.norm1.{p}"),
    ("blocks.{i}.attn.qkv.{p}", [f"layer.{{i}}.attention.{n}.{{p}}" for n in ("query", "key", "value")]),
    ("blocks.{i}.attn.proj.{p}", "layer.{i}.attention.proj.{p}"),
    ("blocks.{i}.norm2.{p}", "layer.{i}.norm2.{p}"),
    ("blocks.{i}.mlp.fc1.{p}", "layer.{i}.mlp.fc1.{p}"),
    ("blocks.{i}.mlp.fc2.{p}", "layer.{i}.mlp.fc2.{p}"),
    ("norm.{p}", "layernorm.{p}"),
)

# Attentive probe: ours under `head.`; theirs are `VJEPA2ForVideoClassification`'s `pooler.*` and
# `classifier.*`. Same computation (checked in tests/conversion): self-attention layers first, then a
# cross-attention layer whose layer_norm1 normalises only the tokens and which has no output projection.
HEAD_RULES = _rules(
    ("head.pooler.query_tokens", "pooler.query_tokens"),
    ("head.pooler.cross_attention_block.norm1.{p}", "pooler.cross_attention_layer.layer_norm1.{p}"),
    ("head.pooler.cross_attention_block.xattn.q.{p}", "pooler.cross_attention_layer.cross_attn.q_proj.{p}"),
    (
        "head.pooler.cross_attention_block.xattn.kv.{p}",
        [f"pooler.cross_attention_layer.cross_attn.{n}_proj.{{p}}" for n in ("k", "v")],
    ),
    ("head.pooler.cross_attention_block.norm2.{p}", "pooler.cross_attention_layer.layer_norm2.{p}"),
    ("head.pooler.cross_attention_block.mlp.fc1.{p}", "pooler.cross_attention_layer.mlp.fc1.{p}"),
    ("head.pooler.cross_attention_block.mlp.fc2.{p}", "pooler.cross_attention_layer.mlp.fc2.{p}"),
    ("head.pooler.blocks.{i}.norm1.{p}", "pooler.self_attention_layers.{i}.layer_norm1.{p}"),
    (
        "head.pooler.blocks.{i}.attn.qkv.{p}",
        [f"pooler.self_attention_layers.{{i}}.self_attn.{n}_proj.{{p}}" for n in ("q", "k", "v")],
    ),
    ("head.pooler.blocks.{i}.attn.proj.{p}", "pooler.self_attention_layers.{i}.self_attn.out_proj.{p}"),
    ("head.pooler.blocks.{i}.norm2.{p}", "pooler.self_attention_layers.{i}.layer_norm2.{p}"),
    ("head.pooler.blocks.{i}.mlp.fc1.{p}", "pooler.self_attention_layers.{i}.mlp.fc1.{p}"),
    ("head.pooler.blocks.{i}.mlp.fc2.{p}", "pooler.self_attention_layers.{i}.mlp.fc2.{p}"),
    ("head.linear.{p}", "classifier.{p}"),
)


@dataclass(frozen=True)
class Section:
    """A table applied between a prefix on our side and one on theirs."""

    rules: tuple[Rule, ...]
    ours_prefix: str = ""
    theirs_prefix: str = ""


@dataclass
class Remapped:
    """Result of a mapping. `unexpected`: source keys no rule claims; `dropped`: keys deliberately left
    out (e.g. transformers' predictor); `missing`: parts of a fused group that were not all present."""

    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def hf_sections(classification: bool) -> tuple[Section, ...]:
    """Sections for `VJEPA2Model` (encoder under `encoder.`) or `VJEPA2ForVideoClassification`
    (encoder under `vjepa2.encoder.`, ours under `encoder.`, plus the probe)."""
    if classification:
        return (Section(ENCODER_RULES, "encoder.", "vjepa2.encoder."), Section(HEAD_RULES))
    return (Section(ENCODER_RULES, "", "encoder."),)


def hf_dropped_prefixes(classification: bool) -> tuple[str, ...]:
    """transformers keys we leave out on purpose: the JEPA predictor is not part of an encoder repo."""
    return ("vjepa2.predictor.",) if classification else ("predictor.",)


def _match(key: str, sections, side: str):
    """The (section, rule, template index, groups) that claims `key` on `side` ('ours' or 'theirs')."""
    for section in sections:
        prefix = section.ours_prefix if side == "ours" else section.theirs_prefix
        if not key.startswith(prefix):
            continue
        rel = key[len(prefix):]
        for rule in section.rules:
            templates = (rule.ours,) if side == "ours" else rule.theirs
            for index, template in enumerate(templates):
                found = rule.pattern(template).fullmatch(rel)
                if found:
                    return section, rule, index, found.groupdict()
    return None


def _fill(template: str, groups: dict) -> str:
    for name, value in groups.items():
        template = template.replace("{" + name + "}", value)
    return template


def theirs_to_ours(state_dict: dict, sections, drop_prefixes=()) -> Remapped:
    """transformers names -> ours; fused groups are concatenated on dim 0 in the rule's order."""
    out = Remapped()
    pending: dict[str, dict[int, tuple[str, torch.Tensor]]] = {}
    targets: dict[str, tuple[Section, Rule, dict]] = {}
    for key, tensor in state_dict.items():
        if any(key.startswith(p) for p in drop_prefixes):
            out.dropped.append(key)
            continue
        hit = _match(key, sections, "theirs")
        if hit is None:
            out.unexpected.append(key)
            continue
        section, rule, index, groups = hit
        target = section.ours_prefix + _fill(rule.ours, groups)
        if len(rule.theirs) == 1:
            out.state_dict[target] = tensor
        else:
            pending.setdefault(target, {})[index] = (key, tensor)
            targets[target] = (section, rule, groups)
    for target, parts in pending.items():
        section, rule, groups = targets[target]
        if len(parts) != len(rule.theirs):
            out.missing.extend(
                section.theirs_prefix + _fill(t, groups) for i, t in enumerate(rule.theirs) if i not in parts
            )
            continue
        tensors = [parts[i][1] for i in range(len(rule.theirs))]
        shapes = {tuple(t.shape[1:]) for t in tensors}
        if len(shapes) != 1:
            raise ValueError(
                f"cannot fuse {[parts[i][0] for i in sorted(parts)]} into {target}: trailing shapes differ "
                f"({[tuple(t.shape) for t in tensors]})"
            )
        out.state_dict[target] = torch.cat(tensors, dim=0)
    return out


def ours_to_theirs(state_dict: dict, sections) -> Remapped:
    """Our names -> transformers'; fused tensors are split into equal row blocks."""
    out = Remapped()
    for key, tensor in state_dict.items():
        hit = _match(key, sections, "ours")
        if hit is None:
            out.unexpected.append(key)
            continue
        section, rule, _, groups = hit
        names = [section.theirs_prefix + _fill(t, groups) for t in rule.theirs]
        if len(names) == 1:
            out.state_dict[names[0]] = tensor
            continue
        if tensor.shape[0] % len(names):
            raise ValueError(
                f"cannot split {key} of shape {tuple(tensor.shape)} into {len(names)} equal row blocks"
            )
        for name, part in zip(names, tensor.chunk(len(names), dim=0)):
            out.state_dict[name] = part.contiguous()
    return out


# ----------------------------------------------------------------------------------------------
# Original (Meta) checkpoints
# ----------------------------------------------------------------------------------------------

ORIGINAL_PREFIXES = ("module.", "backbone.")


def strip_original_prefixes(state_dict: dict, prefixes=ORIGINAL_PREFIXES) -> dict:
    """Remove leading `module.` / `backbone.` (in any combination, e.g. `module.backbone.`)."""
    out = {}
    for key, tensor in state_dict.items():
        stripped = key
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if stripped.startswith(prefix):
                    stripped = stripped[len(prefix):]
                    changed = True
        if stripped in out:
            raise ValueError(f"two keys collapse to {stripped!r} after stripping {prefixes}: check the checkpoint")
        out[stripped] = tensor
    return out


def original_probe_to_ours(state_dict: dict) -> Remapped:
    """A released probe (`pooler.*`, `linear.*`, prefixed `module.`) -> our `head.pooler.*`, `head.linear.*`."""
    out = Remapped()
    for key, tensor in strip_original_prefixes(state_dict, ("module.",)).items():
        if key.startswith(("pooler.", "linear.")):
            out.state_dict["head." + key] = tensor
        else:
            out.unexpected.append(key)
    return out


__all__ = [
    "Rule",
    "Section",
    "Remapped",
    "ENCODER_RULES",
    "HEAD_RULES",
    "hf_sections",
    "hf_dropped_prefixes",
    "theirs_to_ours",
    "ours_to_theirs",
    "strip_original_prefixes",
    "original_probe_to_ours",
]
