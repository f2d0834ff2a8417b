"""Meta `.pt` sources: conversion, verification, area options, probes, non-RoPE encoders, refusals."""

import importlib
import json

import pytest
import torch
from safetensors import safe_open

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel
from hf_vjepa_area.conversion import ConversionError, ConvertOptions, convert
from hf_vjepa_area.conversion.infer import KeyMismatchError, infer_encoder_config

from .conftest import TINY, original_checkpoint, randomize

TINY_FLAGS = dict(num_heads=2, img_size=32, num_frames=4)


def _pixels(seed=5, frames=4):
    return torch.randn(2, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_target_encoder_by_default_and_exact(tmp_path, original_pt, tiny_encoder):
    result = convert(str(original_pt), tmp_path / "out", ConvertOptions(verify=True, **TINY_FLAGS))
    out = tmp_path / "out"
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["source"]["checkpoint_key"] == "target_encoder"
    assert report["variant"] == "custom" and report["attention"] == "full"
    assert report["weights_roundtrip"]["identical"] is True
    check = report["verification"]["equivalence"]["outputs"]["last_hidden_state"]
    assert report["verification"]["reference"].startswith("transformers' V-JEPA 2 implementation (VJEPA2Encoder)")
    assert report["verification"]["passed"] and check["max_abs_diff"] < 1e-5
    assert report["verification"]["area_deviation"] is None
    assert {"encoder", "predictor", "opt", "epoch"} <= set(report["keys"]["unused_checkpoint_entries"])
    assert result.report["source_sha256"] == [report["source"]["files"][0]["sha256"]]

    # The written weights are target_encoder's, under the original names, with provenance metadata.
    with safe_open(out / "model.safetensors", "pt") as handle:
        meta = handle.metadata()
        assert sorted(handle.keys()) == sorted(tiny_encoder.state_dict())
        norm = handle.get_tensor("norm.weight")
    assert torch.equal(norm, tiny_encoder.state_dict()["norm.weight"] + 0.25)
    assert meta["source"] == original_pt.name and meta["source_sha256"] == report["source_sha256"][0]
    assert meta["checkpoint_key"] == "target_encoder"

    # What a user loads behaves as the source model on fresh input (not the verification one).
    loaded = VJEPA2AreaModel.from_pretrained(out).eval()
    reference = VJEPA2AreaModel(VJEPA2AreaConfig(**TINY)).eval()
    reference.load_state_dict({k: v + 0.25 for k, v in tiny_encoder.state_dict().items()})
    with torch.no_grad():
        assert torch.equal(loaded(_pixels()).last_hidden_state, reference(_pixels()).last_hidden_state)

    card = (out / "README.md").read_text()
    assert "license: mit" in card and "timm.create_model" in card and "trust_remote_code=True" in card
    assert "| source vs converted (full attention) | `last_hidden_state` |" in card
    for name in ("config.json", "modeling_vjepa2_area.py", "configuration_vjepa2_area.py"):
        assert (out / name).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_converted_folder_loads_in_timm_and_with_remote_code(tmp_path, original_pt):
    import timm
    from transformers import AutoModel

    convert(str(original_pt), tmp_path / "out", ConvertOptions(area_splits=[2, 2, 1], **TINY_FLAGS))
    ours = VJEPA2AreaModel.from_pretrained(tmp_path / "out").eval()
    via_timm = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True).eval()
    via_auto = AutoModel.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    pixels = _pixels()
    with torch.no_grad():
        expected = ours(pixels).last_hidden_state
        assert torch.equal(via_timm.forward_features(pixels.transpose(1, 2)), expected)
        assert torch.equal(via_auto(pixels).last_hidden_state, expected)


def test_encoder_entry_on_request(tmp_path, original_pt, tiny_encoder):
    convert(str(original_pt), tmp_path / "out", ConvertOptions(checkpoint_key="encoder", **TINY_FLAGS))
    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as handle:
        assert torch.equal(handle.get_tensor("norm.weight"), tiny_encoder.state_dict()["norm.weight"])
        assert handle.metadata()["checkpoint_key"] == "encoder"


