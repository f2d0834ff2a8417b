"""Released V-JEPA 2 weights read into our configs and original key names (`read_source`), with no conversion
step: what `sources.load_model` and the converter read them with.

A source is Meta's `.pt` (vitl.pt, ...; optionally with a released probe) or transformers' V-JEPA 2
(`facebook/vjepa2-*` Hub id, or a local folder). What the weights do not store comes from the source's
config.json (transformers) or, for a `.pt`, from the tensors' shapes plus the released tables (heads by
size, resolution and frame count by file name), else from the caller.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.utils import SAFE_WEIGHTS_NAME

from .._build import build_holding
from ..locate import resolve_folder
from ..modeling import VARIANTS, VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel
from ..modeling.ac_predictor_vjepa2_area import RELEASED_AC_PREDICTOR_HEADS, VJEPA2ACPredictor, VJEPA2ACPredictorConfig
from ..modeling.released import RELEASED_PREDICTOR_HEADS, RELEASED_PT_FILES, resolve_out_layers, variant_of
from ..checkpoint_keys import ConversionError, default_checkpoint_key, is_ac_predictor, original_parts, original_probe, safe_torch_load

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
        return resolve_out_layers(setting, config)
    except ValueError as err:
        origin = f"--probe-out-layers {setting}" if given is not None else f"{probe.name} (a released {setting} probe)"
        raise ConversionError(f"{origin}: {err}") from None


class UnstoredFactsError(ConversionError):
    """What a `.pt` does not store (heads, resolution, frames) and the caller did not give."""


@dataclass
class Source:
    """A source read into original key names, with the config that holds it and where it came from."""

    config: VJEPA2AreaConfig
    encoder: dict[str, torch.Tensor]  # + head.* for a classifier
    predictor: dict[str, torch.Tensor] = field(default_factory=dict)
    context_encoder: dict[str, torch.Tensor] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    ac_predictor: dict[str, torch.Tensor] = field(default_factory=dict)  # V-JEPA 2-AC's, in Meta's names
    ac_predictor_config: VJEPA2ACPredictorConfig | None = None  # None until its head count is known

    def ac_config(self) -> VJEPA2ACPredictorConfig:
        """The AC predictor's config; refuses (naming --predictor-heads) a width not in the released table
        when no head count was given. Only what uses the predictor asks: the encoder loads regardless."""
        return self.ac_predictor_config or ac_predictor_config(self.ac_predictor, self.config)

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


def _released_file(file_name: str, img_size: int | None, num_frames: int | None, missing: list[str]) -> dict:
    """img_size and num_frames of a `.pt`: the released files' table's for a released file name (flags that
    contradict it are refused), the caller's for any other file (its tensors do not store them)."""
    if file_name in RELEASED_PT_FILES:
        sizes = dict(zip(("img_size", "num_frames"), RELEASED_PT_FILES[file_name]))
        contradicting = [f"--{name.replace('_', '-')} {given}" for name, given in (("img_size", img_size), ("num_frames", num_frames))
                         if given is not None and given != sizes[name]]  # fmt: skip
        if contradicting:
            raise ConversionError(f"{file_name} is Meta's release at {sizes['img_size']} px, {sizes['num_frames']} frames; "
                                  f"{', '.join(contradicting)} contradicts it (rename the file if it holds another model)")  # fmt: skip
        return sizes
    flags = [flag for flag, given in (("--img-size", img_size), ("--num-frames", num_frames)) if given is None]
    if flags:
        missing.append(f"{file_name} is not one of Meta's released files ({', '.join(RELEASED_PT_FILES)}): "
                       f"pass {' and '.join(flags)}")  # fmt: skip
    return dict(img_size=img_size, num_frames=num_frames)


def _predictor_sizes(predictor: dict, heads: int | None, missing: list[str]) -> dict:
    """Predictor config fields: sizes from its tensors, heads from `heads` or the released width's count."""
    width = predictor["predictor_embed.weight"].shape[0]
    heads = heads or RELEASED_PREDICTOR_HEADS.get(width)
    if heads is None:
        released = ", ".join(f"width {w}: {h} heads" for w, h in RELEASED_PREDICTOR_HEADS.items())
        missing.append(f"the predictor's width {width} is not a released one ({released}): pass --predictor-heads N")
    return dict(predictor_embed_dim=width, predictor_depth=_depth(predictor, "predictor_blocks"), predictor_num_heads=heads,
                predictor_mlp_ratio=_exact_ratio(width, predictor["predictor_blocks.0.mlp.fc1.weight"].shape[0]),
                predictor_num_mask_tokens=sum(k.startswith("mask_tokens.") for k in predictor))  # fmt: skip


