"""The example's run management: checkpoints, results.json, the plot, probe weights, the classifier repo.

In-process (the example's functions), on tiny probes: fast, and no subprocess needed.
"""

import json
import xml.etree.ElementTree as ET

import pytest
import torch

from hf_vjepa_area import AttentiveClassifier, VJEPA2AreaForVideoClassification, probing, sources
from hf_vjepa_area.hub import save_repo_folder

from .test_k400_probe import load_example

from tests.numerics import assert_matches

script = load_example("k400_probe")


def make_probe(specs, dim=24, classes=3, depth=2):
    torch.manual_seed(0)
    return probing.MultiHeadProbe(dim, classes, specs, num_heads=4, depth=depth)


def tiny_encoder():
    return sources.build_demo_encoder(0).eval()


def test_model_card_states_the_training_augmentation():
    results = {
        "best_head": {"lr": 0.001, "weight_decay": 0.01, "val_top1": 50.0, "epoch": 20},
        "encoder": {"model": "demo", "area_splits": [2, 2, 2], "area_layers": [0, 1]},
        "data": {"num_classes": 4, "num_train": 8, "num_val": 4}, "probe_out_layers": None,
        "global_batch_size": 256, "protocol_global_batch_size": 256, "matches_protocol_batch": True,
        "config": {"probe_depth": 1, "probe_heads": 4, "frames": 8, "frame_step": 2, "segments": 2, "views": 1,
                   "resolution": 32, "cache_features": False, "auto_augment": True, "erase_prob": 0.25},
    }  # fmt: skip
    card = script.classifier_model_card(results)
    assert "- training augmentation: random resized crop, RandAugment on, random erasing p 0.25" in card
    results["config"].update(auto_augment=False, erase_prob=0.0)
    assert "RandAugment off, random erasing p 0\n" in script.classifier_model_card(results)
    results["config"].update(cache_features=True)
    assert "- training augmentation: none" in script.classifier_model_card(results)
    assert "- probe input: the last block's tokens" in card and "- global batch 256 (V-JEPA 2's protocol)" in card
    results.update(probe_out_layers=[17, 19, 21, 23], global_batch_size=4, matches_protocol_batch=False)
    card = script.classifier_model_card(results)
    assert "- probe input: the tokens of blocks [17, 19, 21, 23], each through the final norm" in card
    assert "- global batch 4 (V-JEPA 2's protocol: 256)" in card


def test_accuracy_svg_is_valid_and_draws_every_head():
    curves = {"lr0.001_wd0.01": [20.0, 55.5, 80.0], "lr0.003_wd0.1": [30.0, float("nan"), 90.0], "x<&>": [10, 20, 30]}
    svg = script.accuracy_svg(curves, best="lr0.003_wd0.1")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 3
    texts = [t.text for t in root.findall(f"{ns}text")]
    assert "lr0.003_wd0.1 (best)" in texts and "x<&>" in texts
    ET.fromstring(script.accuracy_svg({"one": [42.0]}))  # a single epoch still renders


def test_save_probe_weights_uses_attentive_classifier_keys(tmp_path):
    from safetensors import safe_open

    specs = probing.hparam_grid([0.003], [0.4])
    probe = make_probe(specs)
    meta = script.head_metadata(specs[0], 0, probe.heads[0], ["a", "b", "c"], encoder="demo")
    script.save_probe_weights(tmp_path / "probe.safetensors", probe.heads[0], meta)
    with safe_open(str(tmp_path / "probe.safetensors"), "pt") as f:
        assert set(f.keys()) == set(probe.heads[0].state_dict())
        m = f.metadata()
    assert float(m["lr"]) == 0.003 and float(m["weight_decay"]) == 0.4 and json.loads(m["class_names"]) == ["a", "b", "c"]
    assert m["probe_depth"] == "2" and m["probe_num_heads"] == "4"
    head = AttentiveClassifier(24, 3, num_heads=4, depth=2)
    from safetensors.torch import load_file

    head.load_state_dict(load_file(str(tmp_path / "probe.safetensors")))


def test_probe_outputs_are_written_atomically(tmp_path, monkeypatch):
    """A write that fails half way leaves neither a partial file nor its temporary behind."""
    import safetensors.torch

    specs = probing.hparam_grid([0.003], [0.4])
    probe = make_probe(specs)
    target = tmp_path / "probe.safetensors"
    target.write_bytes(b"previous")

    def half_written(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        script.save_probe_weights(target, probe.heads[0], {"format": "pt"})
    with pytest.raises(OSError, match="disk full"):
        script.save_all_heads(tmp_path / "heads.safetensors", probe, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.safetensors"] and target.read_bytes() == b"previous"


def test_classifier_from_probe_round_trips(tmp_path):
    encoder = tiny_encoder()
    torch.manual_seed(0)
    head = AttentiveClassifier(96, 3, num_heads=4, depth=2).eval()
    model = script.build_classifier(encoder, head, ["left", "right", "up"])
    folder = save_repo_folder(model, tmp_path / "clf", model_card="# card\n")
    loaded = VJEPA2AreaForVideoClassification.from_pretrained(folder).eval()
    assert loaded.config.id2label == {0: "left", 1: "right", 2: "up"} and loaded.config.probe_depth == 2
    assert loaded.config.area_splits == [2, 2, 1]
    clip = torch.randn(2, 3, 8, 64, 64)  # [B, C, T, H, W]
    with torch.no_grad():
        expected = head(encoder.encode(clip).last_hidden_state)
        logits = loaded(clip.transpose(1, 2)).logits
    assert_matches(logits, expected)


def test_classifier_takes_the_probe_clip_size():
    encoder = tiny_encoder()
    head = AttentiveClassifier(96, 2, num_heads=4, depth=1)
    model = script.build_classifier(encoder, head, ["a", "b"], frames=16, resolution=128)
    assert model.config.num_frames == 16 and model.config.img_size == [128, 128]
    for key, value in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)


def test_epoch_estimate_times_the_pieces_and_scales_them():
    args = script.parse_args(["--model", "demo", "--train-csv", "t.csv", "--val-csv", "v.csv", "--frames", "8",
                              "--resolution", "64", "--lrs", "0.001", "0.0003", "--wds", "0.1", "--probe-heads", "4"])  # fmt: skip
    line = script.estimate_epoch(tiny_encoder(), args, probe_depth=1, num_classes=3, tokens=8192, checkpointing=False,
                                 num_train=10, num_val=4, world=1)  # fmt: skip
    assert line.startswith("estimated time per epoch on this CPU: ~") and "train 10 videos x" in line
    assert "2 heads over 8192 tokens per view" in line
