"""The reverse direction: one of our repo folders -> transformers' V-JEPA 2 format (full attention).

transformers' `VJEPA2Model` always holds a JEPA predictor, which our repos do not carry. Its weights
come from `predictor_from` (a transformers V-JEPA 2 folder or Hub id, e.g. the one the encoder was
converted from) or are freshly initialised; the report says which. The encoder (and probe) are exact.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import init_empty_weights

from ..modeling import VJEPA2AreaForVideoClassification, VJEPA2AreaModel
from .convert import (
    REPORT_NAME,
    ConversionResult,
    VerificationError,
    _now,
    check_inputs_outside_output,
    check_output_path,
    matching_report,
    publish,
)
from .keys import hf_sections, ours_to_theirs
from .sources import (
    ConversionError,
    file_record,
    read_config_json,
    read_transformers,
    resolve_hf_folder,
    sha256_file,
    weight_files,
)
from .verify import CRITERION, DEFAULT_TOLERANCE, compare, fixed_input, full_attention_twin, ours_outputs, transformers_outputs

_PREDICTOR_FIELDS = (
    "pred_hidden_size",
    "pred_num_attention_heads",
    "pred_num_hidden_layers",
    "pred_num_mask_tokens",
    "pred_zero_init_mask_tokens",
    "pred_mlp_ratio",
)


@dataclass
class ExportOptions:
    predictor_from: str | None = None
    predictor_config: dict | None = None  # pred_* fields for a fresh predictor (transformers' defaults otherwise)
    verify: bool = True
    tolerance: float = DEFAULT_TOLERANCE
    verify_frames: int | None = None
    verify_batch: int = 1
    seed: int = 0
    revision: str | None = None  # of a Hub-id source
    predictor_revision: str | None = None  # of a Hub-id predictor_from (its own repo: None is its main)
    local_files_only: bool = False

    def fingerprint(self) -> dict:
        data = asdict(self)
        data.pop("local_files_only")
        if data["predictor_from"] and Path(data["predictor_from"]).exists():
            # Published in the report: a local folder by its name (its files' sha256 are in "predictor").
            data["predictor_from"] = Path(data["predictor_from"]).name
        return data


def load_ours(spec: str, revision: str | None = None, local_files_only: bool = False):
    """One of our repo folders (or Hub ids) as the model class its config.json names."""
    folder, _, _ = resolve_hf_folder(spec, revision, local_files_only)
    config = read_config_json(folder)
    if config.get("model_type") != "vjepa2_area":
        raise ConversionError(f"{spec}: model_type {config.get('model_type')!r}; expected one of our 'vjepa2_area' repos")
    architecture = (config.get("architectures") or ["VJEPA2AreaModel"])[0]
    cls = VJEPA2AreaForVideoClassification if architecture == "VJEPA2AreaForVideoClassification" else VJEPA2AreaModel
    model = cls.from_pretrained(str(folder), dtype="auto").eval()
    files = [file_record(p) for p in our_weight_files(folder)]
    return model, folder, files


def our_weight_files(folder: Path) -> list[Path]:
    """The weight files of one of our repo folders, in a fixed order (recorded, and compared on reuse)."""
    return sorted(folder.glob("*.safetensors"))


def check_exportable(config, classification: bool) -> None:
    """Refuse, naming each, the settings transformers' V-JEPA 2 cannot express."""
    problems = []
    if not config.use_rope:
        problems.append("use_rope=False (transformers' V-JEPA 2 has RoPE only, no pos_embed)")
    if config.rope_interleave:
        problems.append("rope_interleave=True (transformers' V-JEPA 2 uses the released tiled sin/cos)")
    if config.use_silu:
        problems.append("use_silu=True (transformers' V-JEPA 2 MLP is GELU)")
    if config.num_frames == 1:
        problems.append("an image model (num_frames=1; transformers' patch embedding is Conv3d)")
    if config.img_size[0] != config.img_size[1]:
        problems.append(f"non-square img_size {config.img_size} (transformers has one crop_size)")
    if classification and config.probe_num_heads != config.num_heads:
        problems.append(
            f"probe_num_heads={config.probe_num_heads} != num_heads={config.num_heads} (transformers' pooler uses "
            "the encoder's num_attention_heads)"
        )
    if problems:
        raise ConversionError("cannot export to transformers' V-JEPA 2: " + "; ".join(problems))


