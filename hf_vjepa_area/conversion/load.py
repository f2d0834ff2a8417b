"""Released V-JEPA 2 weights as our models, with no conversion step: `load_released`.

A source is Meta's `.pt` (vitl.pt, ...; optionally with a released probe) or transformers' V-JEPA 2
(`facebook/vjepa2-*` Hub id, or a local folder). What the weights do not store comes from the source's
config.json (transformers) or, for a `.pt`, from the tensors' shapes plus the variant table (heads) and
the released-models table (image size of a released file name).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import init_empty_weights

from ..modeling import VARIANTS, VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel
from ..modeling.configuration_vjepa2_area import RELEASED_MODELS, multilevel_out_layers, parse_out_layers, variant_of
from .keys import ConversionError, original_parts, original_probe, safe_torch_load

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".safetensors", ".ckpt")  # a file, never a Hub repo id

# Meta's released classification probes (https://dl.fbaipublicfiles.com/vjepa2/evals/<name>) and the tokens
# each was trained on, which its tensors do not record: "last" (the last block's) or "multilevel" (the
# Diving48 evals' four blocks, `MULTILEVEL_OUT_LAYERS` for the encoder's size).
RELEASED_PROBES = {
    "ssv2-vitl-16x2x3.pt": "last",
    "ssv2-vitg-384-64x2x3.pt": "last",
    "diving48-vitl-256.pt": "multilevel",
    "diving48-vitg-384-32x4x3.pt": "multilevel",
}


def probe_setting(probe: Path, given):
    """What a probe reads, before anything is loaded: `given` ("last", "multilevel", indices or a list),
    else the released probe's known setting; an unknown probe without it is refused, never guessed."""
    setting = given if given is not None else RELEASED_PROBES.get(probe.name)
    if setting is None:
        raise ConversionError(
            f"{probe.name}: a probe's tensors do not say which encoder blocks it was trained on: pass --probe-out-layers "
            "(probe_out_layers=) 'last' (the last block's tokens: V-JEPA 2's SSv2, K400, COIN evals), 'multilevel' "
            "(its Diving48 and Jester evals' four blocks) or the block indices, e.g. 17,19,21,23"
        )
    return setting


def probe_out_layers(probe: Path, given, config: VJEPA2AreaConfig) -> list[int] | None:
    """The blocks `probe` reads on the encoder of `config` (None: the last block's tokens)."""
    setting = probe_setting(probe, given)
    try:
        if setting == "last":
            return None
        return multilevel_out_layers(config) if setting == "multilevel" else parse_out_layers(setting, config.depth)
    except ValueError as err:
        origin = f"--probe-out-layers {setting}" if given is not None else f"{probe.name} (a released {setting} probe)"
        raise ConversionError(f"{origin}: {err}") from None


@dataclass
class Source:
    """A source read into original key names, with the config that holds it and where it came from."""

    config: VJEPA2AreaConfig
    encoder: dict[str, torch.Tensor]  # + head.* for a classifier
    predictor: dict[str, torch.Tensor] = field(default_factory=dict)
    context_encoder: dict[str, torch.Tensor] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    @property
    def model_class(self) -> type:
        return VJEPA2AreaForVideoClassification if any(k.startswith("head.") for k in self.encoder) else VJEPA2AreaModel


