"""Key tables: both directions from one table, exact round trips, fused row order, prefix stripping."""

import pytest
import torch

from hf_vjepa_area.conversion.keys import (
    hf_dropped_prefixes,
    hf_sections,
    original_probe_to_ours,
    ours_to_theirs,
    strip_original_prefixes,
    theirs_to_ours,
)


def test_encoder_round_trip_is_exact(tiny_encoder):
    ours = tiny_encoder.state_dict()
    theirs = ours_to_theirs(ours, hf_sections(False))
    assert not theirs.unexpected
    assert "encoder.layer.1.attention.query.weight" in theirs.state_dict
    assert "encoder.embeddings.patch_embeddings.proj.weight" in theirs.state_dict
    assert "encoder.layernorm.bias" in theirs.state_dict
    back = theirs_to_ours(theirs.state_dict, hf_sections(False))
    assert not (back.unexpected or back.missing)
    assert back.state_dict.keys() == ours.keys()
    assert all(torch.equal(back.state_dict[k], ours[k]) for k in ours)


def test_classifier_round_trip_is_exact(tiny_classifier):
    ours = tiny_classifier.state_dict()
    theirs = ours_to_theirs(ours, hf_sections(True))
    assert not theirs.unexpected
    for key in (
        "vjepa2.encoder.layer.0.attention.value.bias",
        "pooler.query_tokens",
        "pooler.cross_attention_layer.cross_attn.v_proj.weight",
        "pooler.self_attention_layers.0.self_attn.out_proj.weight",
        "classifier.weight",
    ):
        assert key in theirs.state_dict, key
    back = theirs_to_ours(theirs.state_dict, hf_sections(True))
    assert back.state_dict.keys() == ours.keys()
    assert all(torch.equal(back.state_dict[k], ours[k]) for k in ours)


def test_fused_rows_are_query_key_value_in_order():
    dim = 4
    q, k, v = (torch.full((dim, dim), float(i)) for i in range(3))
    theirs = {
        "encoder.layer.0.attention.query.weight": q,
        "encoder.layer.0.attention.key.weight": k,
        "encoder.layer.0.attention.value.weight": v,
    }
    fused = theirs_to_ours(theirs, hf_sections(False)).state_dict["blocks.0.attn.qkv.weight"]
    assert torch.equal(fused, torch.cat([q, k, v]))
    kv = theirs_to_ours(
        {
            "pooler.cross_attention_layer.cross_attn.k_proj.bias": torch.zeros(dim),
            "pooler.cross_attention_layer.cross_attn.v_proj.bias": torch.ones(dim),
        },
        hf_sections(True),
    ).state_dict["head.pooler.cross_attention_block.xattn.kv.bias"]
    assert torch.equal(kv, torch.cat([torch.zeros(dim), torch.ones(dim)]))


def test_incomplete_fused_group_and_unknown_keys_are_reported():
    theirs = {
        "encoder.layer.0.attention.query.weight": torch.zeros(2, 2),
        "encoder.layer.0.attention.key.weight": torch.zeros(2, 2),
        "encoder.something_else": torch.zeros(1),
        "predictor.layer.0.norm1.weight": torch.zeros(2),
    }
    out = theirs_to_ours(theirs, hf_sections(False), hf_dropped_prefixes(False))
    assert out.missing == ["encoder.layer.0.attention.value.weight"]
    assert out.unexpected == ["encoder.something_else"]
    assert out.dropped == ["predictor.layer.0.norm1.weight"]
    assert "blocks.0.attn.qkv.weight" not in out.state_dict


@pytest.mark.parametrize("prefix", ["module.backbone.", "module.", "backbone.", ""])
def test_original_prefixes_are_stripped(prefix):
    sd = {prefix + "blocks.0.norm1.weight": torch.ones(2), prefix + "norm.bias": torch.zeros(2)}
    assert sorted(strip_original_prefixes(sd)) == ["blocks.0.norm1.weight", "norm.bias"]


def test_probe_keys_move_under_head():
    probe = {"module.pooler.query_tokens": torch.zeros(1, 1, 4), "module.linear.weight": torch.zeros(3, 4), "module.oops": torch.zeros(1)}
    out = original_probe_to_ours(probe)
    assert sorted(out.state_dict) == ["head.linear.weight", "head.pooler.query_tokens"]
    assert out.unexpected == ["oops"]