def transformers_config(config, classification: bool, predictor_fields: dict):
    """transformers' `VJEPA2Config` for our config."""
    from transformers import VJEPA2Config

    check_exportable(config, classification)
    fields = dict(
        crop_size=config.img_size[0],
        frames_per_clip=config.num_frames,
        patch_size=config.patch_size,
        tubelet_size=config.tubelet_size,
        in_chans=config.in_chans,
        hidden_size=config.embed_dim,
        num_attention_heads=config.num_heads,
        num_hidden_layers=config.depth,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
        layer_norm_eps=config.layer_norm_eps,
        drop_path_rate=config.drop_path_rate,
        initializer_range=config.init_std,
        **predictor_fields,
    )
    if classification:
        fields.update(num_pooler_layers=config.probe_depth - 1, id2label=dict(config.id2label), label2id=dict(config.label2id))
    return VJEPA2Config(**fields)


def _predictor(
    spec: str, classification: bool, options: ExportOptions, embed_dim: int, output: Path | None = None
) -> tuple[dict, dict, dict]:
    """(state dict under the target's predictor prefix, pred_* config fields, source record)."""
    source = read_transformers(spec, options.predictor_revision, options.local_files_only)
    own = "vjepa2.predictor." if source.classification else "predictor."
    target = "vjepa2.predictor." if classification else "predictor."
    state = {target + k[len(own):]: v for k, v in source.state_dict.items() if k.startswith(own)}
    if output is not None:
        check_inputs_outside_output(output, {"--predictor-from": source.folder})
    if not state:
        raise ConversionError(f"{spec} holds no predictor weights ({own}*)")
    width = source.config.get("hidden_size", 1024)
    if width != embed_dim:
        raise ConversionError(
            f"--predictor-from {spec}: its predictor reads hidden_size {width} tokens, but this encoder's embed_dim "
            f"is {embed_dim}; pass the transformers repo this encoder was converted from (or leave --predictor-from "
            "out for a freshly initialised predictor)"
        )
    fields = {k: source.config[k] for k in _PREDICTOR_FIELDS if k in source.config}
    record = {"source": source.repo_id or source.folder.name, "revision": source.revision, "files": source.files}
    record["config_sha256"] = sha256_file(source.folder / "config.json")  # its pred_* sizes come from it
    return state, fields, record