def config_from_tensors(parts: dict, file_name: str, *, variant: str | None = None, predictor_heads: int | None = None,
                        img_size: int | None = None, num_frames: int | None = None, **fields) -> VJEPA2AreaConfig:  # fmt: skip
    """An original checkpoint's config: sizes from its tensors; what they do not store (encoder and predictor
    heads, resolution, frame count) from the released tables for released files and sizes, else from the
    caller (`variant`, `predictor_heads`, `img_size`, `num_frames`): all that is missing is refused in one
    message that names the flags to pass."""
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
    missing: list[str] = []
    if fits is None and variant is None:
        table = ", ".join(f"{n} {v['num_heads']}" for n, v in VARIANTS.items())
        missing.append(f"width {dim}, {depth} blocks is no released size: pass --variant NAME for its heads ({table})")
    if fits:
        sizes["mlp_ratio"] = VARIANTS[fits]["mlp_ratio"]
    predictor = parts["predictor"]
    if predictor and not is_ac_predictor(predictor):  # an AC predictor's config is its own (`ac_predictor_config`)
        sizes.update(_predictor_sizes(predictor, predictor_heads, missing))
    elif not predictor and predictor_heads is not None:
        raise ConversionError("--predictor-heads: the checkpoint has no predictor")
    sizes.update(_released_file(file_name, img_size, num_frames, missing))
    if missing:
        raise UnstoredFactsError(f"the weights do not store these, so they are asked for: {'; '.join(missing)} "
                                 "(in Python: variant=, predictor_heads=, img_size=, num_frames=)")  # fmt: skip
    try:
        return VJEPA2AreaConfig(
            **sizes, num_heads=VARIANTS[fits or variant]["num_heads"], in_chans=patch.shape[1], tubelet_size=patch.shape[2],
            patch_size=patch.shape[-1], qkv_bias="blocks.0.attn.qkv.bias" in encoder, **fields,
        )  # fmt: skip
    except ValueError as err:
        raise ConversionError(f"invalid configuration: {err}") from None


def ac_predictor_config(predictor: dict, encoder_config: VJEPA2AreaConfig, heads: int | None = None,
                        use_extrinsics: bool = False) -> VJEPA2ACPredictorConfig:
    """A V-JEPA 2-AC predictor's config: sizes from its tensors, heads from the released table by width
    (else `heads`), frame size and patch from the encoder's config. Extrinsics use is not in the weights
    (the encoder for them always exists): the released model does not use them."""
    width, embed_dim = predictor["predictor_embed.weight"].shape
    if heads is None and width not in RELEASED_AC_PREDICTOR_HEADS:
        table = ", ".join(f"width {w}: {h}" for w, h in RELEASED_AC_PREDICTOR_HEADS.items())
        raise UnstoredFactsError(f"AC predictor width {width} is no released size and the weights do not store its head count: "
                                 f"pass --predictor-heads N (predictor_heads=N; released {table})")  # fmt: skip
    try:
        return VJEPA2ACPredictorConfig(
            embed_dim=embed_dim, predictor_embed_dim=width, depth=_depth(predictor, "predictor_blocks"),
            num_heads=heads or RELEASED_AC_PREDICTOR_HEADS[width],
            mlp_ratio=_exact_ratio(width, predictor["predictor_blocks.0.mlp.fc1.weight"].shape[0]),
            action_embed_dim=predictor["action_encoder.weight"].shape[1], use_extrinsics=use_extrinsics,
            img_size=list(encoder_config.img_size), patch_size=encoder_config.patch_size,
            qkv_bias="predictor_blocks.0.attn.qkv.bias" in predictor, layer_norm_eps=encoder_config.layer_norm_eps,
        )  # fmt: skip
    except ValueError as err:
        raise ConversionError(f"invalid AC predictor configuration: {err}") from None


def build_ac_predictor(config: VJEPA2ACPredictorConfig, state_dict: dict) -> VJEPA2ACPredictor:
    """`VJEPA2ACPredictor(config)` holding exactly `state_dict`'s tensors (Meta's names), in eval mode."""
    return build_holding(lambda: VJEPA2ACPredictor(config), state_dict, what="the AC predictor", error=ConversionError)


def _safetensors(folder: Path) -> tuple[dict, list[dict]]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    files = [folder / SAFE_WEIGHTS_NAME]
    if index.is_file():  # sharded
        files = sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    if not files[0].is_file():
        raise ConversionError(f"{folder.name} has no model.safetensors")
    state = {}
    for file in files:
        state.update(load_file(file))
    return state, [file_record(f) for f in files]


# What a `.pt` does not store, given by the caller: `sources`' read_options and the CLI's flags.
PT_OPTIONS = ("variant", "predictor_heads", "img_size", "num_frames")
# The way forward for the examples, which read released sources directly but take none of those flags.
CONVERT_FIRST = "convert such a checkpoint first (vjepa2-area-convert SOURCE OUT with those flags) and pass OUT"


