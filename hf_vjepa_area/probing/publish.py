"""What a probe run publishes: the best head's weights (V-JEPA 2's `AttentiveClassifier` keys), every
head's, the accuracy plots, and the best head with its encoder as a `VJEPA2AreaForVideoClassification`
repo folder with a model card, optionally pushed to the Hub."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .._files import is_nonempty, write_atomically, write_text_atomically
from ..hub import push_folder, save_repo_folder
from ..modeling import (
    AttentiveClassifier,
    VJEPA2AreaConfig,
    VJEPA2AreaForVideoClassification,
)
from ..runs import UsageError, to_json, write_json
from .heads import HeadSpec, MultiHeadProbe

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
DASHES = ("", "6,3", "2,2", "8,3,2,3")


def accuracy_svg(curves: dict[str, Sequence[float]], *, title: str = "val top-1 per head", best: str | None = None,
                 width: int = 760, height: int = 420) -> str:  # fmt: skip
    """A small self-contained SVG line chart: one line per head, x = epoch (1..E), y = top-1 (%)."""
    left, right, top, bottom = 56, 190, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    epochs = max((len(v) for v in curves.values()), default=1)
    values = [y for v in curves.values() for y in v if y == y]  # drop NaN
    low, high = max(0.0, min(values, default=0.0) - 2), min(100.0, max(values, default=100.0) + 2)
    tick = next(t for t in (1, 2, 5, 10, 20, 25, 50, 100) if (high - low) / t <= 8)
    low, high = math.floor(low / tick) * tick, math.ceil(high / tick) * tick
    if high <= low:
        low, high = low - tick, high + tick

    def x(epoch: int) -> float:  # epoch from 1
        return left + (plot_w * (epoch - 1) / (epochs - 1) if epochs > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - low) / (high - low))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14">{html.escape(title)}</text>',
    ]
    for i in range(round((high - low) / tick) + 1):  # horizontal grid and y labels
        value = low + i * tick
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>')
    step = max(1, math.ceil(epochs / 10))
    for epoch in range(1, epochs + 1, step):
        out.append(f'<text x="{x(epoch):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{epoch}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">epoch</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2:.1f}" transform="rotate(-90 14 {top + plot_h / 2:.1f})" '
               'text-anchor="middle">top-1 (%)</text>')  # fmt: skip
    for i, (name, series) in enumerate(curves.items()):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)]
        stroke = 3 if name == best else 1.5
        points = " ".join(f"{x(e + 1):.1f},{y(v):.1f}" for e, v in enumerate(series) if v == v)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{stroke}"{dash_attr}/>')
        for e, v in enumerate(series):
            if v == v:
                out.append(f'<circle cx="{x(e + 1):.1f}" cy="{y(v):.1f}" r="2" fill="{colour}"/>')
        ly = top + 8 + 15 * i
        label = html.escape(name + (" (best)" if name == best else ""))
        out.append(f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 34}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="{stroke}"{dash_attr}/>')  # fmt: skip
        out.append(f'<text x="{left + plot_w + 40}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_accuracy_png(curves: dict[str, Sequence[float]], path: Path, best: str | None = None) -> bool:
    """The same chart as a PNG when matplotlib is installed (it is optional); returns whether it wrote."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, series in curves.items():
        ax.plot(range(1, len(series) + 1), series, marker="o", lw=3 if name == best else 1.5, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    try:
        write_atomically(Path(path), lambda temp: fig.savefig(temp, format="png", dpi=120))
    finally:
        plt.close(fig)
    return True


def head_metadata(spec: HeadSpec, index: int, head: AttentiveClassifier, class_names: Sequence[str], **extra: Any) -> dict[str, str]:
    pooler = head.pooler
    meta = {
        "format": "pt",
        "kind": "vjepa2_attentive_classifier",
        "head_index": str(index),
        "lr": repr(spec.lr),
        "weight_decay": repr(spec.weight_decay),
        "embed_dim": str(pooler.query_tokens.shape[-1]),
        "num_classes": str(len(class_names)),
        "probe_depth": str(len(pooler.blocks) + 1),
        "probe_num_heads": str(pooler.cross_attention_block.xattn.num_heads),
        "class_names": json.dumps(list(class_names)),
    }
    meta.update({key: str(value) for key, value in extra.items()})
    return meta


def save_probe_weights(path: Path, head: AttentiveClassifier, metadata: dict[str, str]) -> None:
    """One head in V-JEPA 2's `AttentiveClassifier` key names (`pooler.*`, `linear.*`), atomically."""
    from safetensors.torch import save_file

    state = {key: value.detach().cpu().contiguous() for key, value in head.state_dict().items()}
    write_atomically(path, lambda temp: save_file(state, str(temp), metadata=metadata))


def save_all_heads(path: Path, probe: MultiHeadProbe, metadata: dict[str, str]) -> None:
    """Every head, keys `heads.{i}.pooler.*` / `heads.{i}.linear.*`; metadata lists the grid."""
    from safetensors.torch import save_file

    state = {key: value.detach().cpu().contiguous() for key, value in probe.state_dict().items()}
    grid = [{"lr": s.lr, "weight_decay": s.weight_decay} for s in probe.specs]
    metadata = {"format": "pt", **metadata, "grid": json.dumps(grid)}
    write_atomically(path, lambda temp: save_file(state, str(temp), metadata=metadata))


def build_classifier(encoder: nn.Module, head: AttentiveClassifier, class_names: Sequence[str], *,
                     frames: int | None = None, resolution: int | None = None,
                     out_layers: Sequence[int] | None = None) -> VJEPA2AreaForVideoClassification:  # fmt: skip
    """A `VJEPA2AreaForVideoClassification` with the encoder's weights and a trained probe head.

    Its `forward` classifies one clip (`pixel_values_videos [B, T, C, H, W]`). The probe was trained on
    S segments' tokens concatenated per view; to score a video the way the probe was evaluated, encode
    each segment and view, join with `group_views` and run `model.head` (see docs/probe.md).
    `frames` / `resolution` (the probe's clip size) become the config's `num_frames` / `img_size`, so the
    saved video processor crops like the probe did; RoPE encoders only (others have a sized pos_embed).
    `out_layers` (the blocks a multi-level probe read) becomes `probe_out_layers`.
    """
    pooler = head.pooler
    fields = {k: v for k, v in encoder.config.to_dict().items()
              if k not in ("architectures", "auto_map", "model_type", "transformers_version")}  # fmt: skip
    fields.update(
        id2label={i: str(name) for i, name in enumerate(class_names)},
        label2id={str(name): i for i, name in enumerate(class_names)},
        probe_depth=len(pooler.blocks) + 1,
        probe_num_heads=pooler.cross_attention_block.xattn.num_heads,
        probe_out_layers=list(out_layers) if out_layers is not None else None,
    )
    config = VJEPA2AreaConfig(**fields)
    if encoder.config.use_rope and (frames or resolution):
        sized = {**fields, "num_frames": frames or config.num_frames, "img_size": resolution or config.img_size}
        try:
            config = VJEPA2AreaConfig(**sized)
        except ValueError:  # e.g. area splits larger than that grid: keep the encoder's own size
            pass
    model = VJEPA2AreaForVideoClassification(config)
    model.encoder.load_state_dict(encoder.state_dict())
    model.head.load_state_dict(head.state_dict())
    return model.eval()


def probe_input(out_layers) -> str:
    if out_layers is None:
        return "the last block's tokens"
    return f"the tokens of blocks {list(out_layers)}, each through the final norm, concatenated (multi-level)"


def classifier_model_card(results: dict, repo_id: str | None = None) -> str:
    best = results["best_head"]
    encoder = results["encoder"]
    data = results["data"]
    config = results["config"]
    if config.get("cache_features"):
        augmentation = "none (cached features of the centre view of each segment)"
    else:
        augmentation = (f"random resized crop, RandAugment {'on' if config.get('auto_augment') else 'off'}, "
                        f"random erasing p {config.get('erase_prob') or 0:g}")  # fmt: skip
    protocol = results["protocol_global_batch_size"]
    batch_note = ("V-JEPA 2's protocol" if results["matches_protocol_batch"] else
                  f"V-JEPA 2's protocol: {protocol}" if protocol else "no V-JEPA 2 protocol")  # fmt: skip
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: video-classification",
        "tags: [vjepa2, video, attentive-probe, st-a2]",
        "---",
        f"# {repo_id or 'V-JEPA 2 frozen attentive probe'}",
        "",
        f"A frozen `{encoder['model']}` encoder with a V-JEPA 2 attentive probe "
        f"({config['probe_depth']} blocks, {config['probe_heads']} heads) trained by `examples/k400_probe.py` of "
        "hf_vjepa_area.",
        "",
        f"- classes: {data['num_classes']} (train {data['num_train']}, val {data['num_val']} videos)",
        f"- clips: {config['frames']} frames, step {config['frame_step']}, {config['segments']} segments x "
        f"{config['views']} views at {config['resolution']} px",
        f"- probe input: {probe_input(results['probe_out_layers'])}",
        f"- training augmentation: {augmentation}",
        f"- global batch {results['global_batch_size']} ({batch_note})",
        f"- area attention: splits {encoder['area_splits']}, layers {encoder['area_layers']}",
        f"- best head of the lr x wd grid: lr {best['lr']:g}, weight decay {best['weight_decay']:g}; "
        f"val top-1 {best['val_top1']:.2f}% (epoch {best['epoch']})",
        "",
        "`model(pixel_values_videos)` classifies one clip; the reported accuracy averages the softmax over "
        "views with the segments' tokens concatenated, as in V-JEPA 2 (docs/probe.md shows how).",
    ]
    return "\n".join(lines) + "\n"