def test_area_options_are_written_and_reported_honestly(tmp_path, original_pt):
    options = ConvertOptions(verify=True, area_splits=[2, 2, 1], area_layers=[0], **TINY_FLAGS)
    report = convert(str(original_pt), tmp_path / "area", options).report
    config = json.loads((tmp_path / "area" / "config.json").read_text())
    assert config["area_splits"] == [2, 2, 1] and config["area_layers"] == [0]
    verification = report["verification"]
    assert verification["passed"]
    assert verification["equivalence"]["outputs"]["last_hidden_state"]["max_abs_diff"] < 1e-5
    deviation = verification["area_deviation"]["outputs"]["last_hidden_state"]
    assert deviation["max_abs_diff"] > 0 and "passed" not in deviation  # information, not a failure
    card = (tmp_path / "area" / "README.md").read_text()
    assert "area-attention" in card and "not a conversion error" in card


def test_probe_with_its_encoder(tmp_path, classifier_encoder_pt, probe_pt, tiny_classifier):
    options = ConvertOptions(verify=True, probe=str(probe_pt), probe_num_heads=2, checkpoint_key="encoder", **TINY_FLAGS)
    report = convert(str(classifier_encoder_pt), tmp_path / "cls", options).report
    assert report["architecture"] == "VJEPA2AreaForVideoClassification"
    assert report["probe"]["num_labels"] == 5 and report["probe"]["probe_depth"] == 2
    assert set(report["verification"]["equivalence"]["outputs"]) == {"last_hidden_state", "logits"}
    assert "VJEPA2AttentivePooler" in report["verification"]["reference"] and report["verification"]["passed"]
    loaded = VJEPA2AreaForVideoClassification.from_pretrained(tmp_path / "cls").eval()
    with torch.no_grad():
        assert torch.equal(loaded(_pixels()).logits, tiny_classifier(_pixels()).logits)


def test_probe_class_names(tmp_path, classifier_encoder_pt, probe_pt):
    names = tmp_path / "ssv2-classes.txt"
    names.write_text("\n".join(f"Pushing thing {i}" for i in range(5)) + "\n")
    options = ConvertOptions(probe=str(probe_pt), probe_num_heads=2, labels=str(names), **TINY_FLAGS)
    convert(str(classifier_encoder_pt), tmp_path / "cls", options)
    config = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert config["id2label"]["4"] == "Pushing thing 4" and config["label2id"]["Pushing thing 0"] == 0
    (tmp_path / "three.json").write_text(json.dumps(["a", "b", "c"]))
    with pytest.raises(ConversionError, match="5 classes"):
        convert(str(classifier_encoder_pt), tmp_path / "x", ConvertOptions(
            probe=str(probe_pt), probe_num_heads=2, labels=str(tmp_path / "three.json"), **TINY_FLAGS))
    with pytest.raises(ConversionError, match="only for classifiers"):
        convert(str(classifier_encoder_pt), tmp_path / "y", ConvertOptions(labels=str(names), **TINY_FLAGS))


def test_probe_frames_hint_sets_num_frames(tmp_path, original_pt, probe_pt):
    # The probe is for another encoder (the target_encoder values differ), but shapes fit; num_frames
    # comes from the probe's file name "...-4x2x3.pt" when --num-frames is not given.
    options = ConvertOptions(probe=str(probe_pt), probe_num_heads=2, num_heads=2, img_size=32)
    report = convert(str(original_pt), tmp_path / "cls", options).report
    assert report["config"]["num_frames"] == 4
    assert any("probe's file name" in n for n in report["notes"])