def read_source(source: str | Path, *, checkpoint_key: str | None = None, probe: str | Path | None = None,
                variant: str | None = None, predictor_heads: int | None = None, img_size: int | None = None,
                num_frames: int | None = None, revision: str | None = None, with_predictor: bool = True,
                **fields) -> Source:  # fmt: skip
    """Read a released source into original key names; `fields` set config fields (area options, labels).
    `with_predictor=False` reads the encoder alone (the predictor's sizes and heads are then not needed).
    A V-JEPA 2-AC `.pt`'s action-conditioned predictor goes to `ac_predictor` (`predictor_heads` gives its
    head count where its width is not in the released table). With a probe (a `.pt` or transformers'
    classifier), `probe_out_layers` says which blocks it reads (`probe_out_layers()`; transformers'
    classifiers read the last block unless told otherwise)."""
    path = Path(source).expanduser()
    out_layers = fields.pop("probe_out_layers", None)
    if out_layers is not None and probe is None and path.is_file():
        raise ConversionError("--probe-out-layers: only with --probe (the blocks a released probe reads)")
    if probe is not None:
        probe_setting(Path(probe), out_layers)  # refused before the checkpoints are read
    if revision and path.exists():
        raise ConversionError(f"--revision: {source} is a local path, which has no revisions (they are for Hub ids)")
    if path.is_file():
        checkpoint = safe_torch_load(path)
        parts = original_parts(checkpoint, checkpoint_key)
        if not with_predictor:
            parts["predictor"], predictor_heads = {}, None
        files = [file_record(path)]
        if probe is not None:
            parts["encoder"] = {**parts["encoder"], **original_probe(safe_torch_load(probe))}
            head = parts["encoder"]
            fields = dict(num_labels=head["head.linear.weight"].shape[0], probe_depth=_depth(head, "head.pooler.blocks") + 1, **fields)
            files.append(file_record(Path(probe)))
        config = config_from_tensors(parts, path.name, variant=variant, predictor_heads=predictor_heads, img_size=img_size,
                                     num_frames=num_frames, **fields)  # fmt: skip
        if probe is not None:
            config.probe_out_layers = probe_out_layers(Path(probe), out_layers, config)
        provenance = {"format": "original", "checkpoint_key": checkpoint_key or default_checkpoint_key(checkpoint)}
        read = Source(config, parts["encoder"], parts["predictor"], parts["context_encoder"], {**provenance, "files": files})
        return _with_ac_predictor(read, predictor_heads)
    folder = resolve_folder(str(source), revision)
    return read_transformers(source, folder, read_config(folder, source), checkpoint_key=checkpoint_key, probe=probe,
                             variant=variant, predictor_heads=predictor_heads, img_size=img_size, num_frames=num_frames,
                             with_predictor=with_predictor, out_layers=out_layers, **fields)  # fmt: skip


def read_config(folder: Path, source) -> dict:
    """A folder's config.json as a dict; a missing or unreadable one is one error line naming `source`."""
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConversionError(f"{source}: cannot read config.json ({err})") from None


def read_transformers(source, folder: Path, raw: dict, *, checkpoint_key=None, probe=None, variant=None,
                      predictor_heads=None, img_size=None, num_frames=None, with_predictor: bool = True,
                      out_layers=None, **fields) -> Source:  # fmt: skip
    """A transformers V-JEPA 2 folder (`raw`: its config.json, read once by the caller) as a `Source`;
    `out_layers`: the blocks its probe reads (`probe_out_layers` of `read_source`)."""
    path = Path(str(source)).expanduser()
    if raw.get("model_type") != "vjepa2":
        raise ConversionError(f"{source}: model_type {raw.get('model_type')!r}, not transformers' 'vjepa2' "
                              "(one of our folders loads with from_pretrained, or converts with --to transformers)")  # fmt: skip
    given = [flag for flag, value in (("--checkpoint-key", checkpoint_key), ("--probe", probe), ("--img-size", img_size),
                                      ("--num-frames", num_frames), ("--predictor-heads", predictor_heads)) if value]  # fmt: skip
    if given:
        raise ConversionError(f"{', '.join(given)}: not for a transformers source (its config.json says)")
    from transformers import VJEPA2Config

    classifier = (raw.get("architectures") or [""])[0] == "VJEPA2ForVideoClassification"
    state, files = _safetensors(folder)
    parts = original_parts(state)
    if not with_predictor:
        parts["predictor"] = {}
    try:
        config = VJEPA2AreaConfig.from_transformers_config(VJEPA2Config.from_dict(raw), classifier, **fields)
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


def _with_ac_predictor(read: Source, heads: int | None) -> Source:
    """A `.pt` source with its action-conditioned predictor moved from `predictor` to `ac_predictor`."""
    if not is_ac_predictor(read.predictor):
        return read
    width = read.predictor["predictor_embed.weight"].shape[0]
    if heads is not None or width in RELEASED_AC_PREDICTOR_HEADS:
        read.ac_predictor_config = ac_predictor_config(read.predictor, read.config, heads)
    read.ac_predictor, read.predictor = read.predictor, {}
    return read


def build_model(model_class: type, config: VJEPA2AreaConfig, state_dict: dict):
    """`model_class(config)` holding exactly `state_dict`'s tensors (original names; no random init, no copy)."""
    if model_class is VJEPA2AreaForVideoClassification:  # its encoder is a submodule
        state_dict = {k if k.startswith("head.") else "encoder." + k: v for k, v in state_dict.items()}
    return build_holding(lambda: model_class(config), state_dict, error=ConversionError)