# The file that makes a folder a probe's classifier repo: only such a folder is replaced by a later run.
CLASSIFIER_RESULTS = "probe_results.json"


def check_classifier_folder(folder: str | Path, replace: bool) -> None:
    """Refuse, before a run starts, a non-empty classifier folder that no probe wrote (no `CLASSIFIER_RESULTS`),
    and a probe's unless `replace` (--overwrite or --resume): nothing else is ever deleted."""
    folder = Path(folder)
    if not is_nonempty(folder):
        return
    if not (folder / CLASSIFIER_RESULTS).is_file():
        raise UsageError(f"--save-classifier {folder} holds files that no probe wrote (no {CLASSIFIER_RESULTS}); "
                         "choose an empty or new folder")  # fmt: skip
    if not replace:
        raise UsageError(f"--save-classifier {folder} holds an earlier probe's classifier; pass --overwrite to replace it")


def write_probe_outputs(out: Path, results: dict, probe: MultiHeadProbe, encoder: nn.Module, class_names: Sequence[str], *,
                        all_heads: bool = False, classifier_folder: str | Path | None = None, push_to_hub: str | None = None,
                        hub_private: bool = False, frames: int | None = None, resolution: int | None = None) -> None:  # fmt: skip
    """A finished run's files in `out`: probe.safetensors (the best head), probe_heads.safetensors with
    `all_heads`, accuracy.svg (and .png with matplotlib), results.json; with `classifier_folder` or
    `push_to_hub` the classifier repo folder (default `out/classifier`), pushed when `push_to_hub` names a
    repo. `results` (`build_results`) gains `plots`, `classifier_folder` and `pushed`."""
    specs = probe.specs
    best = results["best_head"]["index"]
    head = probe.heads[best]
    meta = head_metadata(specs[best], best, head, class_names, encoder=results["config"]["model"],
                         val_top1=results["best_head"]["val_top1"])  # fmt: skip
    save_probe_weights(out / "probe.safetensors", head, meta)
    if all_heads:
        save_all_heads(out / "probe_heads.safetensors", probe, {"class_names": json.dumps(list(class_names))})
    curves = {h["name"]: h["val_top1"] for h in results["heads"]}
    best_name = results["best_head"]["name"]
    write_text_atomically(out / "accuracy.svg", accuracy_svg(curves, best=best_name), overwrite=True)
    results["plots"] = ["accuracy.svg"] + (["accuracy.png"] if write_accuracy_png(curves, out / "accuracy.png", best_name) else [])
    write_json(out / "results.json", results)

    if classifier_folder or push_to_hub:
        folder = Path(classifier_folder or out / "classifier")
        model = build_classifier(encoder.cpu(), head.cpu(), class_names, frames=frames, resolution=resolution,
                                 out_layers=results["probe_out_layers"])  # fmt: skip
        save_repo_folder(model, folder, model_card=classifier_model_card(results, push_to_hub),
                         safetensors_metadata={k: v for k, v in meta.items() if k != "format"},
                         extra_files={CLASSIFIER_RESULTS: to_json(results)}, overwrite=True)  # fmt: skip
        results["classifier_folder"] = str(folder)
        if push_to_hub:
            results["pushed"] = push_folder(folder, push_to_hub, private=hub_private,
                                            commit_message="Upload frozen attentive probe (hf_vjepa_area k400_probe)")  # fmt: skip
        write_json(out / "results.json", results)
