"""A released source -> our repo folder (written, verified, reported), and our folder -> transformers.

Nothing half-done is ever visible at the output: the folder is written beside it under a temporary
name, loaded back and (with `verify`) compared with transformers' implementation holding the source's
tensors, then renamed into place. Folder layout: `save_repo_folder`'s files, plus
`predictor.safetensors` (Meta's predictor keys) when the source has a predictor, `context_encoder.safetensors`
on request (a `.pt`'s `encoder` entry), `conversion_report.json` and the model card.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers.utils import SAFE_WEIGHTS_NAME

from .._build import build_holding
from .._version import __version__
from .._files import is_nonempty, write_folder_atomically
from ..hub import repo_id_for, save_repo_folder, save_safetensors
from ..modeling import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaPredictor
from ..modeling.released import RELEASED_MODELS, variant_of
from ..modeling.ac_predictor_vjepa2_area import AC_PREDICTOR_CONFIG_KEY, AC_PREDICTOR_WEIGHTS_NAME
from ..modeling.predictor_vjepa2_area import CONTEXT_ENCODER_WEIGHTS_NAME, PREDICTOR_WEIGHTS_NAME
from ..sources import AreaOptions, load_model, resolve
from ..checkpoint_keys import ENCODER_KEYS, HEAD_KEYS, PREDICTOR_KEYS, ConversionError, to_transformers
from .load import Source, build_model, file_record, read_source

REPORT_NAME = "conversion_report.json"
DEFAULT_TOLERANCE = 1e-4
CRITERION = "max abs diff <= tolerance * max(1, max abs of the reference output)"
PREDICTOR_MASK_INDEX = 1  # transformers' VJEPA2Predictor always uses mask_tokens[1]


class VerificationError(ConversionError):
    """The written model's outputs differ from the source's by more than the tolerance."""


def check_output(output: Path, overwrite: bool, inputs: list) -> None:
    """Refuse a non-empty OUTPUT without `overwrite`, and an OUTPUT that holds an input or the working
    directory (replacing it would delete them)."""
    out = Path(os.path.abspath(output))
    for path in [*inputs, Path.cwd()]:
        if path and Path(path).exists() and out in (held := Path(os.path.abspath(path)), *held.parents):
            raise ConversionError(f"OUTPUT {output} holds {path} (an input or the working directory), which replacing "
                                  "it would delete: write to another folder")  # fmt: skip
    if is_nonempty(out) and not overwrite:
        raise ConversionError(f"{output} already exists and is not empty: pass --overwrite to replace it")


def _write_into_place(output: Path, overwrite: bool, write) -> None:
    """`write(folder)` staged beside `output` and swapped into place; nothing is left at `output` (or beside it)
    when `write` raises, e.g. on a failed verification. OUTPUT is checked again once written (a conversion takes
    minutes)."""

    def write_checked(staging: Path) -> None:
        write(staging)
        check_output(output, overwrite, [])

    write_folder_atomically(output, write_checked)


def compare(reference: dict, candidate: dict, tolerance: float | None) -> dict:
    """Per output: max / mean abs difference and, with a tolerance, `passed` under `CRITERION` (absolute for
    features within +-1, relative for larger outputs such as logits, whose fp32 rounding grows with them)."""
    outputs = {}
    for name, ref in reference.items():
        diff = (ref.double() - candidate[name].double()).abs()
        entry = {"shape": list(ref.shape), "max_abs_diff": diff.max().item(), "mean_abs_diff": diff.mean().item(),
                 "reference_max_abs": ref.abs().max().item()}  # fmt: skip
        if tolerance is not None:
            entry["allowed"] = tolerance * max(1.0, entry["reference_max_abs"])
            entry["passed"] = entry["max_abs_diff"] <= entry["allowed"]
        outputs[name] = entry
    return {"outputs": outputs, **({"passed": all(e["passed"] for e in outputs.values())} if tolerance is not None else {})}


def verification_input(config: VJEPA2AreaConfig, seed: int = 0):
    """Seeded pixels [1, 2 tubelets, C, H, W] at the configured size (transformers derives RoPE positions
    from crop_size), and a context / target split of the tokens for the predictor."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(1, 2 * config.tubelet_size, config.in_chans, *config.img_size, generator=generator)
    grid = (2, config.img_size[0] // config.patch_size, config.img_size[1] // config.patch_size)
    order = torch.randperm(grid[0] * grid[1] * grid[2], generator=generator)
    half = len(order) // 2
    return pixels, grid, order[:half].sort().values[None], order[half:][None]


def _holding(build, state: dict) -> torch.nn.Module:
    """A module built without initialising its weights, holding exactly `state` (as fp32)."""
    return build_holding(build, {k: v.float() for k, v in state.items()}, error=ConversionError)


def transformers_block_outputs(encoder, layers) -> list:
    """Filled by each forward of transformers' `VJEPA2Encoder` with the outputs of its blocks `layers`
    (before the final norm), in block order: the multi-level probe's input, read independently of ours."""
    captured: list = []
    for i in layers:
        encoder.layer[i].register_forward_hook(lambda module, args, output: captured.append(output[0]))
    return captured


@torch.no_grad()
def transformers_outputs(source: Source, config: VJEPA2AreaConfig, pixels, context_ids, target_ids) -> dict:
    """transformers' V-JEPA 2 modules holding the source's tensors (through the key table): `VJEPA2Encoder`,
    `VJEPA2Predictor` (mask_tokens[1]), and a probe's `VJEPA2AttentivePooler` + Linear with the probe's own
    heads and eps (transformers' classifier would use the encoder's) on the last block's tokens or, for a
    multi-level probe, on its blocks' outputs through the encoder's `layernorm`, concatenated."""
    from transformers.models.vjepa2 import modeling_vjepa2 as hf

    hf_config = config.to_transformers_config()
    hf_config._attn_implementation = "sdpa"
    encoder_state = {k: v for k, v in source.encoder.items() if not k.startswith("head.")}
    head_state = {k: v for k, v in source.encoder.items() if k.startswith("head.")}
    encoder = _holding(lambda: hf.VJEPA2Encoder(hf_config), to_transformers(encoder_state, ENCODER_KEYS))
    blocks = transformers_block_outputs(encoder, config.probe_out_layers or [])
    tokens = encoder(pixels).last_hidden_state
    outputs = {"last_hidden_state": tokens}
    if head_state:
        probe_config = type(hf_config)(hidden_size=config.embed_dim, num_attention_heads=config.probe_num_heads,
                                       layer_norm_eps=config.probe_layer_norm_eps, num_pooler_layers=config.probe_depth - 1)  # fmt: skip
        probe_config._attn_implementation = "sdpa"

        def head():
            return torch.nn.ModuleDict({"pooler": hf.VJEPA2AttentivePooler(probe_config),
                                        "classifier": torch.nn.Linear(config.embed_dim, config.num_labels)})  # fmt: skip

        probe = _holding(head, to_transformers(head_state, HEAD_KEYS))
        probed = tokens if config.probe_out_layers is None else torch.cat([encoder.layernorm(b) for b in blocks], dim=1)
        outputs["logits"] = probe["classifier"](probe["pooler"](probed))
    if source.predictor:
        predictor = _holding(lambda: hf.VJEPA2Predictor(hf_config), to_transformers(source.predictor, PREDICTOR_KEYS))
        outputs["predictor"] = predictor(tokens, [context_ids], [target_ids]).last_hidden_state
    return outputs


def full_attention(config: VJEPA2AreaConfig) -> VJEPA2AreaConfig:
    """The same config with area attention off (in the encoder and the predictor): same weights, global attention."""
    config.area_splits, config.area_layers, config.predictor_area_splits, config.predictor_area_layers = None, [], None, []
    return config


def _load_ours(source) -> torch.nn.Module:
    """Our model of a folder (or Hub id) with area attention off: same weights, the source's attention
    pattern, in the encoder and in the predictor that `our_outputs` builds from its config."""
    model = load_model(source, area=AreaOptions(full_attention=True))
    full_attention(model.config)
    return model.float().eval()


@torch.no_grad()
def our_outputs(folder: Path, pixels, grid, context_ids, target_ids) -> dict:
    """The written folder loaded back (full attention: the conversion must be exact whatever the area
    options), its encoder, classifier and predictor run on the same input."""
    model = _load_ours(folder)
    encoder = getattr(model, "encoder", model)
    tokens = encoder(pixels).last_hidden_state
    outputs = {"last_hidden_state": tokens, **({"logits": model(pixels).logits} if encoder is not model else {})}
    if (folder / PREDICTOR_WEIGHTS_NAME).is_file():
        predictor = VJEPA2AreaPredictor(model.config)
        predictor.load_state_dict(load_file(folder / PREDICTOR_WEIGHTS_NAME), strict=True)
        context = tokens.gather(1, context_ids[..., None].expand(-1, -1, tokens.shape[-1]))
        outputs["predictor"] = predictor.float().eval()(context, context_ids, target_ids, grid, mask_index=PREDICTOR_MASK_INDEX)
    return outputs


def model_card(report: dict, repo_id: str | None) -> str:
    config, repo = report["config"], repo_id or "ORG/NAME"
    classifier = report["architecture"] == "VJEPA2AreaForVideoClassification"
    auto = "AutoModelForVideoClassification" if classifier else "AutoModel"
    attention = (f"ST-A² area attention in blocks {config['area_layers']} ({config['area_splits']} areas over time, height, width)"
                 if config["area_splits"] else "full attention in every block")  # fmt: skip
    rows = [f"| {name} | {e['max_abs_diff']:.3g} | {e['allowed']:.3g} |" for name, e in report.get("verification", {}).get("outputs", {}).items()]
    figures = ("\n".join([f"Reference: {report['verification']['reference']}; {CRITERION}.", "", "| output | max abs diff | allowed |",
                          "|---|---|---|", *rows]) if rows else "Not run (convert with `--verify`).")  # fmt: skip
    base = report["source"].get("repo_id") or report.get("base_model")
    layers = config.get("probe_out_layers")
    probe_input = f" reading blocks {layers} (each through the final norm, concatenated: V-JEPA 2's multi-level input)" if classifier and layers else ""
    return f"""---
license: mit
library_name: transformers
pipeline_tag: {"video-classification" if classifier else "feature-extraction"}
tags: [video, vjepa2, timm, transformers{", area-attention" if config["area_splits"] else ""}]
{f"base_model: {base}" if base else ""}
---

# {repo.split("/")[-1]}

V-JEPA 2 video encoder ({report["variant"]}: width {config["embed_dim"]}, {config["depth"]} blocks, {config["num_heads"]} heads,
{config["img_size"][0]} px){f", with an attentive probe of {len(config['id2label'])} classes" if classifier else ""}{probe_input}; {attention}.
Converted from {", ".join(f"`{f['name']}`" for f in report["source"]["files"])} with `vjepa2-area-convert` (hf_vjepa_area).
{"The V-JEPA 2 predictor is in `predictor.safetensors` (Meta's key names)." if report["predictor"] else ""}
{"The V-JEPA 2-AC action-conditioned predictor is in `ac_predictor.safetensors` (Meta's key names; its sizes under "
 "`ac_predictor` in config.json; `hf_vjepa_area.ac.load_world_model` loads both)." if report.get("ac_predictor") else ""}

```python
from transformers import {auto}
model = {auto}.from_pretrained("{repo}", trust_remote_code=True)  # pixel_values_videos [B, T, C, H, W]

import timm, hf_vjepa_area
model = timm.create_model("hf-hub:{repo}", pretrained=True)  # [B, C, T, H, W]
```

## Verification

{figures}

Full figures: `conversion_report.json`.
"""


def convert(source: str | Path, output: str | Path, *, overwrite: bool = False, verify: bool = False,
            tolerance: float = DEFAULT_TOLERANCE, context_encoder: bool = False, labels: list[str] | None = None,
            repo_id: str | None = None, probe: str | Path | None = None, **read_options) -> dict:  # fmt: skip
    """Write `source` (Meta `.pt`, transformers folder or Hub id) as our repo folder at `output`; returns the
    report. `read_options` are `read_source`'s (checkpoint_key, variant, img_size, revision, config fields)."""
    output = Path(output).expanduser().absolute()
    check_output(output, overwrite, [source, probe])
    read = read_source(source, probe=probe, **read_options)
    config = read.config
    if labels is not None:
        classes = config.num_labels if read.model_class is VJEPA2AreaForVideoClassification else 0
        if len(labels) != classes:
            raise ConversionError(f"--labels: {len(labels)} names for a model with {classes} classes")
        config.id2label, config.label2id = dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}
    if context_encoder and not read.context_encoder:
        raise ConversionError("--context-encoder: the source has no context encoder (only Meta's .pt has an `encoder` entry)")
    if read.ac_predictor:  # V-JEPA 2-AC: its predictor's sizes travel in config.json
        setattr(config, AC_PREDICTOR_CONFIG_KEY, read.ac_config().hyperparameters())
    model = build_model(read.model_class, config, read.encoder)
    variant = variant_of(config) or "custom"
    released = next((n for n, r in RELEASED_MODELS.items() if (r.variant, r.img_size) == (variant, config.img_size[0])), None)
    report = {
        "converter": f"hf_vjepa_area {__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": read.provenance,
        "architecture": read.model_class.__name__,
        "variant": variant,
        "config": json.loads(config.to_json_string(use_diff=False)),
        "predictor": bool(read.predictor),
        "ac_predictor": bool(read.ac_predictor),
        "context_encoder": context_encoder,
        "base_model": RELEASED_MODELS[released].transformers_repo if released else None,
    }
    repo_id = repo_id or (repo_id_for(released, bool(config.area_splits)) if released else None)

    def write(folder: Path) -> None:
        save_repo_folder(model, folder)
        extra = {PREDICTOR_WEIGHTS_NAME: read.predictor, CONTEXT_ENCODER_WEIGHTS_NAME: read.context_encoder if context_encoder else {},
                 AC_PREDICTOR_WEIGHTS_NAME: read.ac_predictor}  # fmt: skip
        for name, state in extra.items():
            if state:
                save_safetensors(state, folder / name)
        if verify:
            pixels, grid, context_ids, target_ids = verification_input(config)
            reference = transformers_outputs(read, config, pixels, context_ids, target_ids)
            modules = ["VJEPA2Encoder", *(["VJEPA2Predictor with mask_tokens[1]"] if read.predictor else []),
                       *(["VJEPA2AttentivePooler + Linear"] if "logits" in reference else [])]  # fmt: skip
            report["verification"] = {
                "reference": f"transformers' V-JEPA 2 implementation ({', '.join(modules)}) holding the source's tensors",
                "candidate": "the written folder loaded back with from_pretrained, full attention (same weights)",
                "input": {"pixels": list(pixels.shape), "seed": 0, "dtype": "float32", "predictor_context_tokens": context_ids.shape[1]},
                "tolerance": tolerance,
                "criterion": CRITERION,
                **compare(reference, our_outputs(folder, pixels, grid, context_ids, target_ids), tolerance),
            }
        (folder / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        (folder / "README.md").write_text(model_card(report, repo_id))
        if verify and not report["verification"]["passed"]:
            worst = {name: f"{e['max_abs_diff']:.3g} (allowed {e['allowed']:.3g})" for name, e in report["verification"]["outputs"].items()}
            raise VerificationError(f"verification failed, nothing written to {output}: max abs diff {worst}")

    _write_into_place(output, overwrite, write)
    return report


def export_to_transformers(source: str | Path, output: str | Path, *, overwrite: bool = False,
                           tolerance: float = DEFAULT_TOLERANCE) -> dict:  # fmt: skip
    """One of our folders -> transformers' `VJEPA2Model` / `VJEPA2ForVideoClassification` (full attention),
    the predictor from its `predictor.safetensors` (freshly initialised without one, as the report says),
    verified against our full-attention model."""
    import transformers

    output = Path(output).expanduser().absolute()
    check_output(output, overwrite, [Path(source)])
    found = resolve(source)
    if found.kind != "ours":
        raise ConversionError(f"{source}: a {found.kind} source, not one of our folders (model_type vjepa2_area): "
                              "convert it first (vjepa2-area-convert SOURCE OUT)")  # fmt: skip
    folder, ours = found.where, _load_ours(found)
    classifier = isinstance(ours, VJEPA2AreaForVideoClassification)
    try:
        hf_config = ours.config.to_transformers_config(classifier=classifier)
    except ValueError as err:
        raise ConversionError(f"cannot export {folder.name}: {err}") from None
    root = "vjepa2." if classifier else ""
    original = {k.removeprefix("encoder.") if classifier else k: v for k, v in ours.state_dict().items()}
    state = to_transformers({k: v for k, v in original.items() if not k.startswith("head.")}, ENCODER_KEYS, root + "encoder.")
    state.update(to_transformers({k: v for k, v in original.items() if k.startswith("head.")}, HEAD_KEYS))
    has_predictor = (folder / PREDICTOR_WEIGHTS_NAME).is_file()
    if has_predictor:
        state.update(to_transformers(load_file(folder / PREDICTOR_WEIGHTS_NAME), PREDICTOR_KEYS, root + "predictor."))
    hf_model = getattr(transformers, "VJEPA2ForVideoClassification" if classifier else "VJEPA2Model")(hf_config).eval()
    result = hf_model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if has_predictor or "predictor." not in k]
    if missing or result.unexpected_keys:
        raise ConversionError(f"the weights do not fit transformers' model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    pixels = verification_input(ours.config)[0]
    with torch.no_grad():
        reference = {"last_hidden_state": getattr(ours, "encoder", ours)(pixels).last_hidden_state}
        candidate = {"last_hidden_state": getattr(hf_model, "vjepa2", hf_model)(pixels, skip_predictor=True).last_hidden_state}
        if classifier:
            reference["logits"], candidate["logits"] = ours(pixels).logits, hf_model(pixels).logits
    report = {
        "source": {"format": "hf_vjepa_area", "files": [file_record(folder / SAFE_WEIGHTS_NAME)]},
        "architecture": type(hf_model).__name__,
        "predictor": PREDICTOR_WEIGHTS_NAME if has_predictor else "freshly initialised",
        "verification": {"reference": "hf_vjepa_area's full-attention model of the folder",
                         "candidate": f"transformers' own {type(hf_model).__name__}", "tolerance": tolerance,
                         "criterion": CRITERION, **compare(reference, candidate, tolerance)},
    }  # fmt: skip
    if not report["verification"]["passed"]:
        raise VerificationError(f"export verification failed: {json.dumps(report['verification']['outputs'])}")

    def write(target: Path) -> None:
        hf_model.save_pretrained(target)
        transformers.VJEPA2VideoProcessor(crop_size=ours.config.img_size[0]).save_pretrained(target)
        (target / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")

    _write_into_place(output, overwrite, write)
    return report
