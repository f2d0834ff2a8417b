"""Conversion to our repo folder: read the source, build the config, check keys, write, verify, report.

Order of work, so that nothing half-done is ever visible at the output path:

1. read the source safely and map its keys onto ours (refusing missing / unexpected keys and shape
   mismatches with every offending key listed);
2. write the repo folder with `hub.save_repo_folder` into a private staging folder beside the output;
3. load it back with `from_pretrained` and compare every tensor with the source's (exact);
4. with `verify`, run the source model and the reloaded one on the same fixed input;
5. write `conversion_report.json` and the model card with the figures, then rename into place.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate import init_empty_weights

from ..modeling import VARIANTS, VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel
from .card import BASE_MODELS, build_model_card
from .infer import (
    KeyMismatchError,
    check_state_dict,
    describe_fit,
    detect_uniform_power,
    encoder_shapes,
    from_hf_config,
    infer_encoder_config,
    match_variant,
    probe_fields,
    refuse_unsupported_layouts,
)
from .keys import (
    ENCODER_RULES,
    HEAD_RULES,
    Section,
    hf_dropped_prefixes,
    hf_sections,
    original_probe_to_ours,
    ours_to_theirs,
    theirs_to_ours,
)
from .sources import (
    ConversionError,
    read_original_encoder,
    read_original_probe,
    read_transformers,
    resolve_hf_folder,
    sha256_file,
    source_kind,
    weight_files,
)
from .verify import CRITERION, DEFAULT_TOLERANCE, compare, fixed_input, full_attention_twin, ours_outputs, transformers_outputs

REPORT_NAME = "conversion_report.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class VerificationError(ConversionError):
    """The converted model's outputs differ from the source's by more than the tolerance."""


@dataclass
class ConvertOptions:
    """Everything that shapes a conversion (the CLI flags, one to one)."""

    checkpoint_key: str | None = None  # .pt: None -> "target_encoder" (what Meta's hub loader reads)
    probe: str | None = None  # .pt probe checkpoint, converted together with the encoder
    probe_index: int = 0
    probe_num_heads: int = 16
    labels: str | None = None  # class names for a classifier: .json (list or {id: name}) or .txt (one a line)
    variant: str | None = None  # None: inferred from shapes; "custom": sizes from shapes, heads from num_heads
    num_heads: int | None = None
    img_size: int | None = None
    num_frames: int | None = None
    use_rope: bool | None = None  # None: RoPE unless the checkpoint carries a pos_embed
    area_splits: list[int] | None = None  # None: full attention in every block
    area_layers: str | list[int] | None = None
    dtype: str = "keep"
    verify: bool = False
    tolerance: float = DEFAULT_TOLERANCE
    verify_frames: int | None = None
    verify_batch: int = 1
    seed: int = 0
    revision: str | None = None  # revision of a Hub-id source
    local_files_only: bool = False
    license: str = "mit"
    base_model: str | None = None
    repo_id: str | None = None  # shown in the model card's snippets (the push target)

    def fingerprint(self) -> dict:
        """The options that determine the output folder (compared when a push is resumed)."""
        data = asdict(self)
        data.pop("local_files_only")
        for name in ("probe", "labels"):  # published in the report: base names only (contents: inputs_sha256)
            if data[name]:
                data[name] = Path(data[name]).name
        if data["area_splits"] is not None:
            data["area_splits"] = list(data["area_splits"])
        return data


@dataclass
class Prepared:
    """A source read and mapped onto our keys, with what is needed to rebuild and check it."""

    model_class: type
    fields: dict
    variant: str
    state_dict: dict[str, torch.Tensor]
    source: dict
    dropped: list[str]
    unused_entries: list[str]
    notes: list[str]
    reference_name: str
    build_reference: Callable[[], tuple[torch.nn.Module, Callable]]
    fit_hint: str | None = None
    base_model: str | None = None
    probe: dict | None = None
    local_folder: Path | None = None  # where a transformers source was read from (never reported: a local path)


@dataclass
class ConversionResult:
    output: Path
    report: dict


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


_FLAG_NAMES = {"use_rope": ("--rope", "--no-rope")}


def _refuse(options: ConvertOptions, names: tuple[str, ...], why: str) -> None:
    """Refuse options that were set (not None): False is a setting too (--no-rope), never ignored."""
    given = [n for n in names if getattr(options, n) is not None]
    if given:
        flags = ", ".join(
            _FLAG_NAMES[n][0 if getattr(options, n) else 1] if n in _FLAG_NAMES else "--" + n.replace("_", "-") for n in given
        )
        raise ConversionError(f"{flags}: not applicable {why}")


def _our_model_reference(model_class, fields, state_dict):
    def build():
        config = VJEPA2AreaConfig(**fields)
        model = _build_model(model_class, config, {k: v.float() for k, v in state_dict.items()})
        return model, ours_outputs

    return build


def _transformers_reference(model_class, fields, state_dict):
    """transformers' V-JEPA 2 modules holding the original tensors, or None where they cannot express the model.

    An implementation independent of ours: the encoder is transformers' `VJEPA2Encoder`; a probe is its
    `VJEPA2AttentivePooler` (configured with the probe's own heads and LayerNorm eps) + a Linear. The
    tensors reach it through the same key table as transformers sources, so a wrong mapping or a
    numerical difference between the implementations shows up. Both sides share the inferred config:
    what the weights do not store (the number of heads) comes from the variant table for both.
    """
    if not fields["use_rope"] or fields.get("use_silu") or fields.get("num_frames", 2) == 1:
        return None
    from transformers import VJEPA2Config
    from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2AttentivePooler, VJEPA2Encoder

    classification = model_class is VJEPA2AreaForVideoClassification
    prefix = "encoder." if classification else ""

    def build():
        config = VJEPA2Config(
            crop_size=fields["img_size"], frames_per_clip=fields["num_frames"], patch_size=fields["patch_size"],
            tubelet_size=fields["tubelet_size"], in_chans=fields["in_chans"], hidden_size=fields["embed_dim"],
            num_attention_heads=fields["num_heads"], num_hidden_layers=fields["depth"], mlp_ratio=fields["mlp_ratio"],
            qkv_bias=fields["qkv_bias"], layer_norm_eps=fields["layer_norm_eps"],
        )
        config._attn_implementation = "sdpa"
        encoder_state = {k[len(prefix):]: v.float() for k, v in state_dict.items() if k.startswith(prefix) and not k.startswith("head.")}
        with init_empty_weights():
            modules = torch.nn.ModuleDict({"encoder": VJEPA2Encoder(config)})
        theirs = ours_to_theirs(encoder_state, (Section(ENCODER_RULES, "", "encoder."),)).state_dict
        if classification:
            probe_config = VJEPA2Config(
                hidden_size=fields["embed_dim"], num_attention_heads=fields["probe_num_heads"],
                layer_norm_eps=fields["probe_layer_norm_eps"], num_pooler_layers=fields["probe_depth"] - 1,
            )
            probe_config._attn_implementation = "sdpa"
            with init_empty_weights():
                modules["pooler"] = VJEPA2AttentivePooler(probe_config)
                modules["classifier"] = torch.nn.Linear(fields["embed_dim"], fields["num_labels"])
            head_state = {k: v.float() for k, v in state_dict.items() if k.startswith("head.")}
            theirs.update(ours_to_theirs(head_state, (Section(HEAD_RULES),)).state_dict)
        modules.load_state_dict(theirs, strict=True, assign=True)
        return modules.eval(), _run_transformers_modules

    return build


@torch.no_grad()
def _run_transformers_modules(modules, pixels):
    tokens = modules["encoder"](pixels).last_hidden_state
    outputs = {"last_hidden_state": tokens}
    if "pooler" in modules:
        outputs["logits"] = modules["classifier"](modules["pooler"](tokens))
    return outputs


def prepare_pt(source: str, options: ConvertOptions) -> Prepared:
    """Meta's encoder `.pt` (+ optional probe `.pt`): prefix stripping, shapes -> config."""
    encoder = read_original_encoder(source, options.checkpoint_key)
    refuse_unsupported_layouts(encoder.state_dict)
    state = dict(encoder.state_dict)
    notes = list(encoder.notes)
    probe = read_original_probe(options.probe, options.probe_index) if options.probe else None
    num_frames = options.num_frames
    if num_frames is None and probe is not None and probe.frames_hint and "pos_embed" not in state:
        num_frames = probe.frames_hint
        notes.append(f"num_frames {num_frames} from the probe's file name ({probe.file['name']})")
    inferred = infer_encoder_config(
        state,
        variant=options.variant,
        num_heads=options.num_heads,
        img_size=options.img_size,
        num_frames=num_frames,
        use_rope=options.use_rope,
        name_hint=Path(source).name,
    )
    fields = dict(inferred.fields)
    notes += inferred.notes
    dropped = []
    if fields["use_rope"] and "pos_embed" in state:
        dropped.append("pos_embed")
        del state["pos_embed"]
    if not fields["use_rope"]:
        config = VJEPA2AreaConfig(**fields)
        grid = config.grid_size if config.num_frames > 1 else config.grid_size[1:]
        uniform, diff = detect_uniform_power(state["pos_embed"], config.embed_dim, grid)
        fields["uniform_power"] = bool(uniform)
        notes.append(
            f"pos_embed is the sincos table with uniform_power={uniform}"
            if uniform is not None
            else f"pos_embed matches no sincos table (closest max diff {diff:.3g}); stored as is"
        )
    shapes = encoder_shapes(state)
    model_class = VJEPA2AreaModel
    probe_info = None
    if probe is not None:
        mapped = original_probe_to_ours(probe.state_dict)
        if mapped.unexpected:
            raise KeyMismatchError(
                f"{probe.file['name']}: keys outside pooler.* / linear.* ({len(mapped.unexpected)}):\n    "
                + "\n    ".join(mapped.unexpected)
            )
        fields.update(probe_fields(mapped.state_dict, shapes.embed_dim, options.probe_num_heads))
        fields["probe_layer_norm_eps"] = 1e-5  # the released AttentiveClassifier's LayerNorm
        state = {"encoder." + k: v for k, v in state.items()}
        state.update(mapped.state_dict)
        model_class = VJEPA2AreaForVideoClassification
        probe_info = {
            "file": probe.file,
            "index": probe.index,
            "classifiers_in_file": probe.num_classifiers,
            "num_labels": fields["num_labels"],
            "probe_depth": fields["probe_depth"],
            "probe_num_heads": fields["probe_num_heads"],
        }
    files = [encoder.file] + ([probe.file] if probe is not None else [])
    reference = _transformers_reference(model_class, fields, state)
    if reference is not None:
        reference_name = (
            "transformers' V-JEPA 2 implementation (VJEPA2Encoder"
            + (", and VJEPA2AttentivePooler + Linear with the probe's heads and eps" if probe is not None else "")
            + ") holding the original tensors"
        )
    else:
        reference = _our_model_reference(model_class, dict(fields), state)
        reference_name = (
            "hf_vjepa_area's full-attention implementation holding the original tensors (transformers' V-JEPA 2 "
            "cannot express this model: no RoPE, SwiGLU or image-only); this checks the written folder, not the numerics"
        )
    return Prepared(
        model_class=model_class,
        fields=fields,
        variant=inferred.variant,
        state_dict=state,
        source={
            "kind": "meta-pt",
            "description": f"`{encoder.file['name']}`, entry `{encoder.checkpoint_key or '(bare state dict)'}`"
            + (f" + probe `{probe.file['name']}` classifiers[{probe.index}]" if probe else ""),
            "checkpoint_key": encoder.checkpoint_key,
            "files": files,
        },
        dropped=dropped,
        unused_entries=encoder.unused_entries,
        notes=notes,
        reference_name=reference_name,
        build_reference=reference,
        fit_hint=describe_fit(shapes),
        base_model=BASE_MODELS.get((inferred.variant, fields["img_size"])),
        probe=probe_info,
    )


def _check_variant_against_config(variant: str, fields: dict, found: str | None) -> None:
    """--variant only checks a transformers source: its config.json states every size, and the variant
    table replacing it would silently change the model (e.g. its number of heads)."""
    if variant not in VARIANTS:
        raise ConversionError(f"unknown variant {variant!r}: choose one of {sorted(VARIANTS)} or 'custom'")
    spec = VARIANTS[variant]
    compared = (
        ("hidden_size (embed_dim)", fields["embed_dim"], spec["embed_dim"]),
        ("num_hidden_layers (depth)", fields["depth"], spec["depth"]),
        ("num_attention_heads", fields["num_heads"], spec["num_heads"]),
        ("MLP width", int(fields["embed_dim"] * fields["mlp_ratio"]), int(spec["embed_dim"] * spec["mlp_ratio"])),
    )
    problems = [f"{name}: source {have}, variant {variant!r} {want}" for name, have, want in compared if have != want]
    if problems:
        fit = f"it is variant {found!r}" if found else "it is no named variant"
        raise KeyMismatchError(
            f"the source's config.json does not match --variant {variant}:\n  " + "\n  ".join(problems)
            + f"\n{fit}; drop --variant (a transformers source's config.json gives every size)"
        )


def prepare_transformers(source: str, options: ConvertOptions) -> Prepared:
    """A transformers `VJEPA2Model` / `VJEPA2ForVideoClassification` folder or Hub id."""
    _refuse(options, ("checkpoint_key", "probe", "num_heads", "use_rope"), "to transformers sources (config.json says)")
    hf = read_transformers(source, options.revision, options.local_files_only)
    fields, notes = from_hf_config(hf.config, hf.classification)
    if options.img_size is not None and options.img_size != fields["img_size"]:
        raise ConversionError(
            f"--img-size {options.img_size}: the source's crop_size is {fields['img_size']} (transformers derives RoPE "
            "positions from it); drop --img-size"
        )
    if options.num_frames is not None:
        fields["num_frames"] = options.num_frames
    classification = hf.classification
    mapped = theirs_to_ours(hf.state_dict, hf_sections(classification), hf_dropped_prefixes(classification))
    if mapped.unexpected or mapped.missing:
        parts = []
        if mapped.missing:
            parts.append(f"missing keys ({len(mapped.missing)}):\n    " + "\n    ".join(sorted(mapped.missing)))
        if mapped.unexpected:
            parts.append(f"unexpected keys ({len(mapped.unexpected)}):\n    " + "\n    ".join(sorted(mapped.unexpected)))
        raise KeyMismatchError(f"{source}: keys that do not map onto V-JEPA 2:\n  " + "\n  ".join(parts))
    prefix = "encoder." if classification else ""
    shapes = encoder_shapes(mapped.state_dict, prefix)
    found = match_variant(fields["embed_dim"], fields["depth"], int(fields["embed_dim"] * fields["mlp_ratio"]))
    if found and VARIANTS[found]["num_heads"] != fields["num_heads"]:
        found = None  # same sizes, other heads: not that variant (the name would mislabel the repo)
    variant = found or "custom"
    if options.variant not in (None, "custom"):
        _check_variant_against_config(options.variant, fields, found)
        variant = options.variant
    model_class = VJEPA2AreaForVideoClassification if classification else VJEPA2AreaModel

    def build_reference():
        import transformers

        cls = getattr(transformers, hf.architecture)
        model = cls.from_pretrained(str(hf.folder), dtype=torch.float32, attn_implementation="sdpa").eval()
        return model, transformers_outputs

    name = hf.repo_id or hf.folder.name
    img = fields["img_size"]
    return Prepared(
        model_class=model_class,
        fields=fields,
        variant=variant,
        state_dict=mapped.state_dict,
        source={
            "kind": "transformers",
            "description": f"transformers `{hf.architecture}` "
            + (f"`{hf.repo_id}` (revision {hf.revision})" if hf.repo_id else f"from a local folder `{hf.folder.name}`"),
            "architecture": hf.architecture,
            "repo_id": hf.repo_id,
            "revision": hf.revision,
            "files": hf.files,
        },
        dropped=sorted(mapped.dropped),
        unused_entries=[],
        notes=notes,
        reference_name=f"transformers' own `{hf.architecture}` (sdpa attention) loaded from {name}",
        build_reference=build_reference,
        fit_hint=describe_fit(shapes),
        base_model=hf.repo_id or BASE_MODELS.get((variant, img)),
        local_folder=hf.folder,
    )


def prepare(source: str, options: ConvertOptions) -> Prepared:
    kind = source_kind(source)
    if kind == "pt":
        return prepare_pt(source, options)
    if kind == "transformers":
        return prepare_transformers(source, options)
    raise ConversionError(f"{source} is already one of our repo folders: use --to transformers to export it")


def _inputs_sha256(files: list[str], folder: Path | None, labels: str | None) -> dict:
    """sha256 of everything a conversion reads: the weight files, a transformers source's config.json
    (every size and label comes from it) and the --labels file."""
    return {
        "files": list(files),
        "config.json": sha256_file(folder / "config.json") if folder is not None else None,
        "labels": sha256_file(labels) if labels else None,
    }


def source_fingerprint(source: str, options: ConvertOptions) -> dict:
    """sha256 of the files a conversion reads (to tell whether an existing output came from them)."""
    kind = source_kind(source)
    if kind == "pt":
        files = [sha256_file(source)] + ([sha256_file(options.probe)] if options.probe else [])
        return _inputs_sha256(files, None, options.labels)
    folder, _, _ = resolve_hf_folder(source, options.revision, options.local_files_only)
    files = [sha256_file(path) for path in weight_files(folder)]  # the files read_transformers records
    return _inputs_sha256(files, folder, options.labels)


# ----------------------------------------------------------------------------------------------
# Building and writing
# ----------------------------------------------------------------------------------------------


def _build_model(model_class, config, state_dict, fit_hint=None):
    """The model holding exactly `state_dict`'s tensors (no random init, no copy)."""
    with init_empty_weights():
        model = model_class(config)
    check_state_dict(model, state_dict, fit_hint)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def load_labels(path: str, num_labels: int) -> dict[int, str]:
    """Class names from a .json list / {id: name} mapping, or a text file with one name a line."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        data = json.loads(text)
        names = dict(enumerate(data)) if isinstance(data, list) else {int(k): v for k, v in data.items()}
    else:
        names = dict(enumerate(line.strip() for line in text.splitlines() if line.strip()))
    if sorted(names) != list(range(num_labels)):
        raise ConversionError(f"--labels {path}: {len(names)} names for ids {min(names, default=None)}..{max(names, default=None)}, "
                              f"but the classifier has {num_labels} classes (ids 0..{num_labels - 1})")
    return {i: str(names[i]) for i in range(num_labels)}


def _make_config(fields: dict, options: ConvertOptions, classification: bool) -> VJEPA2AreaConfig:
    if options.labels:
        if not classification:
            raise ConversionError("--labels: only for classifiers (a probe, or VJEPA2ForVideoClassification)")
        id2label = load_labels(options.labels, fields.get("num_labels") or len(fields["id2label"]))
        fields = {**fields, "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
        fields.pop("num_labels", None)
    try:
        return VJEPA2AreaConfig(**fields, area_splits=options.area_splits, area_layers=options.area_layers)
    except ValueError as err:
        raise ConversionError(f"invalid configuration: {err}") from None


def _cast(state_dict: dict, dtype: str) -> dict:
    if dtype == "keep":
        return state_dict
    if dtype not in DTYPES:
        raise ConversionError(f"--dtype must be one of keep, {', '.join(DTYPES)}; got {dtype!r}")
    return {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state_dict.items()}


def _group(keys: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        head = ".".join(parts[:2]) if parts[0] == "vjepa2" else parts[0]
        counts[head] = counts.get(head, 0) + 1
    return [head if head in keys else f"{head}.* ({n})" for head, n in sorted(counts.items())]


def check_output_path(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ConversionError(f"{output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ConversionError(f"{output} already exists and is not empty: pass --overwrite to replace it")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_inputs_outside_output(output: Path, inputs: dict[str, str | Path | None]) -> None:
    """Refuse an OUTPUT that holds one of the inputs, or is the working directory or one of its parents.

    Replacing OUTPUT (`--overwrite`) removes everything in it: a source inside it would be deleted
    before (or while) it is read. `inputs` maps a flag name to a local path; Hub ids (no such path
    here) and None are skipped. Both the given and the symlink-resolved paths are compared.
    """
    out = Path(os.path.abspath(Path(output).expanduser()))  # abspath: `o/../x` is not inside `o`
    outs = {out, out.resolve()}
    cwd = Path.cwd().resolve()
    if any(_inside(cwd, o) for o in outs):
        raise ConversionError(
            f"OUTPUT {output} is the current directory or one of its parents: it is replaced as a whole, which "
            "would delete the files in it; choose a new folder, e.g. out/NAME"
        )
    for flag, spec in inputs.items():
        if spec is None or spec == "":
            continue
        path = Path(spec).expanduser()
        if not path.exists():
            continue  # a Hub id: resolved (to the cache) later and checked again then
        if any(_inside(p, o) for p in (Path(os.path.abspath(path)), path.resolve()) for o in outs):
            raise ConversionError(
                f"{flag} {spec} is inside OUTPUT {output} (or is OUTPUT itself): writing OUTPUT replaces that folder "
                "and would delete it; write to another folder, or move the input out of OUTPUT first"
            )


def publish(staged: Path, output: Path, overwrite: bool) -> None:
    """Rename a finished folder into place; an existing output is replaced only with `overwrite`."""
    from ..hub import move_into_place

    check_output_path(output, overwrite)
    move_into_place(staged, output)


def _weights_roundtrip(model, reloaded) -> dict:
    """Every tensor of the reloaded folder equals the converted one (names, dtypes, values)."""
    ours, theirs = model.state_dict(), reloaded.state_dict()
    problems = sorted(set(ours) ^ set(theirs))
    for key in sorted(set(ours) & set(theirs)):
        a, b = ours[key], theirs[key]
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            problems.append(key)
    if problems:
        raise ConversionError(
            f"the written folder does not load back identically ({len(problems)} tensors differ): {problems[:10]}"
        )
    return {"tensors": len(ours), "identical": True, "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in ours.values()})}


def _verify(prepared: Prepared, reloaded, config, options: ConvertOptions) -> dict:
    pixels = fixed_input(config, options.verify_frames, options.verify_batch, options.seed)
    reference_model, run_reference = prepared.build_reference()
    reference = run_reference(reference_model, pixels)
    del reference_model
    area = bool(config.area_layers)
    full = full_attention_twin(reloaded) if area else reloaded
    result = {
        "reference": prepared.reference_name,
        "candidate": "the written folder loaded back with from_pretrained"
        + (" as a full-attention model (same weights, area_splits=None)" if area else ""),
        "input": {"shape": list(pixels.shape), "seed": options.seed, "dtype": "float32", "distribution": "standard normal"},
        "tolerance": options.tolerance,
        "criterion": CRITERION,
        "equivalence": compare(reference, ours_outputs(full, pixels), options.tolerance),
        "area_deviation": None,
    }
    if options.dtype not in ("keep", "float32"):
        result["note"] = f"weights were written in {options.dtype}: the comparison includes that rounding"
    if area:
        result["area_deviation"] = compare(reference, ours_outputs(reloaded, pixels), None)
        result["area_deviation"]["note"] = (
            "information, not a pass/fail: the converted model as configured (area attention in blocks "
            f"{config.area_layers}, splits {config.area_splits}) attends differently from the full-attention source"
        )
    result["passed"] = result["equivalence"]["passed"]
    return result


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def convert(source: str, output: str | Path, options: ConvertOptions | None = None, *, overwrite: bool = False) -> ConversionResult:
    """Convert `source` (Meta `.pt`, transformers folder or Hub id) into our repo folder at `output`."""
    from .. import __version__
    from ..hub import save_repo_folder

    options = options or ConvertOptions()
    output = Path(output).expanduser().absolute()
    check_inputs_outside_output(output, {"SOURCE": source, "--probe": options.probe, "--labels": options.labels})
    check_output_path(output, overwrite)
    prepared = prepare(source, options)
    # A Hub id resolves to a folder of the local cache only now (nothing has been written yet).
    check_inputs_outside_output(output, {"SOURCE": prepared.local_folder})
    config = _make_config(prepared.fields, options, prepared.model_class is VJEPA2AreaForVideoClassification)
    state = _cast(prepared.state_dict, options.dtype)
    model = _build_model(prepared.model_class, config, state, prepared.fit_hint)

    area = bool(config.area_layers)
    report = {
        "converter": f"hf_vjepa_area {__version__}",
        "created": _now(),
        "direction": "to hf_vjepa_area",
        "source": prepared.source,
        "probe": prepared.probe,
        "architecture": prepared.model_class.__name__,
        "variant": prepared.variant,
        "config": json.loads(config.to_json_string(use_diff=False)),
        "attention": "area" if area else "full",
        "keys": {
            "converted": len(state),
            "dropped": prepared.dropped,
            "dropped_count": len(prepared.dropped),
            "dropped_groups": _group(prepared.dropped),
            "unused_checkpoint_entries": prepared.unused_entries,
            "missing": [],
            "unexpected": [],
        },
        "notes": prepared.notes,
        "options": options.fingerprint(),
        "source_sha256": [f["sha256"] for f in prepared.source["files"]],
    }
    report["inputs_sha256"] = _inputs_sha256(report["source_sha256"], prepared.local_folder, options.labels)
    metadata = {
        "converter": report["converter"],
        "source_format": prepared.source["kind"],
        "source": ",".join(f["name"] for f in prepared.source["files"]),
        "source_sha256": ",".join(report["source_sha256"]),
    }
    if prepared.source.get("checkpoint_key"):
        metadata["checkpoint_key"] = prepared.source["checkpoint_key"]
    if prepared.source.get("repo_id"):
        metadata["source_repo"] = prepared.source["repo_id"]
        metadata["source_revision"] = str(prepared.source.get("revision"))

    base_model = options.base_model or prepared.base_model
    repo_id = options.repo_id or _default_repo_id(prepared.variant, area, config)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-", dir=output.parent))
    try:
        folder = staging / output.name
        report["weights_roundtrip"] = {"tensors": len(state), "identical": None}
        save_repo_folder(
            model,
            folder,
            model_card=build_model_card(report, repo_id, options.license, base_model),
            safetensors_metadata=metadata,
        )
        reloaded = prepared.model_class.from_pretrained(str(folder), dtype="auto").eval()
        report["weights_roundtrip"] = _weights_roundtrip(model, reloaded)
        del model
        if options.verify:
            report["verification"] = _verify(prepared, reloaded, config, options)
        del reloaded
        (folder / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        (folder / "README.md").write_text(build_model_card(report, repo_id, options.license, base_model))
        if options.verify and not report["verification"]["passed"]:
            failed = output.parent / f"{output.name}.failed-{REPORT_NAME}"
            failed.write_text(json.dumps(report, indent=2) + "\n")
            worst = {
                name: entry.get("max_abs_diff") for name, entry in report["verification"]["equivalence"]["outputs"].items()
            }
            raise VerificationError(
                f"verification failed: max abs diff {worst} exceeds the tolerance {options.tolerance:g} ({CRITERION}); nothing was "
                f"written to {output}; the report is in {failed}"
            )
        publish(folder, output, overwrite)
        # A report of an earlier failed attempt at this output no longer describes it.
        (output.parent / f"{output.name}.failed-{REPORT_NAME}").unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConversionResult(output, report)


def _default_repo_id(variant: str, area: bool, config) -> str | None:
    if variant == "custom":
        return None
    try:
        from ..hub import repo_id_for

        return repo_id_for(variant, area, config.img_size[0] if config.img_size[0] == config.img_size[1] else config.img_size)
    except (ImportError, ValueError, KeyError):
        return None


def matching_report(output: str | Path, options, inputs_sha256: Callable[[], dict],
                    direction: str | None = None) -> dict | None:
    """The report in OUTPUT when it was made with the same options (and direction) from the same inputs
    (sha256), else None: what lets a rerun reuse the folder, e.g. to resume an interrupted push.
    `inputs_sha256` is called only once the options match (hashing big weight files is the slow part)."""
    try:
        report = json.loads((Path(output) / REPORT_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if direction is not None and report.get("direction") != direction:
        return None
    if report.get("options") != json.loads(json.dumps(options.fingerprint())):
        return None
    return report if report.get("inputs_sha256") == inputs_sha256() else None


def existing_conversion(output: Path, source: str, options: ConvertOptions) -> dict | None:
    """The report of an existing output made from the same inputs (weights, config.json, labels: sha256)
    with the same options, else None."""
    return matching_report(output, options, lambda: source_fingerprint(source, options))


__all__ = [
    "ConvertOptions",
    "ConversionResult",
    "VerificationError",
    "REPORT_NAME",
    "prepare",
    "prepare_pt",
    "prepare_transformers",
    "convert",
    "check_output_path",
    "check_inputs_outside_output",
    "publish",
    "existing_conversion",
    "matching_report",
    "source_fingerprint",
]
