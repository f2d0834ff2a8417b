"""One Hub repo layout for both libraries: save_repo_folder, repo ids, offline-cache loading."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import shutil

import pytest
import timm
import torch
from safetensors import safe_open
from timm.models import PretrainedCfg
from transformers import AutoModel, AutoModelForVideoClassification, AutoVideoProcessor, VJEPA2VideoProcessor

import hf_vjepa_area
from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel, hub
from hf_vjepa_area.hub import push_folder, repo_id_for, save_repo_folder
from hf_vjepa_area.modeling.released import RELEASED_MODELS
from hf_vjepa_area.modeling.timm_metadata import timm_architecture, timm_model_args

from .hub_cache import add_folder_to_hub_cache

from .conftest import TINY, tiny_video

from tests.numerics import assert_matches

pytestmark = pytest.mark.usefixtures("single_thread")

# ---- repo ids ------------------------------------------------------------------------------


def test_repo_ids_follow_the_released_models_table():
    org = hub.HUB_ORG
    assert repo_id_for("vjepa2_vitl", area=True) == f"{org}/vjepa2-vitl-st-a2"
    assert repo_id_for("vjepa2_vitg_384") == f"{org}/vjepa2-vitg-384"
    with pytest.raises(ValueError, match="unknown released model"):
        repo_id_for("vjepa2_vitx")


def test_organisation_is_set_in_one_place(monkeypatch):
    monkeypatch.setattr(hub, "HUB_ORG", "someone-else")
    assert repo_id_for("vjepa2_vitl", area=True) == "someone-else/vjepa2-vitl-st-a2"
    monkeypatch.setenv("HF_VJEPA_AREA_ORG", "from-env")
    try:
        importlib.reload(hub)
        assert hub.HUB_ORG == "from-env" and hub.repo_id_for("vjepa2_vith") == "from-env/vjepa2-vith"
    finally:
        monkeypatch.delenv("HF_VJEPA_AREA_ORG")
        importlib.reload(hub)


def test_timm_registry_points_at_the_released_weights():
    for name, released in RELEASED_MODELS.items():
        for suffix in ("", "_area"):
            cfg = timm.models.get_pretrained_cfg(name + suffix)
            assert cfg.hf_hub_id == released.transformers_repo and cfg.hf_hub_filename == "model.safetensors"


def test_push_folder_creates_the_repo_then_uploads(tiny_hub):
    calls = []

    class Recorder:
        def create_repo(self, *args, **kwargs):
            calls.append(("create_repo", args, kwargs))
            return "https://huggingface.co/org/name"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", (), kwargs))

    info = push_folder(tiny_hub.encoder_dir, "org/name", private=True, api=Recorder())
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"] and calls[0][2]["private"] is True
    assert calls[1][2]["folder_path"] == str(tiny_hub.encoder_dir) and info["repo_id"] == "org/name"
    with pytest.raises(ValueError, match="ORG/NAME"):
        push_folder(tiny_hub.encoder_dir, "no-org", api=Recorder())


# ---- the folder ----------------------------------------------------------------------------


def _keys(path):
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return set(f.keys()), f.metadata()


def test_folder_layout_encoder(tiny_hub):
    folder = tiny_hub.encoder_dir
    names = set(os.listdir(folder))
    assert {
        "config.json",
        "model.safetensors",
        "modeling_vjepa2_area.py",
        "configuration_vjepa2_area.py",
        "released.py",
        "area.py",
        "rope.py",
        "timm_metadata.py",
        "video_preprocessor_config.json",
        "README.md",
    } <= names
    assert not any(n.startswith(".") for n in os.listdir(folder.parent)), "no staging folders left behind"
    assert (folder / "README.md").read_text(encoding="utf-8") == "# tiny ST-A² encoder\n"
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == (folder / "config.json").stat().st_mode & 0o777

    config = json.loads((folder / "config.json").read_text())
    # transformers
    assert config["model_type"] == "vjepa2_area" and config["architectures"] == ["VJEPA2AreaModel"]
    assert config["auto_map"]["AutoModel"] == "modeling_vjepa2_area.VJEPA2AreaModel"
    assert config["auto_map"]["AutoModelForVideoClassification"].endswith("VJEPA2AreaForVideoClassification")
    assert config["embed_dim"] == TINY["embed_dim"] and config["area_splits"] == [2, 2, 1]
    # timm
    assert config["architecture"] == "vjepa2_vitt_area" and config["num_classes"] == 0
    assert config["model_args"]["embed_dim"] == TINY["embed_dim"] and config["model_args"]["num_frames"] == 4
    cfg = PretrainedCfg(**config["pretrained_cfg"])  # only keys timm accepts
    assert tuple(cfg.input_size) == (3, 32, 32) and cfg.hf_hub_filename == "model.safetensors"

    keys, _ = _keys(folder)
    assert keys == set(tiny_hub.encoder.state_dict())
    assert "patch_embed.proj.weight" in keys and "blocks.1.attn.qkv.weight" in keys and "norm.weight" in keys


def test_folder_layout_classifier_uses_original_names(tiny_hub):
    keys, _ = _keys(tiny_hub.classifier_dir)
    assert not any(k.startswith("encoder.") for k in keys)
    assert {"patch_embed.proj.weight", "head.linear.weight", "head.pooler.query_tokens"} <= keys
    config = json.loads((tiny_hub.classifier_dir / "config.json").read_text())
    assert config["num_classes"] == 3 and config["pretrained_cfg"]["num_classes"] == 3
    assert config["pretrained_cfg"]["label_names"] == ["bike", "bunny", "phone"]
    assert config["architectures"] == ["VJEPA2AreaForVideoClassification"]
    assert config["model_args"]["global_pool"] == "attn"


def test_metadata_extra_files_and_processor(tmp_path, tiny_hub):
    folder = save_repo_folder(
        tiny_hub.encoder,
        tmp_path / "repo",
        safetensors_metadata={"source_sha256": "abc"},
        extra_files={"conversion_report.json": b"{}", "notes/readme.txt": "ST-A²"},
    )
    _, metadata = _keys(folder)
    assert metadata == {"format": "pt", "source_sha256": "abc"}
    assert (folder / "conversion_report.json").read_bytes() == b"{}"
    assert (folder / "notes" / "readme.txt").read_text(encoding="utf-8") == "ST-A²"
    assert not (folder / "README.md").exists()
    processor = AutoVideoProcessor.from_pretrained(str(folder))
    assert isinstance(processor, VJEPA2VideoProcessor)
    assert processor.crop_size["height"] == 32 and processor.size["shortest_edge"] == int(32 * 256 / 224)


def test_refuses_non_empty_folder_and_overwrites_atomically(tmp_path, tiny_hub):
    target = tmp_path / "repo"
    target.mkdir()
    save_repo_folder(tiny_hub.encoder, target)  # an empty folder is fine
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_repo_folder(tiny_hub.encoder, target)
    (target / "stale.txt").write_text("old")
    save_repo_folder(tiny_hub.classifier, target, overwrite=True)
    assert not (target / "stale.txt").exists()
    assert json.loads((target / "config.json").read_text())["num_classes"] == 3
    assert sorted(os.listdir(tmp_path)) == ["repo"], "no staging or backup folders left behind"


def test_failed_write_leaves_nothing(tmp_path, tiny_hub):
    target = tmp_path / "repo"
    with pytest.raises(ValueError, match="extra_files"):
        save_repo_folder(tiny_hub.encoder, target, extra_files={"x.bin": 3})
    with pytest.raises(ValueError, match="relative path"):
        save_repo_folder(tiny_hub.encoder, target, extra_files={"../escape.txt": "x"})
    with pytest.raises(ValueError, match="str to str"):
        save_repo_folder(tiny_hub.encoder, target, safetensors_metadata={"n": 1})
    assert os.listdir(tmp_path) == []
    # an existing repo survives a failed overwrite untouched
    save_repo_folder(tiny_hub.encoder, target)
    before = sorted(os.listdir(target))
    with pytest.raises(ValueError):
        save_repo_folder(tiny_hub.classifier, target, overwrite=True, extra_files={"x": 3})
    assert sorted(os.listdir(target)) == before and sorted(os.listdir(tmp_path)) == ["repo"]


def test_refuses_other_models(tmp_path):
    with pytest.raises(TypeError, match="VJEPA2AreaModel"):
        save_repo_folder(torch.nn.Linear(2, 2), tmp_path / "x")


def test_hub_cache_layout(tmp_path, tiny_hub):
    snapshot = add_folder_to_hub_cache(tiny_hub.encoder_dir, "org/name", tmp_path)
    ref = (tmp_path / "models--org--name" / "refs" / "main").read_text()
    assert len(ref) == 40 and snapshot == tmp_path / "models--org--name" / "snapshots" / ref
    assert (snapshot / "model.safetensors").is_file()


def test_hub_cache_failed_copy_leaves_the_previous_snapshot(tmp_path, tiny_hub, monkeypatch):
    commit = "a" * 40
    snapshot = add_folder_to_hub_cache(tiny_hub.encoder_dir, "org/name", tmp_path, commit_hash=commit)
    before = sorted(os.listdir(snapshot))

    def copy_then_fail(source, target, **kwargs):
        if pathlib.Path(source).name == "model.safetensors":
            raise OSError("disk full")
        return shutil.copy2(source, target, **kwargs)

    copytree = shutil.copytree
    monkeypatch.setattr(shutil, "copytree", lambda *a, **k: copytree(*a, **k, copy_function=copy_then_fail))
    with pytest.raises(OSError, match="disk full"):
        add_folder_to_hub_cache(tiny_hub.classifier_dir, "org/name", tmp_path, commit_hash=commit)
    assert sorted(os.listdir(snapshot)) == before  # the weights are still there
    assert sorted(os.listdir(snapshot.parent)) == [commit]  # no staging folder left behind
    assert (tmp_path / "models--org--name" / "refs" / "main").read_text() == commit


def test_non_square_model_gets_a_non_square_processor(tmp_path):
    model = VJEPA2AreaModel(VJEPA2AreaConfig(**{**TINY, "img_size": [32, 64]}))
    processor = AutoVideoProcessor.from_pretrained(str(save_repo_folder(model, tmp_path / "repo")))
    video = torch.randint(0, 256, (4, 3, 72, 128), dtype=torch.uint8)
    assert processor(video, return_tensors="pt")["pixel_values_videos"].shape == (1, 4, 3, 32, 64)


# ---- timm's view of a config ---------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, img_size, area, expected",
    [
        ("large", 256, True, "vjepa2_vitl_area"),
        ("huge", 256, False, "vjepa2_vith"),
        ("giant", 384, False, "vjepa2_vitg_384"),
        ("giant", 256, True, "vjepa2_vitg_area"),
        ("base", 224, False, "vjepa2_vitb"),
    ],
)
def test_timm_architecture_of_released_sizes(variant, img_size, area, expected):
    config = VJEPA2AreaConfig(
        **hf_vjepa_area.VARIANTS[variant], img_size=img_size, area_splits=(2, 2, 1) if area else None
    )
    assert timm_architecture(config) == expected
    model = timm.create_model(expected, device="meta", **timm_model_args(config))
    for name, value in timm_model_args(config).items():
        got = getattr(model.config, name)
        assert (list(got) if isinstance(got, (list, tuple)) else got) == (
            [value, value] if name == "img_size" else value
        ), name


# ---- the same file in both libraries -------------------------------------------------------


def test_same_outputs_from_the_same_file(offline_hub):
    video = tiny_video()
    with torch.no_grad():
        expected_tokens = offline_hub.encoder(video.transpose(1, 2)).last_hidden_state
        expected_logits = offline_hub.classifier(video.transpose(1, 2)).logits

        hf_encoder = AutoModel.from_pretrained(offline_hub.encoder_id).eval()
        hf_classifier = AutoModelForVideoClassification.from_pretrained(offline_hub.classifier_id).eval()
        assert type(hf_encoder) is VJEPA2AreaModel and type(hf_classifier) is VJEPA2AreaForVideoClassification
        timm_hub_encoder = timm.create_model(f"hf-hub:{offline_hub.encoder_id}", pretrained=True).eval()
        timm_hub_classifier = timm.create_model(f"hf-hub:{offline_hub.classifier_id}", pretrained=True).eval()
        timm_local = timm.create_model(f"local-dir:{offline_hub.classifier_dir}", pretrained=True).eval()
        # A registered name reads our repo format too (the tiny size passed as model args).
        timm_named = timm.create_model(
            "vjepa2_vitl_area", pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=offline_hub.encoder_id),
            **timm_model_args(offline_hub.encoder.config),
        ).eval()

        outputs = {
            "AutoModel": hf_encoder(video.transpose(1, 2)).last_hidden_state,
            "timm hf-hub encoder": timm_hub_encoder.forward_features(video),
            "timm name, pretrained=True": timm_named.forward_features(video),
        }
        for name, tokens in outputs.items():
            assert_matches(tokens, expected_tokens, msg=name)
        logits = {
            "AutoModelForVideoClassification": hf_classifier(video.transpose(1, 2)).logits,
            "timm hf-hub classifier": timm_hub_classifier(video),
            "timm local-dir classifier": timm_local(video),
        }
        for name, value in logits.items():
            assert_matches(value, expected_logits, msg=name)
        # timm and transformers read identical tensors
        assert torch.equal(timm_hub_classifier.forward_features(video), hf_classifier.encoder(video.transpose(1, 2))[0])

    assert timm_hub_classifier.num_classes == 3
    assert list(timm_hub_classifier.pretrained_cfg["label_names"]) == ["bike", "bunny", "phone"]
    assert timm_hub_encoder.pretrained_cfg["hf_hub_id"] == offline_hub.encoder_id


@pytest.mark.parametrize("in_chans", [1, 4])
def test_timm_adapts_the_conv3d_stem_to_other_channel_counts(offline_hub, in_chans):
    """timm's own adaptation handles Conv2d stems only; ours applies its rule to the tubelet Conv3d."""
    model = timm.create_model(f"hf-hub:{offline_hub.encoder_id}", pretrained=True, in_chans=in_chans).eval()
    source = offline_hub.encoder.patch_embed.proj.weight
    adapted = model.patch_embed.proj.weight
    assert adapted.shape == (source.shape[0], in_chans, *source.shape[2:])
    if in_chans == 1:  # grey input: the three colour filters summed
        assert_matches(adapted, source.sum(1, keepdim=True))
    else:  # channels repeated (r, g, b, r) and rescaled by 3 / in_chans
        assert_matches(adapted, source[:, [0, 1, 2, 0]] * 3 / in_chans)
    assert_matches(model.blocks[0].attn.qkv.weight, offline_hub.encoder.blocks[0].attn.qkv.weight)


