"""The resolver (`hf_vjepa_area.sources`): every kind of source, the one area rule, one-line errors offline."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel, sources
from hf_vjepa_area.conversion.load import CONVERT_FIRST
from hf_vjepa_area.sources import AreaOptions, SourceError, load_encoder, load_model, resolve
from tests.conftest import TINY_PT_OPTIONS
from tests.numerics import assert_matches

REPO = Path(__file__).resolve().parents[1]


def same_weights(module, state) -> bool:
    own = module.state_dict()
    return all(torch.equal(own[key], value) for key, value in state.items())


# ---- the area rule --------------------------------------------------------------------------------

NO_AREA = {"area_splits": None, "area_layers": []}
AREA = {"area_splits": [2, 2, 1], "area_layers": [1, 2]}

# (options, the model's config, the overrides, or the start of the error)
AREA_RULE = [
    (AreaOptions(), NO_AREA, {}),  # nothing asked: the model as it is
    (AreaOptions(), AREA, {}),
    (AreaOptions(splits=(2, 1, 1)), NO_AREA, {"area_splits": [2, 1, 1], "area_layers": None}),  # default blocks
    (AreaOptions(splits=(1, 2, 2)), AREA, {"area_splits": [1, 2, 2], "area_layers": [1, 2]}),  # its own blocks
    (AreaOptions(layers="0:1"), AREA, {"area_splits": [2, 2, 1], "area_layers": "0:1"}),  # its own splits
    (AreaOptions(layers="0:1"), NO_AREA, "area layers need area splits"),
    (AreaOptions(full_attention=True), AREA, {"area_splits": None, "area_layers": []}),
    (AreaOptions(splits=(2, 2, 1), full_attention=True), AREA, "full attention cannot be combined"),
    (AreaOptions(default_splits=(2, 2, 1)), NO_AREA, {"area_splits": [2, 2, 1], "area_layers": None}),  # the anneal's
    (AreaOptions(default_splits=(2, 2, 1)), AREA, {}),
    (AreaOptions(layers="0:1", default_splits=(2, 2, 1)), NO_AREA, {"area_splits": [2, 2, 1], "area_layers": "0:1"}),
]


@pytest.mark.parametrize("options,config,expected", AREA_RULE)
def test_the_area_rule(options, config, expected):
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            options.overrides(config)
    else:
        assert options.overrides(config) == expected


def test_apply_rebuilds_and_normalises_the_config():
    config = VJEPA2AreaConfig(img_size=64, embed_dim=96, depth=4, num_heads=4, num_frames=8)
    area = AreaOptions((2, 1, 1), "1:3").apply(config)
    assert area.area_splits == [2, 1, 1] and area.area_layers == [1, 2] and area.embed_dim == 96
    assert AreaOptions((1, 2, 2)).apply(area).area_layers == [1, 2]
    assert AreaOptions((2, 2, 1)).apply(config).area_layers == [0, 1, 2]
    assert AreaOptions(full_attention=True).apply(area).area_layers == []
    assert AreaOptions().apply(config) is config


# ---- each kind of source ------------------------------------------------------------------------------


def test_demo_encoder_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = load_encoder("demo"), load_encoder("demo")
    assert resolve("demo").kind == "demo" and torch.equal(torch.random.get_rng_state(), state)
    assert same_weights(a, b.state_dict())
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    assert a.config.area_splits == [2, 2, 1] and a.config.area_layers == [0, 1, 2]
    full = load_encoder("demo", area=AreaOptions(full_attention=True))
    assert full.config.area_splits is None and not any(block.attn.area for block in full.blocks)
    some = load_encoder("demo", area=AreaOptions(layers="0:2"))
    assert [block.attn.area for block in some.blocks] == [True, True, False, False]


def test_a_model_instance_with_area_options():
    model = sources.build_demo_encoder(3)
    assert resolve(model).kind == "instance" and load_model(model) is model
    area = load_model(model, area=AreaOptions(full_attention=True))
    assert area is not model and area.config.area_splits is None and same_weights(area, model.state_dict())


def test_one_of_our_folders_with_area_overrides(tmp_path):
    full = VJEPA2AreaModel(VJEPA2AreaConfig(img_size=32, embed_dim=48, depth=4, num_heads=4, num_frames=4))
    full.save_pretrained(tmp_path / "enc")
    assert resolve(str(tmp_path / "enc")).kind == "ours"
    area = load_encoder(tmp_path / "enc", area=AreaOptions((2, 1, 1), "0:3"))
    assert area.config.area_splits == [2, 1, 1] and [b.attn.area for b in area.blocks] == [True, True, True, False]
    same = load_encoder(str(tmp_path / "enc"))
    assert same.config.area_splits is None
    assert same_weights(area, full.state_dict()) and same_weights(same, full.state_dict())
    assert not any(p.requires_grad for p in area.parameters())
    random = load_encoder(str(tmp_path / "enc"), pretrained=False)
    assert not same_weights(random, full.state_dict())


def test_released_sources_directly(tiny_release, offline_release):
    """Meta's .pt and transformers' facebook/vjepa2-* repo (by folder and by Hub id), with area options:
    the same weights as transformers' VJEPA2Model, no conversion step."""
    video = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tiny_release.model(video.transpose(1, 2), skip_predictor=True).last_hidden_state
    assert resolve(tiny_release.pt).kind == "pt"
    for source in (str(tiny_release.folder), tiny_release.repo_id):
        assert resolve(source).kind == "transformers"
        encoder = load_encoder(source, area=AreaOptions((1, 2, 1), "0:1"))
        assert encoder.config.area_layers == [0] and not any(p.requires_grad for p in encoder.parameters())
        with torch.no_grad():
            assert_matches(load_encoder(source).encode(video).last_hidden_state, expected)
    from_pt = load_encoder(tiny_release.pt, read_options=TINY_PT_OPTIONS)
    with torch.no_grad():
        assert_matches(from_pt.encode(video).last_hidden_state, expected)


