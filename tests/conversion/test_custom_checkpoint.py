"""A V-JEPA 2 checkpoint trained by its user (not a released file; a predictor of another width, resolution
and frame count): what its tensors do not store is asked for, and the result equals transformers' own
modules built with the true sizes."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import VJEPA2Config, VJEPA2Model

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaModel, VJEPA2AreaPredictor
from hf_vjepa_area.conversion.cli import main
from hf_vjepa_area.sources import SourceError, load_ssl_models

from tests.conftest import meta_checkpoint, randomize
from tests.modeling.test_predictor import disjoint_masks
from tests.numerics import assert_matches

# Meta's `vit_predictor` at width 96 with 4 heads (head_dim 24); 64 px, 8 frames.
CUSTOM = dict(crop_size=64, frames_per_clip=8, hidden_size=192, num_attention_heads=3, num_hidden_layers=2,
              pred_hidden_size=96, pred_num_attention_heads=4, pred_num_hidden_layers=2, pred_num_mask_tokens=3)  # fmt: skip
SIZES = ["--variant", "tiny", "--img-size", "64", "--num-frames", "8"]


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    model = randomize(VJEPA2Model(VJEPA2Config(**CUSTOM)), 11)
    path = tmp_path_factory.mktemp("custom") / "my-vjepa2.pt"
    torch.save(meta_checkpoint(model), path)
    return model, path


def test_a_predictor_of_another_width_needs_its_head_count(custom, tmp_path, capsys):
    _, path = custom
    assert main([str(path), str(tmp_path / "out"), *SIZES]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the predictor's width 96 is not a released one" in err and "--predictor-heads N" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SourceError, match="--predictor-heads"):  # the SSL loader reads through the same reader
        load_ssl_models(path, read_options=dict(variant="tiny", img_size=64, num_frames=8))
    assert main([str(path), str(tmp_path / "out"), "--variant", "tiny", "--predictor-heads", "4"]) == 2
    assert "my-vjepa2.pt is not one of Meta's released files" in capsys.readouterr().err


def test_with_the_flags_it_equals_transformers_at_its_own_sizes(custom, tmp_path):
    model, path = custom
    out = tmp_path / "out"
    assert main([str(path), str(out), *SIZES, "--predictor-heads", "4", "--verify"]) == 0
    config = VJEPA2AreaConfig.from_pretrained(out)
    assert (config.img_size, config.num_frames) == ([64, 64], 8)
    assert (config.predictor_embed_dim, config.predictor_num_heads, config.predictor_depth) == (96, 4, 2)
    # Every file of the folder with one mode (safetensors writes through a private temporary file).
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes

    reference = model.double().eval()
    encoder = VJEPA2AreaModel.from_pretrained(out).double().eval()
    predictor = VJEPA2AreaPredictor(config)
    predictor.load_state_dict(load_file(out / "predictor.safetensors"), strict=True)
    predictor.double().eval()
    video = torch.randn(2, 8, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = (4, 4, 4)
    context_ids, target_ids = disjoint_masks(2, math.prod(grid), 20, 30, seed=1)
    with torch.no_grad():
        tokens = reference.encoder(video).last_hidden_state
        expected = reference.predictor(tokens, [context_ids], [target_ids]).last_hidden_state
        ours = encoder(video).last_hidden_state
        context = ours.gather(1, context_ids.unsqueeze(-1).expand(-1, -1, ours.shape[-1]))
        predicted = predictor(context, context_ids, target_ids, grid, mask_index=1)  # transformers' mask token
    assert_matches(ours, tokens)
    assert_matches(predicted, expected)

    # The SSL loader reads the same file to the same predictor.
    models = load_ssl_models(path, read_options=dict(variant="tiny", predictor_heads=4, img_size=64, num_frames=8))
    assert models.predictor.config.predictor_num_heads == 4 and models.target_encoder.config.num_frames == 8
