"""Released weights load directly, in timm and transformers, equal to transformers' own VJEPA2Model."""

import pytest
import timm
import torch

import hf_vjepa_area  # noqa: F401  (registers the timm entry points)
from hf_vjepa_area import AreaOptions, VJEPA2AreaForVideoClassification, VJEPA2AreaModel, load_model
from hf_vjepa_area.locate import SourceError
from hf_vjepa_area.conversion import ConversionError
from hf_vjepa_area.conversion.load import config_from_tensors

from tests.conftest import TINY_PT_OPTIONS
from tests.numerics import assert_differs, assert_matches

TINY_TIMM = dict(embed_dim=192, depth=2, num_heads=3, mlp_ratio=4.0, img_size=32)


def _video(frames=8, seed=5):
    return torch.randn(2, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))  # [B, T, C, H, W]


@torch.no_grad()
def _reference(release, video):
    return release.model(video, skip_predictor=True).last_hidden_state


@pytest.mark.parametrize("name", ["vjepa2_vitl", "vjepa2_vitg_384_area"])
def test_timm_loads_the_transformers_repo(offline_release, name):
    """The default tag of every released name reads transformers' safetensors from its facebook/ repo."""
    assert timm.models.get_pretrained_cfg(name).hf_hub_id.startswith("facebook/vjepa2-vit")
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=offline_release.repo_id),
                              **TINY_TIMM).eval()  # fmt: skip
    video = _video()
    with torch.no_grad():
        tokens = model.forward_features(video.transpose(1, 2))
    if name.endswith("_area"):  # same weights, another attention pattern: compare with area attention off
        model.config.area_splits, model.config.area_layers = None, []
        for block in model.blocks:
            block.attn.area = False
        with torch.no_grad():
            assert_differs(tokens, model.forward_features(video.transpose(1, 2)))
            tokens = model.forward_features(video.transpose(1, 2))
    assert_matches(tokens, _reference(offline_release, video))


def test_timm_loads_metas_pt(offline_release):
    model = timm.create_model("vjepa2_vitl", pretrained=True, pretrained_cfg_overlay=dict(file=str(offline_release.pt)),
                              **TINY_TIMM).eval()  # fmt: skip
    video = _video()
    with torch.no_grad():
        assert_matches(model.forward_features(video.transpose(1, 2)), _reference(offline_release, video))


def test_load_model_from_the_hub_id_a_folder_and_the_pt(offline_release):
    video = _video()
    reference = _reference(offline_release, video)
    for source, options in ((offline_release.repo_id, {}), (offline_release.folder, {}), (offline_release.pt, TINY_PT_OPTIONS)):
        model = load_model(source, read_options=options)
        assert type(model) is VJEPA2AreaModel and model.config.embed_dim == 192 and model.config.num_heads == 3
        with torch.no_grad():
            assert_matches(model(video).last_hidden_state, reference)
    area = load_model(offline_release.repo_id, area=AreaOptions(splits=(2, 2, 1), layers="0:1"))
    assert area.config.area_layers == [0] and area.config.predictor_embed_dim == 96
    context = load_model(offline_release.pt, read_options=dict(**TINY_PT_OPTIONS, checkpoint_key="encoder"))
    assert torch.equal(context.norm.weight, offline_release.model.encoder.layernorm.weight + 0.25)


def test_load_model_classifier_with_a_probe(tmp_path, offline_release):
    torch.manual_seed(0)
    probe = VJEPA2AreaForVideoClassification(load_model(offline_release.pt, read_options=dict(**TINY_PT_OPTIONS, num_labels=5, probe_depth=2)).config)
    head = {"module." + k.removeprefix("head."): v for k, v in probe.state_dict().items() if k.startswith("head.")}
    torch.save({"classifiers": [head], "epoch": 20}, tmp_path / "probe.pt")
    model = load_model(offline_release.pt, read_options=dict(**TINY_PT_OPTIONS, probe=tmp_path / "probe.pt", probe_out_layers="last"))
    assert type(model) is VJEPA2AreaForVideoClassification and model.config.num_labels == 5
    assert model.config.probe_depth == 2 and model.config.probe_num_heads == 16
    assert torch.equal(model.head.linear.weight, probe.head.linear.weight)


def test_sizes_come_from_the_tensors_and_heads_from_the_variant_table(offline_release):
    def meta(dim, depth, hidden):
        state = {"patch_embed.proj.weight": torch.empty(dim, 3, 2, 16, 16, device="meta")}
        state.update({f"blocks.{i}.mlp.fc1.weight": torch.empty(hidden, dim, device="meta") for i in range(depth)})
        return {"encoder": state, "predictor": {}}

    large = config_from_tensors(meta(1024, 24, 4096), "vitl.pt")
    assert (large.num_heads, large.img_size, large.num_frames) == (16, [256, 256], 64)
    giant = config_from_tensors(meta(1408, 40, 6144), "vitg-384.pt")  # the released file of that name
    assert (giant.num_heads, giant.mlp_ratio, giant.img_size) == (22, 48 / 11, [384, 384])
    with pytest.raises(SourceError, match="pass --variant NAME for its heads"):
        load_model(offline_release.pt)
    with pytest.raises(ConversionError, match="--variant large: the weights .* are huge"):
        config_from_tensors(meta(1280, 32, 5120), "vith.pt", variant="large")
    with pytest.raises(SourceError, match="--checkpoint-key, --img-size, --num-frames: not for a transformers source"):
        load_model(offline_release.repo_id, read_options=dict(checkpoint_key="encoder", img_size=64, num_frames=8))


def test_resolution_and_frames_of_a_file_that_is_not_released(offline_release):
    """The released table decides for released file names; any other file's sizes are asked for."""
    def meta(dim, depth, hidden):
        state = {"patch_embed.proj.weight": torch.empty(dim, 3, 2, 16, 16, device="meta")}
        state.update({f"blocks.{i}.mlp.fc1.weight": torch.empty(hidden, dim, device="meta") for i in range(depth)})
        return {"encoder": state, "predictor": {}}

    with pytest.raises(ConversionError, match="my-vitl.pt is not one of Meta's released files .* pass --img-size and --num-frames"):
        config_from_tensors(meta(1024, 24, 4096), "my-vitl.pt")
    with pytest.raises(ConversionError, match="pass --num-frames"):
        config_from_tensors(meta(1024, 24, 4096), "my-vitl.pt", img_size=64)
    custom = config_from_tensors(meta(1024, 24, 4096), "my-vitl.pt", img_size=64, num_frames=8)
    assert (custom.img_size, custom.num_frames) == ([64, 64], 8)
    with pytest.raises(ConversionError, match="vitl.pt is Meta's release at 256 px, 64 frames; --num-frames 8 contradicts it"):
        config_from_tensors(meta(1024, 24, 4096), "vitl.pt", num_frames=8)
    assert config_from_tensors(meta(1024, 24, 4096), "vitl.pt", img_size=256, num_frames=64).num_frames == 64