def test_a_pt_without_its_facts_says_how_to_give_them_once(tiny_release):
    with pytest.raises(SourceError, match="pass --variant") as caught:
        load_encoder(str(tiny_release.pt))
    message = str(caught.value)
    assert "\n" not in message and message.count(CONVERT_FIRST) == 1


def test_timm_names_with_area_options():
    assert resolve("vjepa2_vitt").kind == "timm"
    encoder = load_encoder("vjepa2_vitt", pretrained=False, area=AreaOptions((2, 2, 1), "0:6"))
    assert encoder.config.area_splits == [2, 2, 1] and encoder.config.area_layers == list(range(6))
    assert hasattr(encoder, "encode") and not encoder.training
    full = load_encoder("vjepa2_vitt_area", pretrained=False, area=AreaOptions(full_attention=True))
    assert full.config.area_layers == [] and not any(block.attn.area for block in full.blocks)
    with pytest.raises(SourceError, match="has no published weights: pass pretrained=False \\(--no-pretrained\\)"):
        load_encoder("vjepa2_vitt_area")
    with pytest.raises(SourceError, match="timm model name"):  # timm's other models are not V-JEPA 2 encoders
        resolve("resnet18")


def released_as(monkeypatch, repo_id: str) -> list:
    """timm's pretrained cfg of every entry names `repo_id`; timm.create_model records its pretrained calls
    (and builds them without weights: the tiny repo is no timm size)."""
    import timm
    from timm.models import PretrainedCfg

    monkeypatch.setattr(timm.models, "get_pretrained_cfg", lambda name: PretrainedCfg(hf_hub_id=repo_id))
    calls, create = [], timm.create_model

    def record(name, pretrained=False, **kwargs):
        if pretrained:
            calls.append(kwargs.pop("pretrained_cfg_overlay", None))
        return create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", record)
    return calls


def test_a_timm_entrys_weights_come_from_the_resolved_snapshot(offline_release, monkeypatch):
    calls = released_as(monkeypatch, offline_release.repo_id)
    load_encoder("vjepa2_vitt_area")
    snapshot = offline_release.cache / f"models--{offline_release.repo_id.replace('/', '--')}" / "snapshots" / ("c" * 40)
    assert calls == [{"file": str(snapshot / "model.safetensors")}]