def file_record(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return {"name": path.name, "sha256": digest.hexdigest()}  # no local path: the report is published


def _exact_ratio(dim: int, hidden: int) -> float:
    """A ratio r with int(dim * r) == hidden (the MLP width is computed as int(dim * mlp_ratio))."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _depth(state: dict, blocks: str) -> int:
    return 1 + max((int(k[len(blocks) + 1:].split(".")[0]) for k in state if k.startswith(blocks + ".")), default=-1)


def config_from_tensors(parts: dict, file_name: str, variant: str | None, img_size: int | None, **fields) -> VJEPA2AreaConfig:
    """An original encoder's config: sizes from its tensors, heads from `variant` (inferred for the
    table's sizes), img_size from the released file of that name (else 256), predictor sizes likewise."""
    encoder = parts["encoder"]
    if "pos_embed" in encoder:
        raise ConversionError("the encoder has a pos_embed: V-JEPA 1-style (non-RoPE) encoders are not supported")
    patch = encoder.get("patch_embed.proj.weight")
    if patch is None or patch.ndim != 5 or "blocks.0.mlp.fc1.weight" not in encoder:
        raise ConversionError(f"not a V-JEPA 2 video encoder (patch_embed.proj / blocks.0.mlp.fc1 missing); keys: {sorted(encoder)[:5]}")
    dim, depth, hidden = patch.shape[0], _depth(encoder, "blocks"), encoder["blocks.0.mlp.fc1.weight"].shape[0]
    sizes = dict(embed_dim=dim, depth=depth, mlp_ratio=_exact_ratio(dim, hidden))
    fits = next((name for name, v in VARIANTS.items()
                 if (v["embed_dim"], v["depth"], int(dim * v["mlp_ratio"])) == (dim, depth, hidden)), None)  # fmt: skip
    if variant and fits and variant != fits or variant not in (None, *VARIANTS):
        raise ConversionError(f"--variant {variant}: the weights (width {dim}, {depth} blocks, MLP {hidden}) are {fits or 'no variant'}")
    if fits is None and variant is None:
        table = ", ".join(f"{n} {v['num_heads']}" for n, v in VARIANTS.items())
        raise ConversionError(f"width {dim}, {depth} blocks is no released size and the weights do not store the head count: "
                              f"pass --variant NAME for its heads ({table})")  # fmt: skip
    heads = VARIANTS[fits or variant]["num_heads"]
    if fits:
        sizes["mlp_ratio"] = VARIANTS[fits]["mlp_ratio"]
    released = next((r for r in RELEASED_MODELS.values() if r.pt_file == file_name), None)
    predictor = parts["predictor"]
    if predictor:
        width = predictor["predictor_embed.weight"].shape[0]
        sizes.update(predictor_embed_dim=width, predictor_depth=_depth(predictor, "predictor_blocks"),
                     predictor_mlp_ratio=_exact_ratio(width, predictor["predictor_blocks.0.mlp.fc1.weight"].shape[0]),
                     predictor_num_mask_tokens=sum(k.startswith("mask_tokens.") for k in predictor))  # fmt: skip
    try:
        return VJEPA2AreaConfig(
            **sizes, num_heads=heads, in_chans=patch.shape[1], tubelet_size=patch.shape[2], patch_size=patch.shape[-1],
            qkv_bias="blocks.0.attn.qkv.bias" in encoder, img_size=img_size or (released.img_size if released else 256),
            num_frames=released.num_frames if released else 64, **fields,
        )  # fmt: skip
    except ValueError as err:
        raise ConversionError(f"invalid configuration: {err}") from None


def resolve_folder(source: str, revision: str | None) -> Path:
    """A local folder, or a Hub repo resolved through the Hugging Face cache (or downloaded)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.suffix in CHECKPOINT_SUFFIXES or path.is_absolute() or source.startswith((".", "~")) or source.count("/") != 1:
        raise ConversionError(f"{source}: no such local file or folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, revision=revision, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as err:  # noqa: BLE001 - offline, missing, gated: one line either way
        detail = " ".join(str(err).split())[:300]
        raise ConversionError(
            f"{source}: not a local file or folder, and not readable from the Hub ({type(err).__name__}: {detail})"
        ) from None


def _safetensors(folder: Path) -> tuple[dict, list[dict]]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    files = [folder / "model.safetensors"]
    if index.is_file():  # sharded
        files = sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    if not files[0].is_file():
        raise ConversionError(f"{folder.name} has no model.safetensors")
    state = {}
    for file in files:
        state.update(load_file(file))
    return state, [file_record(f) for f in files]


def read_source(source: str | Path, *, checkpoint_key: str | None = None, probe: str | Path | None = None,
                variant: str | None = None, img_size: int | None = None, revision: str | None = None,
                **fields) -> Source:  # fmt: skip
    """Read a released source into original key names; `fields` set config fields (area options, labels);
    with a probe (a `.pt` or transformers' classifier), `probe_out_layers` says which blocks it reads
    (`probe_out_layers()`; transformers' classifiers read the last block unless told otherwise)."""
    path = Path(source).expanduser()
    out_layers = fields.pop("probe_out_layers", None)
    if out_layers is not None and probe is None and path.is_file():
        raise ConversionError("--probe-out-layers: only with --probe (the blocks a released probe reads)")
    if probe is not None:
        probe_setting(Path(probe), out_layers)  # refused before the checkpoints are read
    if revision and path.exists():
        raise ConversionError(f"--revision: {source} is a local path, which has no revisions (they are for Hub ids)")
    if path.is_file():
        parts = original_parts(safe_torch_load(path), checkpoint_key)
        files = [file_record(path)]
        if probe is not None:
            parts["encoder"] = {**parts["encoder"], **original_probe(safe_torch_load(probe))}
            head = parts["encoder"]
            fields = dict(num_labels=head["head.linear.weight"].shape[0], probe_depth=_depth(head, "head.pooler.blocks") + 1, **fields)
            files.append(file_record(Path(probe)))
        config = config_from_tensors(parts, path.name, variant, img_size, **fields)
        if probe is not None:
            config.probe_out_layers = probe_out_layers(Path(probe), out_layers, config)
        provenance = {"format": "original", "checkpoint_key": checkpoint_key or "target_encoder"}
        return Source(config, parts["encoder"], parts["predictor"], parts["context_encoder"], {**provenance, "files": files})
    folder = resolve_folder(str(source), revision)
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ConversionError(f"{source}: cannot read config.json ({err})") from None
    if raw.get("model_type") != "vjepa2":
        raise ConversionError(f"{source}: model_type {raw.get('model_type')!r}, not transformers' 'vjepa2' "
                              "(one of our folders loads with from_pretrained, or converts with --to transformers)")  # fmt: skip
    given = [flag for flag, value in (("--checkpoint-key", checkpoint_key), ("--probe", probe), ("--img-size", img_size)) if value]
    if given:
        raise ConversionError(f"{', '.join(given)}: not for a transformers source (its config.json says)")
    from transformers import VJEPA2Config

    classifier = (raw.get("architectures") or [""])[0] == "VJEPA2ForVideoClassification"
    state, files = _safetensors(folder)
    parts = original_parts(state)
    try:
        config = VJEPA2AreaConfig.from_transformers_config(VJEPA2Config.from_pretrained(folder), classifier, **fields)
    except ValueError as err:
        raise ConversionError(f"invalid configuration: {err}") from None
    if out_layers is not None:  # transformers' classifiers read the last block; a probe trained on others says so here
        if not classifier:
            raise ConversionError("--probe-out-layers: the source has no probe (not a VJEPA2ForVideoClassification)")
        config.probe_out_layers = probe_out_layers(Path(str(source)), out_layers, config)
    if variant is not None and variant_of(config) != variant:
        raise ConversionError(f"--variant {variant}: the source's config.json is {variant_of(config) or 'no variant'}")
    commit = folder.name if not path.is_dir() else None
    provenance = {"format": "transformers", "repo_id": None if path.is_dir() else str(source), "revision": commit, "files": files}
    return Source(config, parts["encoder"], parts["predictor"], {}, provenance)


def build_model(model_class: type, config: VJEPA2AreaConfig, state_dict: dict):
    """`model_class(config)` holding exactly `state_dict`'s tensors (original names; no random init, no copy)."""
    with init_empty_weights():
        model = model_class(config)
    if model_class is VJEPA2AreaForVideoClassification:  # its encoder is a submodule
        state_dict = {k if k.startswith("head.") else "encoder." + k: v for k, v in state_dict.items()}
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    shapes = [f"{k} {list(state_dict[k].shape)} vs {list(expected[k].shape)}" for k in sorted(set(expected) & set(state_dict))
              if state_dict[k].shape != expected[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        raise ConversionError(f"the weights do not fit {model_class.__name__}: missing {missing[:6]} ({len(missing)}), "
                              f"unexpected {unexpected[:6]} ({len(unexpected)}), shapes (checkpoint vs model) {shapes[:4]}")  # fmt: skip
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def load_released(source: str | Path, **options):
    """A `VJEPA2AreaModel` (or, with a probe or a transformers classifier, `VJEPA2AreaForVideoClassification`)
    holding released V-JEPA 2 weights, with any config field set, e.g.

        load_released("facebook/vjepa2-vitl-fpc64-256", area_splits=(2, 2, 1))
        load_released("vitl.pt", probe="ssv2-vitl-16x2x3.pt")

    Options: `checkpoint_key` (a `.pt`'s entry, default `target_encoder`), `probe` (a released probe
    `.pt`), `probe_out_layers` (the blocks it reads: "last", "multilevel" or indices; needed for a probe
    not in `RELEASED_PROBES`), `variant` (heads of a size not in the table), `img_size`, `revision` (of a Hub id), and
    `VJEPA2AreaConfig` fields. Files are read with `torch.load(weights_only=True)` or safetensors only.
    """
    read = read_source(source, **options)
    return build_model(read.model_class, read.config, read.encoder)