def test_non_rope_encoder_keeps_its_pos_embed(tmp_path):
    torch.manual_seed(0)
    model = VJEPA2AreaModel(VJEPA2AreaConfig(**TINY, use_rope=False, uniform_power=True))
    table = model.pos_embed.clone()  # the frozen sincos table (V-JEPA 1 style)
    sd = randomize(model, 7).state_dict()
    sd["pos_embed"] = table
    path = tmp_path / "vjepa1-tiny.pt"
    torch.save(original_checkpoint(sd, prefix="module."), path)
    options = ConvertOptions(verify=True, checkpoint_key="encoder", num_heads=2, img_size=32)
    report = convert(str(path), tmp_path / "out", options).report
    config = report["config"]
    assert config["use_rope"] is False and config["num_frames"] == 4 and config["uniform_power"] is True
    assert report["verification"]["passed"]
    assert report["verification"]["reference"].startswith("hf_vjepa_area's full-attention implementation")
    loaded = VJEPA2AreaModel.from_pretrained(tmp_path / "out")
    assert torch.equal(loaded.pos_embed, table)


def test_wrong_variant_names_the_key_both_shapes_and_the_fit(original_pt):
    with pytest.raises(KeyMismatchError) as err:
        convert(str(original_pt), "/nonexistent-never-written", ConvertOptions(variant="large", **TINY_FLAGS))
    message = str(err.value)
    assert "patch_embed.proj.weight" in message and "[128, 3, 2, 16, 16]" in message and "[1024, 3, 2, 16, 16]" in message
    assert "--variant custom --num-heads" in message


def _meta_state(variant_dims, depth, mlp_hidden):
    """Real-size shapes without memory: meta tensors."""
    dim = variant_dims
    sd = {"patch_embed.proj.weight": torch.empty(dim, 3, 2, 16, 16, device="meta"), "norm.weight": torch.empty(dim, device="meta")}
    for i in range(depth):
        sd[f"blocks.{i}.mlp.fc1.weight"] = torch.empty(mlp_hidden, dim, device="meta")
        sd[f"blocks.{i}.attn.qkv.bias"] = torch.empty(3 * dim, device="meta")
    return sd


def test_released_sizes_are_inferred_from_shapes():
    large = infer_encoder_config(_meta_state(1024, 24, 4096))
    assert large.variant == "large" and large.fields["num_heads"] == 16 and large.fields["img_size"] == 256
    giant = infer_encoder_config(_meta_state(1408, 40, 6144), name_hint="vitg-384.pt")
    assert giant.variant == "giant" and giant.fields["num_heads"] == 22 and giant.fields["img_size"] == 384
    assert giant.fields["use_rope"] is True and giant.fields["num_frames"] == 64
    with pytest.raises(KeyMismatchError, match=r"(?s)variant 'large'.*fits variant 'huge'"):
        infer_encoder_config(_meta_state(1280, 32, 5120), variant="large")


def test_384_hint_needs_a_standalone_384_in_the_file_name():
    """Any "384" substring used to set img_size 384 (vitl_step13840.pt); now only a standalone number does, with a note."""
    for name, size in (("vitl.pt", 256), ("vitl_step13840.pt", 256), ("vitl-3840.pt", 256), ("vitl-ep384.pt", 256), ("vitg-384.pt", 384), ("vitl_384px.pt", 384)):
        inferred = infer_encoder_config(_meta_state(1024, 24, 4096), name_hint=name)
        assert inferred.fields["img_size"] == size, name
        assert any("img_size 384 from the file name" in note for note in inferred.notes) == (size == 384)


def test_vjepa_2_1_checkpoint_is_named(tmp_path, tiny_encoder):
    state = {k: v for k, v in tiny_encoder.state_dict().items() if not k.startswith("norm.")}
    state.update({f"norms_block.{i}.weight": torch.ones(128) for i in range(2)})
    state.update({"patch_embed_img.proj.weight": torch.zeros(128, 3, 1, 16, 16), "img_mod_embed": torch.zeros(1, 1, 128)})
    path = tmp_path / "vjepa2_1.pt"
    torch.save({"ema_encoder": {"module.backbone." + k: v for k, v in state.items()}}, path)
    with pytest.raises(ConversionError, match=r"V-JEPA 2.1 checkpoints are not supported \(this one has img_mod_embed, norms_block"):
        convert(str(path), tmp_path / "out", ConvertOptions(**TINY_FLAGS))
    assert not (tmp_path / "out").exists()