def test_encoder_from_a_classifier_repo_and_a_new_head(offline_hub):
    encoder = AutoModel.from_pretrained(offline_hub.classifier_id).eval()
    timm_encoder = timm.create_model(f"hf-hub:{offline_hub.classifier_id}", pretrained=True, num_classes=5).eval()
    video = tiny_video()
    with torch.no_grad():
        expected = offline_hub.classifier.encoder(video.transpose(1, 2)).last_hidden_state
        assert_matches(encoder(video.transpose(1, 2)).last_hidden_state, expected)
        assert_matches(timm_encoder.forward_features(video), expected)
        # the new 5-class linear is fresh, the pooler is the checkpoint's
        pooled = timm_encoder.forward_head(timm_encoder.forward_features(video), pre_logits=True)
        assert_matches(pooled, offline_hub.classifier.head(expected, pre_logits=True))
    assert timm_encoder(video).shape == (2, 5)

    # num_classes=0 keeps the trained attentive pooler (timm: "remove the classifier, keep the pooling")
    pooled_model = timm.create_model(f"hf-hub:{offline_hub.classifier_id}", pretrained=True, num_classes=0).eval()
    features = timm.create_model(
        f"hf-hub:{offline_hub.classifier_id}", pretrained=True, features_only=True, out_indices=(-1,)
    ).eval()
    with torch.no_grad():
        assert_matches(pooled_model(video), pooled)
        last_block = offline_hub.classifier.encoder(video.transpose(1, 2), output_hidden_states=True).hidden_states[-1]
        assert_matches(features(video)[0], last_block.transpose(1, 2).reshape(2, -1, 2, 2, 2))


def test_transformers_save_pretrained_keeps_the_timm_keys_fresh(offline_hub, tmp_path):
    """A transformers fine-tune of a repo (new label count) saves a folder timm loads with the new head."""
    model = AutoModelForVideoClassification.from_pretrained(
        offline_hub.classifier_id, num_labels=4, ignore_mismatched_sizes=True
    ).eval()
    assert not hasattr(model.config, "pretrained_cfg")  # timm's keys are derived, not carried along
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_classes"] == 4 and config["pretrained_cfg"]["num_classes"] == 4
    assert config["architecture"] == "vjepa2_vitt_area" and config["model_args"]["global_pool"] == "attn"
    timm_model = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    video = tiny_video()
    with torch.no_grad():
        assert_matches(timm_model(video), model(video.transpose(1, 2)).logits)