def export_to_transformers(
    source: str, output: str | Path, options: ExportOptions | None = None, *, overwrite: bool = False
) -> ConversionResult:
    """Write transformers' `VJEPA2Model` / `VJEPA2ForVideoClassification` folder for one of our repos."""
    import transformers
    from transformers import VJEPA2VideoProcessor

    from .. import __version__

    options = options or ExportOptions()
    output = Path(output).expanduser().absolute()
    check_inputs_outside_output(output, {"SOURCE": source, "--predictor-from": options.predictor_from})
    check_output_path(output, overwrite)
    ours, folder, files = load_ours(source, options.revision, options.local_files_only)
    check_inputs_outside_output(output, {"SOURCE": folder})  # a Hub id's cache folder, known only now
    config = ours.config
    classification = isinstance(ours, VJEPA2AreaForVideoClassification)
    check_exportable(config, classification)
    notes = []
    if config.area_layers:
        notes.append(
            f"area attention (blocks {config.area_layers}, splits {config.area_splits}) is not part of transformers' "
            "V-JEPA 2: the export attends globally in every block, and is verified against our full-attention model"
        )
    if classification and config.probe_layer_norm_eps != config.layer_norm_eps:
        notes.append(
            f"the probe's LayerNorm eps {config.probe_layer_norm_eps:g} becomes transformers' layer_norm_eps "
            f"{config.layer_norm_eps:g} (its pooler shares the encoder's): the verification figures measure the effect"
        )

    mapped = ours_to_theirs(ours.state_dict(), hf_sections(classification))
    if mapped.unexpected:
        raise ConversionError(f"keys with no transformers counterpart: {mapped.unexpected}")
    predictor_record = None
    predictor_fields = dict(options.predictor_config or {})
    if options.predictor_from:
        predictor_state, predictor_fields, predictor_record = _predictor(
            options.predictor_from, classification, options, config.embed_dim, output
        )
        mapped.state_dict.update(predictor_state)
    hf_config = transformers_config(config, classification, predictor_fields)
    hf_class = transformers.VJEPA2ForVideoClassification if classification else transformers.VJEPA2Model
    if predictor_record is not None:
        with init_empty_weights():
            hf_model = hf_class(hf_config)
        try:
            hf_model.load_state_dict(mapped.state_dict, strict=True, assign=True)
        except RuntimeError as err:  # e.g. a predictor of other sizes than its config.json says
            detail = " ".join(str(err).split())[:500]
            raise ConversionError(f"the weights do not fit transformers' {hf_class.__name__}: {detail}") from None
    else:
        hf_model = hf_class(hf_config)  # a freshly initialised predictor; everything else is overwritten
        result = hf_model.load_state_dict(mapped.state_dict, strict=False)
        left = [k for k in result.missing_keys if "predictor." not in k]
        if left or result.unexpected_keys:
            raise ConversionError(f"transformers model does not fit: missing {left}, unexpected {result.unexpected_keys}")
        notes.append(
            "no --predictor-from: the JEPA predictor of the exported VJEPA2Model is freshly initialised (our repos "
            "carry only the encoder); use skip_predictor=True / get_vision_features"
        )
    hf_model.eval()

    report = {
        "converter": f"hf_vjepa_area {__version__}",
        "created": _now(),
        "direction": "to transformers",
        "source": {"kind": "hf_vjepa_area", "description": Path(source).name if Path(source).exists() else source, "files": files},
        "architecture": hf_class.__name__,
        "config": json.loads(hf_config.to_json_string(use_diff=False)),
        "predictor": predictor_record,
        "keys": {"converted": len(mapped.state_dict)},
        "notes": notes,
        "options": options.fingerprint(),
        "source_sha256": [f["sha256"] for f in files],
        "inputs_sha256": export_inputs_sha256(
            [f["sha256"] for f in files], folder, predictor_record and [f["sha256"] for f in predictor_record["files"]],
            predictor_record and predictor_record["config_sha256"],
        ),
    }
    if options.verify:
        pixels = fixed_input(config, options.verify_frames, options.verify_batch, options.seed)
        reference = ours_outputs(full_attention_twin(ours) if config.area_layers else ours, pixels)
        candidate = transformers_outputs(hf_model, pixels)
        check = compare(reference, candidate, options.tolerance)
        report["verification"] = {
            "reference": "hf_vjepa_area full-attention model of the source repo",
            "candidate": f"transformers' own {hf_class.__name__} holding the exported weights",
            "input": {"shape": list(pixels.shape), "seed": options.seed, "dtype": "float32"},
            "tolerance": options.tolerance,
            "criterion": CRITERION,
            "equivalence": check,
            "passed": check["passed"],
        }
        if not check["passed"]:
            raise VerificationError(f"export verification failed: {json.dumps(check['outputs'])}")

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-", dir=output.parent))
    try:
        target = staging / output.name
        hf_model.save_pretrained(str(target))
        VJEPA2VideoProcessor(crop_size=config.img_size[0]).save_pretrained(str(target))
        (target / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        publish(target, output, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConversionResult(output, report)


def export_inputs_sha256(files: list[str], folder: Path, predictor: list[str] | None, predictor_config: str | None) -> dict:
    """sha256 of everything an export reads: our weights and config.json, the predictor's weights and config.json."""
    return {
        "files": list(files),
        "config.json": sha256_file(folder / "config.json"),
        "predictor": predictor,
        "predictor config.json": predictor_config,
    }


def existing_export(output: str | Path, source: str, options: ExportOptions) -> dict | None:
    """The report of an existing export made from the same inputs (sha256) with the same options, else None:
    what lets an interrupted `--push-to-hub` be resumed by running the same command again."""

    def inputs() -> dict:
        folder, _, _ = resolve_hf_folder(source, options.revision, options.local_files_only)
        predictor = predictor_config = None
        if options.predictor_from:
            pred_folder, _, _ = resolve_hf_folder(options.predictor_from, options.predictor_revision, options.local_files_only)
            predictor = [sha256_file(path) for path in weight_files(pred_folder)]
            predictor_config = sha256_file(pred_folder / "config.json")
        files = [sha256_file(path) for path in our_weight_files(folder)]
        return export_inputs_sha256(files, folder, predictor, predictor_config)

    return matching_report(output, options, inputs, direction="to transformers")


__all__ = ["ExportOptions", "existing_export", "export_to_transformers", "transformers_config", "check_exportable", "load_ours"]
