"""V-JEPA 2's multi-level probe input: the classifier, the config field, the per-size table, timm."""

import pytest
import torch
import torch.nn.functional as F

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification
from hf_vjepa_area.modeling.released import MULTILEVEL_OUT_LAYERS, multilevel_out_layers
from tests.numerics import assert_differs, assert_matches

CONFIG = dict(embed_dim=24, depth=4, num_heads=2, img_size=32, num_frames=4, probe_depth=2, probe_num_heads=2, num_labels=3)


def _video(seed=0):
    return torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)  # B, T, C, H, W


def _dense_reference(model: VJEPA2AreaForVideoClassification, video: torch.Tensor, layers) -> torch.Tensor:
    """Meta's multi-level input written out: each chosen block's output (the encoder's per-block hidden
    states), through the final LayerNorm, concatenated along the tokens in block order, then the head."""
    hidden = model.encoder(video, output_hidden_states=True).hidden_states  # embeddings, then block 0, 1, ...
    norm = model.encoder.norm
    tokens = torch.cat([F.layer_norm(hidden[i + 1], norm.normalized_shape, norm.weight, norm.bias, norm.eps) for i in layers], 1)
    return model.head(tokens)


@pytest.mark.parametrize("area", [None, (2, 2, 1)])
def test_multilevel_classifier_equals_a_dense_reference(area):
    torch.manual_seed(0)
    model = VJEPA2AreaForVideoClassification(VJEPA2AreaConfig(**CONFIG, area_splits=area, probe_out_layers=[3, 0, 2])).double().eval()
    assert model.config.probe_out_layers == [0, 2, 3]  # block order, as the encoder emits them
    video = _video()
    with torch.no_grad():
        logits = model(video).logits
        assert_matches(logits, _dense_reference(model, video, [0, 2, 3]))
        assert_differs(logits, model.head(model.encoder(video).last_hidden_state))  # the check has teeth
        assert_differs(logits, _dense_reference(model, video, [0, 1, 3]))


def test_probe_out_layers_is_saved_and_loaded(tmp_path):
    torch.manual_seed(0)
    model = VJEPA2AreaForVideoClassification(VJEPA2AreaConfig(**CONFIG, probe_out_layers=[1, 3])).eval()
    model.save_pretrained(tmp_path)
    loaded = VJEPA2AreaForVideoClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.probe_out_layers == [1, 3]
    video = _video().float()
    with torch.no_grad():
        assert torch.equal(loaded(video).logits, model(video).logits)
    assert VJEPA2AreaConfig(**CONFIG).probe_out_layers is None


def test_probe_out_layers_are_validated():
    for bad, message in (([1, 1], "twice"), ([4], "out of range"), ([], "non-empty"), ("last", "block indices")):
        with pytest.raises(ValueError, match=message):
            VJEPA2AreaConfig(**CONFIG, probe_out_layers=bad)
    with pytest.raises(ValueError, match="a multi-level probe"):
        VJEPA2AreaConfig(**{**CONFIG, "num_heads": 2}, probe_out_layers=[1, 3]).to_transformers_config(classifier=True)


def test_multilevel_blocks_per_released_size():
    assert multilevel_out_layers(VJEPA2AreaConfig.from_variant("large")) == [17, 19, 21, 23]
    assert multilevel_out_layers(VJEPA2AreaConfig.from_variant("huge")) == [25, 27, 29, 31]
    assert multilevel_out_layers(VJEPA2AreaConfig.from_variant("giant")) == [24, 29, 34, 39]
    assert set(MULTILEVEL_OUT_LAYERS) == {"large", "huge", "giant"}
    with pytest.raises(ValueError, match="released sizes only .*name the blocks explicitly"):
        multilevel_out_layers(VJEPA2AreaConfig(**CONFIG))


def test_timm_classifier_reads_the_same_blocks(tmp_path):
    import timm

    from hf_vjepa_area import timm_models  # noqa: F401
    from hf_vjepa_area.hub import save_repo_folder

    torch.manual_seed(0)
    model = VJEPA2AreaForVideoClassification(VJEPA2AreaConfig(**CONFIG, probe_out_layers=[1, 3])).eval()
    folder = save_repo_folder(model, tmp_path / "repo")
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    video = _video().float()
    with torch.no_grad():
        assert_matches(loaded(video.transpose(1, 2)), model(video).logits)
