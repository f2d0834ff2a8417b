"""What a probe run publishes and reports (`probing.publish`, `probing.report`): the plot, probe weights, the
classifier repo and its card, the CPU epoch estimate.

In-process, on tiny probes: fast, and no subprocess needed.
"""

import json
import xml.etree.ElementTree as ET

import pytest
import torch

from hf_vjepa_area import AttentiveClassifier, VJEPA2AreaForVideoClassification, probing, sources
from hf_vjepa_area.hub import save_repo_folder

from tests.numerics import assert_matches


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
    card = probing.classifier_model_card(results)
    assert "- training augmentation: random resized crop, RandAugment on, random erasing p 0.25" in card
    results["config"].update(auto_augment=False, erase_prob=0.0)
    assert "RandAugment off, random erasing p 0\n" in probing.classifier_model_card(results)
    results["config"].update(cache_features=True)
    assert "- training augmentation: none" in probing.classifier_model_card(results)
    assert "- probe input: the last block's tokens" in card and "- global batch 256 (V-JEPA 2's protocol)" in card
    results.update(probe_out_layers=[17, 19, 21, 23], global_batch_size=4, matches_protocol_batch=False)
    card = probing.classifier_model_card(results)
    assert "- probe input: the tokens of blocks [17, 19, 21, 23], each through the final norm" in card
    assert "- global batch 4 (V-JEPA 2's protocol: 256)" in card


def test_accuracy_svg_is_valid_and_draws_every_head():
    curves = {"lr0.001_wd0.01": [20.0, 55.5, 80.0], "lr0.003_wd0.1": [30.0, float("nan"), 90.0], "x<&>": [10, 20, 30]}
    svg = probing.accuracy_svg(curves, best="lr0.003_wd0.1")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 3
    texts = [t.text for t in root.findall(f"{ns}text")]
    assert "lr0.003_wd0.1 (best)" in texts and "x<&>" in texts
    ET.fromstring(probing.accuracy_svg({"one": [42.0]}))  # a single epoch still renders


def test_save_probe_weights_uses_attentive_classifier_keys(tmp_path):
    from safetensors import safe_open

    specs = probing.hparam_grid([0.003], [0.4])
    probe = make_probe(specs)
    meta = probing.head_metadata(specs[0], 0, probe.heads[0], ["a", "b", "c"], encoder="demo")
    probing.save_probe_weights(tmp_path / "probe.safetensors", probe.heads[0], meta)
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
        probing.save_probe_weights(target, probe.heads[0], {"format": "pt"})
    with pytest.raises(OSError, match="disk full"):
        probing.save_all_heads(tmp_path / "heads.safetensors", probe, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.safetensors"] and target.read_bytes() == b"previous"


def test_classifier_from_probe_round_trips(tmp_path):
    encoder = tiny_encoder()
    torch.manual_seed(0)
    head = AttentiveClassifier(96, 3, num_heads=4, depth=2).eval()
    model = probing.build_classifier(encoder, head, ["left", "right", "up"])
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
    model = probing.build_classifier(encoder, head, ["a", "b"], frames=16, resolution=128)
    assert model.config.num_frames == 16 and model.config.img_size == [128, 128]
    for key, value in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)


def test_epoch_estimate_times_the_pieces_and_scales_them():
    line = probing.estimate_epoch(tiny_encoder(), frames=8, resolution=64, segments=8, views=3, num_heads=2, probe_heads=4,
                                  probe_depth=1, num_classes=3, tokens=8192, checkpointing=False, num_train=10, num_val=4,
                                  world=1)  # fmt: skip
    assert line.startswith("estimated time per epoch on this CPU: ~") and "train 10 videos x" in line
    assert "2 heads over 8192 tokens per view" in line


