"""transformers sources (VJEPA2Model, VJEPA2ForVideoClassification) and the export back, checked against
transformers' own implementation."""

import json

import pytest
import torch
from transformers import VJEPA2ForVideoClassification, VJEPA2Model

from hf_vjepa_area import VJEPA2AreaForVideoClassification, VJEPA2AreaModel
from hf_vjepa_area.conversion import ConversionError, ConvertOptions, ExportOptions, convert, export_to_transformers

from .conftest import NUM_LABELS


def _pixels(frames=4, seed=11):
    return torch.randn(2, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_vjepa2model_folder(tmp_path, hf_encoder_dir):
    report = convert(str(hf_encoder_dir), tmp_path / "out", ConvertOptions(verify=True)).report
    assert report["source"]["architecture"] == "VJEPA2Model"
    assert report["verification"]["passed"]
    assert report["verification"]["reference"].startswith("transformers' own `VJEPA2Model`")
    assert report["keys"]["dropped_groups"] == ["predictor.* (23)"]
    config = report["config"]
    assert (config["img_size"], config["num_frames"], config["embed_dim"], config["num_heads"]) == ([32, 32], 4, 128, 2)

    # Fresh input, more frames than the verification used: still transformers' numbers.
    hf = VJEPA2Model.from_pretrained(hf_encoder_dir, attn_implementation="sdpa").eval()
    ours = VJEPA2AreaModel.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        expected = hf(_pixels(8), skip_predictor=True).last_hidden_state
        got = ours(_pixels(8)).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_video_classification_folder(tmp_path, hf_classifier_dir):
    report = convert(str(hf_classifier_dir), tmp_path / "cls", ConvertOptions(verify=True, area_splits=[2, 1, 1])).report
    assert report["architecture"] == "VJEPA2AreaForVideoClassification"
    outputs = report["verification"]["equivalence"]["outputs"]
    assert set(outputs) == {"last_hidden_state", "logits"} and report["verification"]["passed"]
    assert report["verification"]["area_deviation"] is not None
    config = report["config"]
    # transformers' pooler: num_pooler_layers self-attention layers + the cross-attention one, the
    # encoder's heads and LayerNorm eps.
    assert (config["probe_depth"], config["probe_num_heads"], config["probe_layer_norm_eps"]) == (2, 2, 1e-6)
    assert config["id2label"]["3"] == "action_3"
    card = (tmp_path / "cls" / "README.md").read_text()
    assert "attentive probe of 5 classes" in card and str(hf_classifier_dir.parent) not in card
    assert str(hf_classifier_dir.parent) not in (tmp_path / "cls" / "conversion_report.json").read_text()

    hf = VJEPA2ForVideoClassification.from_pretrained(hf_classifier_dir, attn_implementation="sdpa").eval()
    ours = VJEPA2AreaForVideoClassification.from_pretrained(tmp_path / "cls").eval()
    full = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert full["area_splits"] == [2, 1, 1]
    ours.config.area_splits, ours.config.area_layers = None, []  # compare the full-attention model
    for block in ours.encoder.blocks:
        block.attn.area = False
    with torch.no_grad():
        torch.testing.assert_close(ours(_pixels()).logits, hf(_pixels()).logits, atol=1e-5, rtol=0)
    assert ours.config.num_labels == NUM_LABELS


def test_hub_id_from_the_offline_cache(tmp_path, hf_encoder_dir, monkeypatch):
    from huggingface_hub import constants

    from hf_vjepa_area.hub import add_folder_to_hub_cache

    cache = tmp_path / "hub-cache"
    add_folder_to_hub_cache(hf_encoder_dir, "facebook/vjepa2-tiny-test", cache_dir=cache, commit_hash="a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    options = ConvertOptions(local_files_only=True)
    report = convert("facebook/vjepa2-tiny-test", tmp_path / "out", options).report
    assert report["source"]["repo_id"] == "facebook/vjepa2-tiny-test" and report["source"]["revision"] == "a" * 40
    card = (tmp_path / "out" / "README.md").read_text()
    assert "base_model: facebook/vjepa2-tiny-test" in card
    with pytest.raises(ConversionError, match=r"\(no local file or folder of that name\) is not in the local Hugging Face cache"):
        convert("facebook/not-there", tmp_path / "none", options)


def test_mistyped_local_path_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    """`ckpts/vitl.pt` matches ORG/NAME: it used to be fetched from the Hub and reported as a missing repo."""
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("looked up on the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConversionError, match=r"ckpts/vitl.pt: no such local file or folder \(a .pt name is a file"):
        convert("ckpts/vitl.pt", tmp_path / "a", ConvertOptions())
    (tmp_path / "out").mkdir()
    with pytest.raises(ConversionError, match=r"out/vjepa2-vitl: no such local file or folder \(out/ exists here"):
        convert("out/vjepa2-vitl", tmp_path / "b", ConvertOptions())
    from hf_vjepa_area.conversion.export import load_ours

    with pytest.raises(ConversionError, match="no such local file or folder"):
        load_ours("out/vjepa2-vitl")


def test_flags_that_do_not_apply_are_refused(tmp_path, hf_encoder_dir):
    with pytest.raises(ConversionError, match="--checkpoint-key"):
        convert(str(hf_encoder_dir), tmp_path / "x", ConvertOptions(checkpoint_key="encoder"))
    # Tri-state options: False is a setting too (--no-rope contradicts a RoPE-only source), never ignored.
    with pytest.raises(ConversionError, match="--no-rope: not applicable to transformers sources"):
        convert(str(hf_encoder_dir), tmp_path / "x", ConvertOptions(use_rope=False))
    with pytest.raises(ConversionError, match="--rope: not applicable"):
        convert(str(hf_encoder_dir), tmp_path / "x", ConvertOptions(use_rope=True))
    with pytest.raises(ConversionError, match="crop_size is 32"):
        convert(str(hf_encoder_dir), tmp_path / "x", ConvertOptions(img_size=64))


def test_wrong_variant_for_a_transformers_folder(tmp_path, hf_encoder_dir):
    from hf_vjepa_area.conversion.infer import KeyMismatchError

    with pytest.raises(KeyMismatchError) as err:
        convert(str(hf_encoder_dir), tmp_path / "x", ConvertOptions(variant="base"))
    message = str(err.value)
    assert "hidden_size (embed_dim): source 128, variant 'base' 768" in message
    assert "num_hidden_layers (depth): source 2, variant 'base' 12" in message
    assert "it is no named variant; drop --variant" in message


def test_variant_never_replaces_the_sources_heads(tmp_path):
    """A config.json with tiny's width and depth but 6 heads: --variant tiny (3 heads) used to overwrite
    num_heads silently; it is refused, and the source's own values are kept without --variant."""
    from transformers import VJEPA2Model

    from hf_vjepa_area.conversion.infer import KeyMismatchError

    from .conftest import tiny_hf_config

    folder = tmp_path / "hf6"
    config = tiny_hf_config(hidden_size=192, num_attention_heads=6, num_hidden_layers=12)
    VJEPA2Model(config).save_pretrained(folder)
    with pytest.raises(KeyMismatchError, match="num_attention_heads: source 6, variant 'tiny' 3(.|\n)*no named variant") as err:
        convert(str(folder), tmp_path / "x", ConvertOptions(variant="tiny"))
    assert "hidden_size" not in str(err.value) and not (tmp_path / "x").exists()
    report = convert(str(folder), tmp_path / "y", ConvertOptions()).report
    assert report["config"]["num_heads"] == 6 and report["variant"] == "custom"


def test_round_trip_ours_transformers_ours_is_exact(tmp_path, tiny_classifier):
    tiny_classifier.save_pretrained(tmp_path / "ours")  # a plain save: our key names
    export = export_to_transformers(str(tmp_path / "ours"), tmp_path / "hf", ExportOptions(predictor_config=dict(
        pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=1)))
    assert export.report["verification"]["passed"]
    assert any("freshly initialised" in n for n in export.report["notes"])
    assert any("LayerNorm eps" in n for n in export.report["notes"])  # our probe eps 1e-5 -> transformers' 1e-6
    hf = VJEPA2ForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.num_pooler_layers == 1
    assert (tmp_path / "hf" / "video_preprocessor_config.json").is_file()

    convert(str(tmp_path / "hf"), tmp_path / "back", ConvertOptions())
    back = VJEPA2AreaForVideoClassification.from_pretrained(tmp_path / "back")
    original = tiny_classifier.state_dict()
    restored = back.state_dict()
    assert restored.keys() == original.keys()
    assert all(torch.equal(restored[k], original[k]) for k in original)


def test_round_trip_transformers_ours_transformers_keeps_the_predictor(tmp_path, hf_encoder_dir):
    convert(str(hf_encoder_dir), tmp_path / "ours", ConvertOptions(area_splits=[2, 2, 1]))
    options = ExportOptions(predictor_from=str(hf_encoder_dir))
    report = export_to_transformers(str(tmp_path / "ours"), tmp_path / "hf", options).report
    assert report["verification"]["passed"] and report["predictor"]["source"] == hf_encoder_dir.name
    original = VJEPA2Model.from_pretrained(hf_encoder_dir).state_dict()
    restored = VJEPA2Model.from_pretrained(tmp_path / "hf").state_dict()
    assert restored.keys() == original.keys()
    assert all(torch.equal(restored[k], original[k]) for k in original)


def test_export_refuses_what_transformers_cannot_express(tmp_path):
    from hf_vjepa_area import VJEPA2AreaConfig

    model = VJEPA2AreaModel(VJEPA2AreaConfig(img_size=32, num_frames=4, embed_dim=128, depth=1, num_heads=2, use_rope=False))
    model.save_pretrained(tmp_path / "norope")
    with pytest.raises(ConversionError, match="use_rope=False"):
        export_to_transformers(str(tmp_path / "norope"), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_predictor_is_resolved_at_its_own_revision(tmp_path, hf_encoder_dir, monkeypatch, capsys):
    """--source-revision names a branch of OUR repo; it was also applied to the --predictor-from repo,
    which has no such branch."""
    from huggingface_hub import constants

    from hf_vjepa_area.conversion.cli import main
    from hf_vjepa_area.hub import add_folder_to_hub_cache

    ours = tmp_path / "ours"
    convert(str(hf_encoder_dir), ours, ConvertOptions())
    cache = tmp_path / "hub-cache"
    add_folder_to_hub_cache(ours, "org/ours", cache_dir=cache, commit_hash="a" * 40)
    add_folder_to_hub_cache(hf_encoder_dir, "facebook/vjepa2-tiny", cache_dir=cache, commit_hash="b" * 40)
    (cache / "models--org--ours" / "refs" / "v1").write_text("a" * 40)  # our repo has a branch v1
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    argv = ["org/ours", str(tmp_path / "hf"), "--to", "transformers", "--source-revision", "v1",
            "--predictor-from", "facebook/vjepa2-tiny", "--local-files-only"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "hf" / "conversion_report.json").read_text())
    assert report["predictor"]["source"] == "facebook/vjepa2-tiny" and report["predictor"]["revision"] == "b" * 40
    # --predictor-revision is the predictor's: facebook/vjepa2-tiny has no v1.
    other = ["org/ours", str(tmp_path / "hf2"), "--to", "transformers", "--source-revision", "v1", "--local-files-only"]
    assert main([*other, "--predictor-from", "facebook/vjepa2-tiny", "--predictor-revision", "v1"]) == 2
    assert "facebook/vjepa2-tiny (no local file or folder of that name) is not in the local" in capsys.readouterr().err
    assert main([*other, "--predictor-revision", "v1"]) == 2
    assert "--predictor-revision: only with --predictor-from" in capsys.readouterr().err
