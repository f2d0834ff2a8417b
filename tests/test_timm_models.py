"""timm conventions for every registered `vjepa2_*` name, built at tiny size."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.data import resolve_data_config
from timm.models import get_pretrained_cfg
from timm.optim import create_optimizer_v2

import hf_vjepa_area  # noqa: F401  (registers the entry points)
from hf_vjepa_area.timm_models import checkpoint_filter_fn

from .conftest import TINY, tiny_video

from tests.numerics import assert_matches

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = timm.list_models("vjepa2_*")
RELEASED = ["vjepa2_vitl", "vjepa2_vith", "vjepa2_vitg", "vjepa2_vitg_384"]
D = TINY["embed_dim"]


def tiny(name: str, **kwargs) -> torch.nn.Module:
    return timm.create_model(name, **{**TINY, **kwargs})


def test_the_registered_names():
    expected = {f"vjepa2_vit{s}{a}" for s in ("t", "s", "b", "l", "h", "g", "g_384") for a in ("", "_area")}
    assert set(NAMES) == expected
    assert set(timm.list_models("vjepa2_*", pretrained=True)) == {f"{n}{a}" for n in RELEASED for a in ("", "_area")}


@pytest.mark.parametrize(
    "name, params_m, img_size, area_layers",
    [
        ("vjepa2_vitl", 303.9, 256, 0),
        ("vjepa2_vith_area", 631.6, 256, 24),
        ("vjepa2_vitg", 1012.2, 256, 0),
        ("vjepa2_vitg_384_area", 1012.2, 384, 30),
        ("vjepa2_vitb_area", 86.2, 256, 9),
    ],
)
def test_full_size_defaults_on_meta(name, params_m, img_size, area_layers):
    model = timm.create_model(name, device="meta")
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == params_m
    config = model.config
    assert tuple(config.img_size) == (img_size, img_size) and (config.patch_size, config.tubelet_size) == (16, 2)
    assert config.use_rope and len(config.area_layers) == area_layers
    if area_layers:
        assert config.area_splits == [2, 2, 1] and config.area_layers == list(range(area_layers))
    cfg = get_pretrained_cfg(name)
    assert cfg.input_size == (3, img_size, img_size) and cfg.hf_hub_filename == "model.safetensors"


@pytest.mark.parametrize("name", NAMES)
def test_conventions(name):
    """Forward, backward, forward_features/forward_head shapes, reset_classifier, intermediates."""
    torch.manual_seed(0)
    model = tiny(name, num_classes=3)
    video = tiny_video()
    assert model.config.embed_dim == D and model.num_features == D and model.num_classes == 3
    assert (model.config.area_splits is not None) == name.endswith("_area")

    logits = model(video)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    model.eval()
    with torch.no_grad():
        tokens = model.forward_features(video)
        assert tokens.shape == (2, 8, D)
        assert model.forward_head(tokens, pre_logits=True).shape == (2, D)
        assert_matches(model.forward_head(tokens), model(video))
        final, intermediates = model.forward_intermediates(video)
        assert_matches(final, tokens)
        assert [t.shape for t in intermediates] == [(2, D, 2, 2, 2)] * TINY["depth"]
        last = model.forward_intermediates(video, indices=[-1], norm=True, output_fmt="NLC", intermediates_only=True)
        assert_matches(last[0], tokens)
        early, first = model.forward_intermediates(video, indices=[0], stop_early=True, output_fmt="NLC")
        assert len(first) == 1 and early.shape == tokens.shape

        image = video[:, :, 0]  # [B, C, H, W]: one tubelet, so area models split it in space only
        assert model.forward_features(image).shape == (2, 4, D)
        images = model.forward_intermediates(image, indices=1, intermediates_only=True)
        assert images[0].shape == (2, D, 2, 2)

    assert model.get_classifier().out_features == 3
    model.reset_classifier(5)
    assert model(video).shape == (2, 5) and model.get_classifier().out_features == 5
    model.reset_classifier(0)
    assert model(video).shape == (2, D)
    model.reset_classifier(4, global_pool="avg")
    assert model(video).shape == (2, 4) and isinstance(model.head, torch.nn.Linear)


@pytest.mark.parametrize("global_pool", [None, "avg"])
def test_reset_classifier_keeps_the_models_dtype(global_pool):
    model = tiny("vjepa2_vitt_area", num_classes=3).to(torch.bfloat16).eval()
    model.reset_classifier(5, global_pool=global_pool)
    assert {p.dtype for p in model.head.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert model(tiny_video().bfloat16()).shape == (2, 5)


@pytest.mark.parametrize("name", NAMES)
def test_features_only(name):
    model = tiny(name, features_only=True, out_indices=(0, 1))
    features = model(tiny_video())
    assert [f.shape for f in features] == [(2, D, 2, 2, 2)] * 2
    assert model.feature_info.channels() == [D, D] and model.feature_info.reduction() == [16, 16]


@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_same_gradients(name):
    torch.manual_seed(0)
    model = tiny(name, num_classes=3, drop_path_rate=0.0)
    video = tiny_video()

    def grads():
        model.zero_grad()
        model(video).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    reference = grads()
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing and all(b.gradient_checkpointing for b in model.blocks)
    checkpointed = grads()
    for key, grad in reference.items():
        assert_matches(checkpointed[key], grad, msg=key)


def test_encoder_default_head_and_pools():
    model = tiny("vjepa2_vitt_area").eval()
    video = tiny_video()
    tokens = model.forward_features(video)
    assert model.num_classes == 0 and model.global_pool == "avg"
    assert_matches(model(video), tokens.mean(1))  # timm: a headless model returns pooled features
    assert tiny("vjepa2_vitt", global_pool="attn").eval()(video).shape == (2, D)
    assert tiny("vjepa2_vitt", global_pool="")(video).shape == (2, 8, D)
    with pytest.raises(ValueError, match="global_pool"):
        tiny("vjepa2_vitt", global_pool="token")


def test_model_args_and_masks():
    model = tiny("vjepa2_vitt_area", num_frames=8, area_splits=(2, 1, 1), area_layers="0:1").eval()
    assert model.config.area_layers == [0] and [b.attn.area for b in model.blocks] == [True, False]
    video = tiny_video(frames=8)
    with torch.no_grad():
        tokens = model.forward_features(video)
        masks = torch.tensor([[1, 4, 9, 14]]).expand(2, -1)
        visible = model.forward_features(video, masks=masks)
        assert visible.shape == (2, 4, D)
        tokens_nlc = model.forward_intermediates(video, masks=masks, output_fmt="NLC", intermediates_only=True)
        assert tokens_nlc[0].shape == (2, 4, D)
    assert tokens.shape == (2, 16, D)
    image_model = tiny("vjepa2_vitt_area", area_splits=(1, 2, 2)).eval()  # area attention for images
    assert image_model.forward_intermediates(video[:, :, 0], indices=1, intermediates_only=True)[0].shape == (2, D, 2, 2)
    with pytest.raises(ValueError, match="NLC"):
        model.forward_intermediates(video, masks=masks)
    with pytest.raises(TypeError, match="unexpected model arguments"):
        tiny("vjepa2_vitt", not_a_field=1)


def test_optimizer_tooling_and_data_config():
    model = tiny("vjepa2_vitt_area", num_classes=3)
    assert model.no_weight_decay() == {"pos_embed"}
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    assert len(optimizer.param_groups) > 2  # per-depth groups from group_matcher
    names = {id(p): n for n, p in model.named_parameters()}
    scale = {names[id(p)]: g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    assert len(scale) == len(names)  # every parameter is in a group
    # layer decay follows depth: patch embed < first block < last block < head
    assert scale["patch_embed.proj.weight"] < scale["blocks.0.attn.qkv.weight"] < scale["blocks.1.attn.qkv.weight"]
    assert scale["blocks.1.attn.qkv.weight"] < scale["head.linear.weight"] == 1.0
    data = resolve_data_config({}, model=timm.create_model("vjepa2_vitl", device="meta"))
    assert data["input_size"] == (3, 256, 256) and data["interpolation"] == "bilinear" and data["crop_pct"] == 0.875


def test_pretrained_without_weights_says_where_they_come_from(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    from hf_vjepa_area.locate import SourceError

    with pytest.raises(SourceError) as info:  # the resolver's one line, as for every other entry point
        tiny("vjepa2_vitl_area", pretrained=True)
    message = str(info.value)
    assert "facebook/vjepa2-vitl-fpc64-256" in message and "hf download" in message and "file='vitl.pt'" in message
    assert "\n" not in message
    with pytest.raises(RuntimeError, match="No pretrained weights"):
        tiny("vjepa2_vitt", pretrained=True)


def test_reads_transformers_save_pretrained_of_the_classifier(tmp_path):
    """transformers' own `save_pretrained` keeps the `encoder.` prefix; timm's filter takes it off."""
    from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification

    hf = VJEPA2AreaForVideoClassification(VJEPA2AreaConfig(**TINY, area_splits=(2, 2, 1), num_labels=3)).eval()
    hf.save_pretrained(tmp_path)
    model = tiny(
        "vjepa2_vitt_area",
        num_classes=3,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "model.safetensors"), num_classes=3),
    ).eval()
    video = tiny_video()
    with torch.no_grad():
        assert_matches(model(video), hf(video.transpose(1, 2)).logits)
    assert "blocks.0.norm1.weight" in checkpoint_filter_fn({"encoder.blocks.0.norm1.weight": torch.ones(1)}, model)