def test_batching_reproduces_the_protocols_global_batch_on_any_process_count():
    assert probing.resolve_batching("k400", 256, 4, 1) == dict(grad_accum=64, global_batch_size=256,
                                                                protocol_global_batch_size=256, matches_protocol_batch=True)  # fmt: skip
    assert probing.resolve_batching("k400", 256, 4, 8)["grad_accum"] == 8
    assert probing.resolve_batching("k400", 256, 4, 64)["grad_accum"] == 1
    assert probing.resolve_batching("diving48", 128, 2, 2)["grad_accum"] == 32  # 2 x 2 x 32 = 128
    assert "V-JEPA 2's k400 protocol (256)" in probing.batching_line("k400", 4, 1, probing.resolve_batching("k400", 256, 4, 1))
    with pytest.raises(ValueError, match="global batch 256 .* not a multiple of --batch-size 4 x 3 process"):
        probing.resolve_batching("k400", 256, 4, 3)
    own = probing.resolve_batching("k400", 256, 4, 3, grad_accum=2)  # an explicit accumulation wins, and the log says so
    assert own["global_batch_size"] == 24 and not own["matches_protocol_batch"]
    assert "NOT V-JEPA 2's k400 protocol (256" in probing.batching_line("k400", 4, 3, own)
    assert probing.resolve_batching("demo", None, 8, 2) == dict(grad_accum=1, global_batch_size=16,
                                                                 protocol_global_batch_size=None, matches_protocol_batch=False)  # fmt: skip
    assert "(no V-JEPA 2 protocol for this preset)" in probing.batching_line("demo", 8, 2, probing.resolve_batching("demo", None, 8, 2))


def test_results_follow_the_history_and_pick_the_best_head_of_the_last_epoch():
    specs = probing.hparam_grid([0.003, 0.001], [0.1])
    history = {}
    epochs = [([80.0, 60.0], [0.5, 0.7]), ([70.0, 90.0], [0.4, 0.3])]  # head 0 leads, then head 1
    for top1, loss in epochs:
        summary = {"num_samples": 10, "top1": top1, "loss": loss}
        best = probing.add_epoch(history, summary, summary)
    assert best == 1 and history["val_top1"] == [[80.0, 60.0], [70.0, 90.0]] and history["num_train"] == [10, 10]
    skipped = {"train": {3: "a.mp4", 7: "b.mp4"}, "val": {1: "a.mp4"}}
    config = {"model": "demo", "train_csv": "/t.csv", "val_csv": "/v.csv"}
    results = probing.build_results(config, specs, history, skipped, tiny_encoder(), ["x", "y"], num_classes=2, num_train=12,
                                    num_val=5, world=2, seconds=1.26, batching={"grad_accum": 1}, out_layers=None)  # fmt: skip
    assert results["best_head"] == dict(index=1, name="lr0.001_wd0.1", lr=0.001, weight_decay=0.1, val_top1=90.0, epoch=2)
    assert results["val_top1_best_per_epoch"] == [80.0, 90.0] and results["heads"][0]["val_loss"] == [0.5, 0.4]
    assert results["skipped_videos"] == {"train": {"count": 2, "paths": ["a.mp4", "b.mp4"]},
                                         "val": {"count": 1, "paths": ["a.mp4"]}, "total": 3}  # fmt: skip
    assert results["encoder"]["library"] == "transformers" and results["wall_time_s"] == 1.3 and results["grad_accum"] == 1
    scalars = probing.epoch_scalars(specs, {"loss": [0.4, 0.3]}, {"top1": [70.0, 90.0]}, skipped=3)
    assert scalars == {"val_top1/lr0.003_wd0.1": 70.0, "val_top1/lr0.001_wd0.1": 90.0, "train_loss/lr0.003_wd0.1": 0.4,
                       "train_loss/lr0.001_wd0.1": 0.3, "val_top1/best": 90.0, "skipped_videos": 3}  # fmt: skip


def test_a_classifier_folder_is_replaced_only_when_a_probe_wrote_it(tmp_path):
    """--save-classifier never deletes what a probe did not write: an anneal's model folder or the user's
    files are refused even with --overwrite / --resume; a probe's classifier needs one of them."""
    probing.check_classifier_folder(tmp_path / "new", replace=False)
    (tmp_path / "empty").mkdir()
    probing.check_classifier_folder(tmp_path / "empty", replace=False)
    foreign = tmp_path / "model"
    foreign.mkdir()
    (foreign / "predictor.safetensors").write_bytes(b"weights")
    for replace in (False, True):
        with pytest.raises(SystemExit, match="holds files that no probe wrote"):
            probing.check_classifier_folder(foreign, replace=replace)
    earlier = tmp_path / "classifier"
    earlier.mkdir()
    (earlier / probing.CLASSIFIER_RESULTS).write_text("{}")
    with pytest.raises(SystemExit, match="pass --overwrite"):
        probing.check_classifier_folder(earlier, replace=False)
    probing.check_classifier_folder(earlier, replace=True)
    assert (foreign / "predictor.safetensors").read_bytes() == b"weights"
