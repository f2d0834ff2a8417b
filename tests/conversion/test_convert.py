"""Conversion to our folder with the predictor, verified against transformers, and back to transformers."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import VJEPA2ForVideoClassification, VJEPA2Model

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel, VJEPA2AreaPredictor
from hf_vjepa_area.conversion import ConversionError
from hf_vjepa_area.conversion import convert as convert_module
from hf_vjepa_area.conversion.convert import VerificationError, convert, export_to_transformers, full_attention

from tests.conftest import TINY_PT_OPTIONS
from tests.numerics import FLOAT32_RTOL, approx, assert_matches
from .conftest import NUM_LABELS


def _video(frames=8, seed=11):
    return torch.randn(2, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _keys(path):
    with safe_open(path, "pt") as handle:
        return set(handle.keys())


def test_pt_with_predictor_and_context_encoder(tmp_path, tiny_release):
    out = tmp_path / "out"
    report = convert(tiny_release.pt, out, verify=True, **TINY_PT_OPTIONS, context_encoder=True)
    verification = report["verification"]
    assert verification["passed"] and set(verification["outputs"]) == {"last_hidden_state", "predictor"}
    assert "VJEPA2Predictor with mask_tokens[1]" in verification["reference"]
    for entry in verification["outputs"].values():  # the float32 rule's bound, which scales with the outputs
        assert entry["allowed"] == approx(FLOAT32_RTOL * max(1.0, entry["reference_max_abs"]))
        assert entry["max_abs_diff"] <= entry["allowed"]
    assert report["source"]["checkpoint_key"] == "target_encoder" and report["variant"] == "custom"

    # The contract's layout: the encoder (target_encoder), the predictor in Meta's names, the context encoder.
    encoder = load_file(out / "model.safetensors")
    assert torch.equal(encoder["norm.weight"], tiny_release.model.encoder.layernorm.weight)
    predictor = load_file(out / "predictor.safetensors")
    assert {"predictor_embed.weight", "mask_tokens.0", "mask_tokens.2", "predictor_blocks.1.attn.qkv.bias",
            "predictor_norm.weight", "predictor_proj.bias"} <= set(predictor) and predictor["mask_tokens.0"].shape == (1, 1, 96)
    context = load_file(out / "context_encoder.safetensors")
    assert context.keys() == encoder.keys() and torch.equal(context["norm.weight"], encoder["norm.weight"] + 0.25)
    config = json.loads((out / "config.json").read_text())
    assert (config["predictor_embed_dim"], config["predictor_depth"], config["predictor_num_heads"], config["predictor_num_mask_tokens"]) == (96, 2, 12, 3)
    assert "license: mit" in (out / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind

    # The predictor equals transformers' VJEPA2Predictor (mask_tokens[1]) on fresh, masked input.
    config_obj = VJEPA2AreaModel.from_pretrained(out).config
    ours = VJEPA2AreaPredictor(config_obj).eval()
    ours.load_state_dict(predictor)
    tokens = tiny_release.model(_video(4), skip_predictor=True).last_hidden_state.detach()
    context_ids, target_ids = torch.tensor([[0, 2, 3, 5, 6]]).expand(2, -1), torch.tensor([[7, 1, 4]]).expand(2, -1)
    with torch.no_grad():
        expected = tiny_release.model.predictor(tokens, [context_ids], [target_ids]).last_hidden_state
        got = ours(tokens.gather(1, context_ids[..., None].expand(-1, -1, 192)), context_ids, target_ids, (2, 2, 2), mask_index=1)
    assert_matches(got, expected)


def test_transformers_hub_id_with_area_options_round_trips(tmp_path, offline_release):
    ours, back = tmp_path / "ours", tmp_path / "back"
    report = convert(offline_release.repo_id, ours, verify=True, area_splits=[2, 2, 1], area_layers="0:1")
    assert report["verification"]["passed"] and report["source"]["revision"] == "c" * 40
    assert json.loads((ours / "config.json").read_text())["area_layers"] == [0]
    assert "base_model: facebook/vjepa2-tiny-test" in (ours / "README.md").read_text()
    with torch.no_grad():  # what a user loads: transformers' numbers with area attention off
        full = VJEPA2AreaModel.from_pretrained(ours, config=full_attention(VJEPA2AreaConfig.from_pretrained(ours))).eval()
        assert_matches(full(_video()).last_hidden_state, offline_release.model(_video(), skip_predictor=True).last_hidden_state)

    assert export_to_transformers(ours, back)["predictor"] == "predictor.safetensors"
    original, restored = offline_release.model.state_dict(), VJEPA2Model.from_pretrained(back).state_dict()
    assert restored.keys() == original.keys() and all(torch.equal(restored[k], original[k]) for k in original)


def test_transformers_classifier_and_back(tmp_path, hf_classifier_dir):
    report = convert(hf_classifier_dir, tmp_path / "cls", verify=True)
    assert report["architecture"] == "VJEPA2AreaForVideoClassification" and report["verification"]["passed"]
    assert set(report["verification"]["outputs"]) == {"last_hidden_state", "logits", "predictor"}
    loaded = VJEPA2AreaForVideoClassification.from_pretrained(tmp_path / "cls").eval()
    assert (loaded.config.probe_depth, loaded.config.probe_num_heads, loaded.config.id2label[3]) == (2, 3, "action_3")
    hf = VJEPA2ForVideoClassification.from_pretrained(hf_classifier_dir).eval()
    with torch.no_grad():
        assert_matches(loaded(_video()).logits, hf(_video()).logits)
    export_to_transformers(tmp_path / "cls", tmp_path / "back")
    original, restored = hf.state_dict(), VJEPA2ForVideoClassification.from_pretrained(tmp_path / "back").state_dict()
    assert restored.keys() == original.keys() and all(torch.equal(restored[k], original[k]) for k in original)


def test_pt_with_a_released_probe_and_labels(tmp_path, tiny_release, probe_pt):
    labels = [f"Pushing thing {i}" for i in range(NUM_LABELS)]
    report = convert(tiny_release.pt, tmp_path / "cls", verify=True, **TINY_PT_OPTIONS, probe=probe_pt, labels=labels,
                     probe_out_layers="last")  # fmt: skip
    assert report["verification"]["passed"] and "VJEPA2AttentivePooler" in report["verification"]["reference"]
    config = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert (config["probe_num_heads"], config["probe_depth"], config["id2label"]["4"]) == (16, 2, "Pushing thing 4")
    assert {"head.linear.weight", "blocks.0.norm1.weight"} <= _keys(tmp_path / "cls" / "model.safetensors")
    with pytest.raises(ConversionError, match="3 names for a model with 5 classes"):
        convert(tiny_release.pt, tmp_path / "x", **TINY_PT_OPTIONS, probe=probe_pt, labels=labels[:3], probe_out_layers="last")
    with pytest.raises(ConversionError, match="cannot export cls: .*a probe whose heads differ"):
        export_to_transformers(tmp_path / "cls", tmp_path / "hf")


def test_failed_verification_writes_nothing(tmp_path, tiny_release, monkeypatch):
    real = convert_module.transformers_outputs
    monkeypatch.setattr(convert_module, "transformers_outputs", lambda *a: {k: v + 1e-3 for k, v in real(*a).items()})
    with pytest.raises(VerificationError, match="nothing written"):
        convert(tiny_release.pt, tmp_path / "out", verify=True, **TINY_PT_OPTIONS)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite_and_inputs_inside_it_are_refused(tmp_path, tiny_release, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="--overwrite"):
        convert(tiny_release.pt, out, **TINY_PT_OPTIONS)
    assert (out / "keep.txt").read_text() == "mine"
    convert(tiny_release.pt, out, **TINY_PT_OPTIONS, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    with pytest.raises(ConversionError, match="holds .* which replacing it would delete"):
        convert(out, out, overwrite=True)  # our folder as its own output
    monkeypatch.chdir(out)
    with pytest.raises(ConversionError, match="working directory"):
        convert(tiny_release.pt, tmp_path, **TINY_PT_OPTIONS, overwrite=True)
    assert (out / "model.safetensors").is_file()