def test_a_timm_entrys_weights_offline_and_absent_are_one_line(no_network, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    calls = released_as(monkeypatch, "facebook/absent")
    with pytest.raises(SourceError, match="^vjepa2_vitt_area: pretrained weights: facebook/absent: not found locally, not reachable on the Hub"):
        load_encoder("vjepa2_vitt_area")
    assert calls == []


def test_our_hub_ids_and_timm_hub_names(offline_hub):
    assert resolve(offline_hub.encoder_id).kind == "ours"
    encoder = load_encoder(offline_hub.encoder_id)
    assert same_weights(encoder, offline_hub.encoder.state_dict())
    from_classifier = load_encoder(offline_hub.classifier_id, area=AreaOptions(full_attention=True))  # a probe repo's encoder
    assert from_classifier.config.area_splits is None and isinstance(from_classifier, VJEPA2AreaModel)
    assert same_weights(from_classifier, offline_hub.classifier.encoder.state_dict())
    assert isinstance(load_model(offline_hub.classifier_id), VJEPA2AreaForVideoClassification)
    clip = torch.randn(1, 3, 4, 32, 32)
    for name in ("hf-hub:" + offline_hub.encoder_id, f"local-dir:{offline_hub.encoder_dir}"):
        via_timm = load_encoder(name)
        with torch.no_grad():
            assert_matches(via_timm.encode(clip).last_hidden_state, encoder.encode(clip).last_hidden_state)
    assert load_encoder("local-dir:" + str(offline_hub.encoder_dir), area=AreaOptions((1, 1, 2))).config.area_layers == [0]


def test_config_json_is_read_once_per_load(tiny_release, tmp_path, monkeypatch):
    from hf_vjepa_area.conversion import load as conversion_load

    reads = []
    read_config, from_json = conversion_load.read_config, VJEPA2AreaConfig._dict_from_json_file.__func__
    monkeypatch.setattr(sources, "read_config", lambda *a: reads.append(a) or read_config(*a))
    monkeypatch.setattr(conversion_load, "read_config", lambda *a: reads.append(a) or read_config(*a))
    monkeypatch.setattr(VJEPA2AreaConfig, "_dict_from_json_file", classmethod(lambda cls, f: reads.append(f) or from_json(cls, f)))
    sources.build_demo_encoder(0).save_pretrained(tmp_path / "ours")
    loads = [lambda: load_encoder(tmp_path / "ours"), lambda: load_encoder(tiny_release.folder),
             lambda: sources.load_ssl_models(tiny_release.folder),
             lambda: sources.load_ssl_models(tmp_path / "ours", init_predictor="random")]
    for load in loads:
        reads.clear()
        load()
        assert len(reads) == 1, reads


# ---- one line, no network for what looks local, no retries offline ------------------------------------


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty Hub cache; every Hub call that could reach the network fails the test."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        pytest.fail(f"the network was asked for {args}")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    return calls


@pytest.mark.parametrize("source", ["/nonexistent", "./missing", "~/missing-folder", "vitl.pt", "no/such/folder/x",
                                    "missing/model.safetensors"])  # fmt: skip
def test_a_local_looking_source_never_touches_the_hub(no_network, monkeypatch, source):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("snapshot_download called"))
    with pytest.raises(SourceError) as caught:
        load_encoder(source)
    assert str(caught.value) == f"{source}: no such local file or folder"


def test_offline_a_hub_id_reads_the_cache_alone_in_one_line(no_network, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for load in (load_encoder, sources.load_ssl_models):
        with pytest.raises(SourceError) as caught:
            load("someorg/typo-model")
        message = str(caught.value)
        assert message.startswith("someorg/typo-model: not found locally, not reachable on the Hub (HF_HUB_OFFLINE is set)")
        assert "\n" not in message


def test_an_unreachable_hub_is_asked_once_then_the_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    asked, cached = [], []

    def unreachable(self, repo_id, **kwargs):
        asked.append(repo_id)
        raise ConnectionError("Name or service not known")

    real = huggingface_hub.snapshot_download

    def snapshot(*args, **kwargs):
        cached.append(kwargs["local_files_only"])
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    with pytest.raises(SourceError, match="^someorg/typo: not found locally, not reachable on the Hub \\(the Hub did not "
                                          "answer: ConnectionError\\)"):  # fmt: skip
        load_encoder("someorg/typo")
    assert asked == ["someorg/typo"] and cached == [True]


# ---- the examples: a bad --model is one line and exit status 2 ------------------------------------------


@pytest.mark.parametrize("script,args", [
    ("k400_probe.py", []),
    ("ssl_anneal.py", ["--train-csv", "unused.csv"]),
    ("extract_features.py", ["--manifest", "unused.csv", "--output", "unused.safetensors"]),
])  # fmt: skip
def test_the_examples_refuse_a_missing_model_in_one_line(script, args, tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "unused.csv").write_text(f"{tmp_path / 'clip.mp4'} 0\n")
    monkeypatch.setattr(sys, "argv", [script, "--model", "/nonexistent", "--output-dir", str(tmp_path / "out"), *args]
                        if script != "extract_features.py" else [script, "--model", "/nonexistent", *args])  # fmt: skip
    with pytest.raises(SystemExit) as caught:
        runpy.run_path(str(REPO / "examples" / script), run_name="__main__")
    assert caught.value.code == 2
    assert capsys.readouterr().err == "error: --model /nonexistent: no such local file or folder\n"
    assert not (tmp_path / "out").exists()


# ---- the one meta-build helper ----------------------------------------------------------------------------


def test_build_holding_takes_the_tensors_as_they_are_and_refuses_a_partial_fit():
    from hf_vjepa_area._build import build_holding

    weight, bias = torch.randn(3, 2), torch.randn(3)
    linear = build_holding(lambda: torch.nn.Linear(2, 3), {"weight": weight, "bias": bias})
    assert linear.weight.data_ptr() == weight.data_ptr() and not linear.training  # assigned, no copy, no init
    with pytest.raises(ValueError, match=r"missing \['bias'\] \(1\), unexpected \[\] \(0\)"):
        build_holding(lambda: torch.nn.Linear(2, 3), {"weight": weight})
    with pytest.raises(SourceError, match=r"x.safetensors: the tensors do not fit Linear: .*shapes .*weight \[2, 3\] vs \[3, 2\]"):
        build_holding(lambda: torch.nn.Linear(2, 3), {"weight": weight.T, "bias": bias}, what="x.safetensors", error=SourceError)
