"""The model card of a converted repo (huggingface_hub.ModelCard): metadata, loading, provenance, figures."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

# The transformers ports of Meta's released encoders, used as `base_model` for `.pt` sources.
BASE_MODELS = {
    ("large", 256): "facebook/vjepa2-vitl-fpc64-256",
    ("huge", 256): "facebook/vjepa2-vith-fpc64-256",
    ("giant", 256): "facebook/vjepa2-vitg-fpc64-256",
    ("giant", 384): "facebook/vjepa2-vitg-fpc64-384",
}


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _figures(report: dict) -> str:
    verification = report.get("verification")
    if not verification:
        return (
            "Not run for this upload (convert with `--verify` to compare against the source model). The weights "
            f"were checked tensor by tensor after writing: {report['weights_roundtrip']['tensors']} tensors, identical."
        )
    rows = ["| comparison | output | max abs diff | mean abs diff | within tolerance |", "|---|---|---|---|---|"]
    for title, block in (
        ("source vs converted (full attention)", verification["equivalence"]),
        ("converted with area attention vs source (information)", verification.get("area_deviation")),
    ):
        if not block:
            continue
        for name, entry in block["outputs"].items():
            passed = entry.get("passed")
            rows.append(
                f"| {title} | `{name}` | {_fmt(entry.get('max_abs_diff'))} | {_fmt(entry.get('mean_abs_diff'))} | "
                f"{'yes' if passed else ('n/a' if passed is None else 'NO')} |"
            )
    text = [
        f"Reference: {verification['reference']}. Input: seeded normal pixels of shape "
        f"{verification['input']['shape']} (seed {verification['input']['seed']}), float32, CPU; passes when "
        f"{verification.get('criterion', 'max abs diff <= tolerance')}, tolerance {verification['tolerance']:g}.",
        "",
        *rows,
    ]
    if verification.get("area_deviation"):
        text += [
            "",
            "The area-attention rows are not a conversion error: area layers attend only within their areas, a "
            "different attention pattern from the full-attention source. They show how far this configuration "
            "moves the features before any adaptation.",
        ]
    return "\n".join(text)


def build_model_card(report: dict, repo_id: str | None, license: str = "mit", base_model: str | None = None) -> str:
    config = report["config"]
    classification = report["architecture"] == "VJEPA2AreaForVideoClassification"
    num_labels = len(config.get("id2label") or {})
    area = bool(config.get("area_splits"))
    repo = repo_id or "ORG/NAME"
    tags = ["video", "vjepa2", "v-jepa-2", "self-supervised-learning", "vision-transformer", "timm", "transformers"]
    if area:
        tags.append("area-attention")
    data = ModelCardData(
        license=license,
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="video-classification" if classification else "feature-extraction",
        tags=tags,
    )
    source = report["source"]
    files = "\n".join(f"- `{f['name']}` sha256 `{f['sha256']}`" for f in source["files"])
    if area:
        attention = (
            f"Spatiotemporal Area Attention (ST-A²): blocks {config['area_layers']} attend within "
            f"{config['area_splits']} (time, height, width) areas; the other blocks attend globally."
        )
    else:
        attention = "Full (global) attention in every block, exactly as the source model."
    entry = "VJEPA2AreaForVideoClassification" if classification else "VJEPA2AreaModel"
    auto = "AutoModelForVideoClassification" if classification else "AutoModel"
    height, width = config["img_size"]
    frames = min(config["num_frames"], 16) if config["num_frames"] > 1 else 1
    use = "logits = model(pixel_values_videos=video).logits" if classification else (
        "tokens = model(pixel_values_videos=video).last_hidden_state  # [1, N, hidden]"
    )
    body = f"""
# {repo.split('/')[-1]}

V-JEPA 2 video encoder ({report['variant']}: hidden {config['embed_dim']}, {config['depth']} blocks, \
{config['num_heads']} heads, patch {config['patch_size']}, tubelet {config['tubelet_size']}, {height}x{width} pixels)\
{' with an attentive probe of ' + str(num_labels) + ' classes' if classification else ''}, converted with \
`vjepa2-area-convert` from the `hf_vjepa_area` package.

{attention}

Weights use the original V-JEPA 2 key names (`patch_embed.*`, `blocks.{{i}}.*`, `norm.*`), so one
`model.safetensors` serves transformers and timm.

## Load with transformers

```python
import torch
from transformers import {auto}

model = {auto}.from_pretrained("{repo}", trust_remote_code=True).eval()
video = torch.randn(1, {frames}, 3, {height}, {width})  # [batch, frames, channels, height, width], ImageNet-normalised
# (any multiple of {config['tubelet_size']} frames; the model was trained on {config['num_frames']}-frame clips)
with torch.no_grad():
    {use}
```

or, with the package installed (`pip install hf_vjepa_area`):

```python
from hf_vjepa_area import {entry}
model = {entry}.from_pretrained("{repo}")
```

## Load with timm

```python
import timm
import hf_vjepa_area  # registers the V-JEPA 2 area models with timm

model = timm.create_model("hf-hub:{repo}", pretrained=True)
```

## Conversion

- Source ({source['kind']}): {source.get('description', '')}
{files}
- Converted keys: {report['keys']['converted']}; dropped on purpose: {report['keys']['dropped_count']} \
({', '.join(report['keys']['dropped_groups']) or 'none'}).

### Verification

{_figures(report)}

The full figures are in `conversion_report.json`.
"""
    return str(ModelCard("---\n" + data.to_yaml() + "\n---\n" + body))


__all__ = ["BASE_MODELS", "build_model_card"]