def test_custom_size_needs_num_heads(original_pt):
    with pytest.raises(ConversionError, match="pass --num-heads"):
        convert(str(original_pt), "/nonexistent-never-written", ConvertOptions(img_size=32, num_frames=4))


def test_missing_and_unexpected_keys_are_listed(tmp_path, tiny_encoder):
    sd = dict(tiny_encoder.state_dict())
    del sd["blocks.1.mlp.fc2.weight"]
    sd["blocks.1.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pt"
    torch.save(original_checkpoint(sd), path)
    with pytest.raises(KeyMismatchError) as err:
        convert(str(path), tmp_path / "out", ConvertOptions(**TINY_FLAGS))
    message = str(err.value)
    assert "missing keys (1)" in message and "blocks.1.mlp.fc2.weight" in message
    assert "unexpected keys (1)" in message and "blocks.1.extra.weight" in message
    assert not (tmp_path / "out").exists()


def test_existing_output_is_never_overwritten_without_flag(tmp_path, original_pt):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="--overwrite"):
        convert(str(original_pt), out, ConvertOptions(**TINY_FLAGS))
    assert (out / "keep.txt").read_text() == "mine"
    convert(str(original_pt), out, ConvertOptions(**TINY_FLAGS), overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_failed_verification_writes_nothing(tmp_path, original_pt, monkeypatch):
    from hf_vjepa_area.conversion import VerificationError

    module = importlib.import_module("hf_vjepa_area.conversion.convert")  # the package exports a function of that name

    real = module._transformers_reference

    def shifted_reference(*args):  # a source model whose outputs differ by 1e-3
        build = real(*args)

        def wrapped():
            model, run = build()
            return model, lambda m, p: {k: v + 1e-3 for k, v in run(m, p).items()}

        return wrapped

    monkeypatch.setattr(module, "_transformers_reference", shifted_reference)
    with pytest.raises(VerificationError, match="exceeds the tolerance"):
        convert(str(original_pt), tmp_path / "out", ConvertOptions(verify=True, **TINY_FLAGS))
    assert not (tmp_path / "out").exists()
    failed = json.loads((tmp_path / "out.failed-conversion_report.json").read_text())
    assert failed["verification"]["passed"] is False

    # A later success at the same output removes the stale report of the failed attempt.
    monkeypatch.setattr(module, "_transformers_reference", real)
    convert(str(original_pt), tmp_path / "out", ConvertOptions(verify=True, **TINY_FLAGS))
    assert not (tmp_path / "out.failed-conversion_report.json").exists()


def test_bfloat16_output(tmp_path, original_pt):
    report = convert(str(original_pt), tmp_path / "bf16", ConvertOptions(dtype="bfloat16", verify=True, tolerance=0.5, **TINY_FLAGS)).report
    assert report["weights_roundtrip"]["dtypes"] == ["bfloat16"]
    assert "bfloat16" in report["verification"]["note"]


def test_video_pos_embed_with_a_clip_shorter_than_a_tubelet_is_refused(tiny_encoder):
    """--num-frames 1 for a video pos_embed divided by num_frames // tubelet_size = 0 (ZeroDivisionError)."""
    torch.manual_seed(0)
    state = VJEPA2AreaModel(VJEPA2AreaConfig(**TINY, use_rope=False)).state_dict()
    for frames in (1, 3):
        with pytest.raises(ConversionError, match=f"--num-frames {frames}: .* multiple of 2"):
            infer_encoder_config(state, num_heads=2, num_frames=frames)
