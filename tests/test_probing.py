"""Unit tests of hf_vjepa_area.probing: token layout, the multi-head grid, schedule, exact metrics."""

import copy
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from hf_vjepa_area import AttentiveClassifier, VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel
from hf_vjepa_area import probing


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def tiny_encoder(**overrides):
    return probing.build_demo_encoder(0, **overrides).eval()


# ---- token layout ----------------------------------------------------------------------------------


def test_group_views_concatenates_segments_per_view():
    batch, segments, views, n, d = 2, 3, 2, 4, 1
    # clip (b, s, v) token j carries the value 1000 b + 100 s + 10 v + j, clips segment-major per sample
    tokens = torch.tensor(
        [[[1000 * b + 100 * s + 10 * v + j] for j in range(n)] for b in range(batch) for s in range(segments) for v in range(views)],
        dtype=torch.float32,
    )
    out = probing.group_views(tokens, segments, views)
    assert out.shape == (batch, views, segments * n, d)
    for b in range(batch):
        for v in range(views):
            expected = [1000 * b + 100 * s + 10 * v + j for s in range(segments) for j in range(n)]
            assert out[b, v, :, 0].tolist() == expected
    with pytest.raises(ValueError, match="multiple"):
        probing.group_views(tokens[:-1], segments, views)


def test_encode_clips_equals_per_clip_encoding():
    encoder = tiny_encoder()
    segments, views = 2, 3
    clips = torch.randn(2, segments * views, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    out = probing.encode_clips(encoder, clips, segments, views)
    n = probing.tokens_per_clip(encoder.config, 4, 32)
    assert out.shape == (2, views, segments * n, encoder.config.embed_dim) and out.dtype == torch.float32
    for b in range(2):
        for v in range(views):
            expected = torch.cat([encoder.encode(clips[b, s * views + v][None]).last_hidden_state[0] for s in range(segments)])
            torch.testing.assert_close(out[b, v], expected, rtol=1e-5, atol=1e-5)
    chunked = probing.encode_clips(encoder, clips, segments, views, chunk_size=5)
    torch.testing.assert_close(chunked, out, rtol=1e-5, atol=1e-5)
    assert not torch.is_grad_enabled() or not out.requires_grad
    with pytest.raises(ValueError, match="S\\*V"):
        probing.encode_clips(encoder, clips, 4, 1)


# ---- encoders -------------------------------------------------------------------------------------


def test_demo_encoder_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = probing.load_encoder(None), probing.load_encoder(None)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    assert a.config.area_splits == [2, 2, 1] and a.config.area_layers == [0, 1, 2]
    full = probing.load_encoder(None, full_attention=True)
    assert full.config.area_splits is None and not any(block.attn.area for block in full.blocks)
    some = probing.load_encoder(None, area_layers="0:2")
    assert [block.attn.area for block in some.blocks] == [True, True, False, False]


def test_with_area_rebuilds_and_normalises_the_config():
    config = VJEPA2AreaConfig(img_size=64, embed_dim=96, depth=4, num_heads=4, num_frames=8)
    area = probing.with_area(config, area_splits=(2, 1, 1), area_layers="1:3")
    assert area.area_splits == [2, 1, 1] and area.area_layers == [1, 2] and area.embed_dim == 96
    assert probing.with_area(area, area_splits=(1, 2, 2)).area_layers == [1, 2]  # keeps the layers it had
    assert probing.with_area(config, area_splits=(2, 2, 1)).area_layers == [0, 1, 2]  # default 75%
    assert probing.with_area(area, full_attention=True).area_layers == []
    assert probing.with_area(config) is config
    with pytest.raises(ValueError, match="full_attention"):
        probing.with_area(config, area_splits=(2, 2, 1), full_attention=True)
    with pytest.raises(ValueError, match="area_layers needs"):
        probing.with_area(config, area_layers="0:2")


def test_load_encoder_from_a_folder_with_area_overrides(tmp_path):
    full = VJEPA2AreaModel(VJEPA2AreaConfig(img_size=32, embed_dim=48, depth=4, num_heads=4, num_frames=4))
    full.save_pretrained(tmp_path / "enc")
    area = probing.load_encoder(str(tmp_path / "enc"), area_splits=(2, 1, 1), area_layers="0:3")
    assert area.config.area_splits == [2, 1, 1] and [b.attn.area for b in area.blocks] == [True, True, True, False]
    same = probing.load_encoder(str(tmp_path / "enc"))
    assert same.config.area_splits is None
    for key, value in full.state_dict().items():
        assert torch.equal(area.state_dict()[key], value) and torch.equal(same.state_dict()[key], value)
    assert not any(p.requires_grad for p in area.parameters())
    with pytest.raises(ValueError, match="cannot load"):
        probing.load_encoder(str(tmp_path / "nothing-here"))


def test_load_encoder_points_a_transformers_folder_at_the_converter_as_the_cli_takes_it(tmp_path):
    from hf_vjepa_area.conversion.cli import build_parser

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "vjepa2"}))
    with pytest.raises(ValueError, match="not a vjepa2_area one") as error:
        probing.load_encoder(str(tmp_path / "hf"))
    message = error.value.args[0]
    command = message.split("`")[1].split()
    assert command[0] == "vjepa2-area-convert"
    args = build_parser().parse_args(command[1:])  # a command the CLI accepts as written
    assert (args.source, args.output, args.verify) == (str(tmp_path / "hf"), "OUTPUT_DIR", True)
    guide = message.split("(see ")[1].split(")")[0]
    assert (REPO / guide).is_file(), guide


def test_load_encoder_timm_name_with_area_options():
    encoder = probing.load_encoder("vjepa2_vitt", pretrained=False, area_splits=(2, 2, 1), area_layers="0:6")
    assert encoder.config.area_splits == [2, 2, 1] and encoder.config.area_layers == list(range(6))
    assert hasattr(encoder, "encode") and not encoder.training
    full = probing.load_encoder("vjepa2_vitt_area", pretrained=False, full_attention=True)
    assert full.config.area_layers == [] and not any(block.attn.area for block in full.blocks)


# ---- the probe grid, optimizer and schedule -----------------------------------------------------------


def test_hparam_grid_is_weight_decay_major_like_vjepa2():
    specs = probing.hparam_grid(probing.K400_LRS, probing.K400_WEIGHT_DECAYS)
    assert len(specs) == 20
    assert (specs[0].lr, specs[0].weight_decay) == (0.005, 0.01) and (specs[5].lr, specs[5].weight_decay) == (0.005, 0.1)
    assert specs[-1].name == "lr0.0001_wd0.8"
    with pytest.raises(ValueError):
        probing.hparam_grid([], [0.1])


def make_probe(specs, dim=24, classes=3, depth=2):
    torch.manual_seed(0)
    return probing.MultiHeadProbe(dim, classes, specs, num_heads=4, depth=depth)


def test_multi_head_probe_shapes_and_heads_are_attentive_classifiers():
    specs = probing.hparam_grid([1e-3, 3e-4], [0.01])
    probe = make_probe(specs)
    logits = probe(torch.randn(5, 3, 7, 24))
    assert logits.shape == (2, 5, 3, 3)
    assert all(isinstance(h, AttentiveClassifier) for h in probe.heads)
    assert set(probe.heads[0].state_dict()) >= {"pooler.query_tokens", "linear.weight", "linear.bias"}
    probe.activation_checkpointing = True
    x = torch.randn(5, 3, 7, 24)
    torch.testing.assert_close(probe(x), make_probe(specs)(x))


def test_optimizer_has_one_group_per_head_with_its_lr_and_wd():
    specs = probing.hparam_grid([0.005, 0.001], [0.01, 0.4])
    probe = make_probe(specs)
    opt = probing.build_optimizer(probe)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 4
    for group, spec, head in zip(opt.param_groups, specs, probe.heads):
        assert (group["lr"], group["weight_decay"]) == (spec.lr, spec.weight_decay)
        assert {id(p) for p in group["params"]} == {id(p) for p in head.parameters()}

    opt = probing.build_optimizer(probe, exclude_bias_and_norm=True)
    assert len(opt.param_groups) == 8
    covered = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(covered) == sorted(id(p) for p in probe.parameters())
    names = {id(p): n for n, p in probe.named_parameters()}
    for group in opt.param_groups:
        spec = specs[group["head"]]
        assert group["lr"] == spec.lr
        no_decay = [names[id(p)] for p in group["params"] if p.ndim <= 1 or names[id(p)].endswith("query_tokens")]
        if group["weight_decay"] == 0.0:
            assert len(no_decay) == len(group["params"]) and any("query_tokens" in n for n in no_decay)
        else:
            assert group["weight_decay"] == spec.weight_decay and not no_decay


def test_one_optimizer_equals_one_adamw_per_head():
    """Summed per-head losses + one AdamW with per-head groups = V-JEPA 2's separate optimizers."""
    specs = probing.hparam_grid([0.005, 0.001], [0.01, 0.8])
    probe = make_probe(specs)
    separate = [copy.deepcopy(h) for h in probe.heads]
    opt = probing.build_optimizer(probe)
    opts = [torch.optim.AdamW(h.parameters(), lr=s.lr, weight_decay=s.weight_decay) for h, s in zip(separate, specs)]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(4, 1, 6, 24, generator=gen), torch.randint(0, 3, (4,), generator=gen)
        probing.per_sample_loss(probe(x), y).mean(1).sum().backward()
        opt.step()
        opt.zero_grad()
        for head, o in zip(separate, opts):
            torch.nn.functional.cross_entropy(head(x[:, 0]), y).backward()
            o.step()
            o.zero_grad()
    for head, ref in zip(probe.heads, separate):
        for a, b in zip(head.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_warmup_cosine_schedule():
    cosine = probing.WarmupCosine(total_steps=10)
    values = [cosine(k) for k in range(10)]
    assert values[-1] == pytest.approx(0.0, abs=1e-12)  # V-JEPA 2 ends on final_lr at the last step
    assert values[0] == pytest.approx(0.5 * (1 + math.cos(math.pi / 10)))
    assert all(a > b for a, b in zip(values, values[1:]))
    warm = probing.WarmupCosine(total_steps=10, warmup_steps=4)
    assert [warm(k) for k in range(3)] == [0.25, 0.5, 0.75] and warm(3) == pytest.approx(1.0)

    probe = make_probe(probing.hparam_grid([0.01, 0.001], [0.1]))
    opt = probing.build_optimizer(probe)
    sched = probing.build_scheduler(opt, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [l[0] for l in lrs] == pytest.approx([0.01 * v for v in values])
    assert [l[1] for l in lrs] == pytest.approx([0.001 * v for v in values])
    # a checkpointed schedule resumes at the same step
    fresh = probing.build_scheduler(probing.build_optimizer(probe), total_steps=10)
    fresh.load_state_dict(sched.state_dict())
    assert fresh.last_epoch == 10


# ---- losses, predictions and metrics ------------------------------------------------------------------


def test_per_sample_loss_and_view_averaged_prediction():
    logits = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))  # [H, B, V, K]
    labels = torch.tensor([0, 4, 2])
    loss = probing.per_sample_loss(logits, labels)
    assert loss.shape == (2, 3)
    for h in range(2):
        for b in range(3):
            expected = torch.stack([torch.nn.functional.cross_entropy(logits[h, b, v], labels[b]) for v in range(4)]).mean()
            torch.testing.assert_close(loss[h, b], expected)
    probs = probing.view_averaged_probs(logits)
    torch.testing.assert_close(probs, logits.softmax(-1).mean(2))


def test_dedupe_and_summary_with_padding_and_skipped_samples():
    # Two "processes": uneven batches (a skipped video on rank 1) and padding repeats of samples 0 and 1.
    rank0 = {"indices": torch.tensor([0, 2, 4, 0]), "labels": torch.tensor([1, 0, 1, 1]),
             "preds": torch.tensor([[1, 0], [0, 0], [1, 0], [1, 0]]), "losses": torch.tensor([[0.1, 1.0]] * 4)}  # fmt: skip
    rank1 = {"indices": torch.tensor([3, 1]), "labels": torch.tensor([0, 1]),
             "preds": torch.tensor([[0, 0], [1, 1]]), "losses": torch.tensor([[0.3, 3.0], [0.2, 2.0]])}  # fmt: skip
    merged = {k: torch.cat([rank0[k], rank1[k]]) for k in rank0}
    records = probing.dedupe_records(merged)
    assert records["indices"].tolist() == [0, 1, 2, 3, 4]
    summary = probing.summarize_records(records)
    assert summary["num_samples"] == 5
    assert summary["top1"] == pytest.approx([100.0, 60.0])  # head 0: all right; head 1: 0 and 4 wrong
    assert summary["loss"] == pytest.approx([(0.1 * 3 + 0.2 + 0.3) / 5, (1.0 * 3 + 2.0 + 3.0) / 5])
    # the same samples in any order and sharding give the same summary
    shuffled = {k: v.flip(0) for k, v in merged.items()}
    assert probing.summarize_records(probing.dedupe_records(shuffled)) == summary


def test_gather_records_single_process_dedupes(accelerator):
    records = probing.new_records()
    logits = torch.randn(2, 3, 1, 4)
    probing.add_records(records, torch.tensor([5, 1, 5]), torch.tensor([0, 1, 0]), logits)
    stacked = probing.stack_records(records, 2)
    gathered = probing.gather_records(stacked)
    assert gathered["indices"].tolist() == [1, 5] and gathered["preds"].shape == (2, 2)
    empty = probing.summarize_records(probing.gather_records(probing.stack_records(probing.new_records(), 2)))
    assert empty["num_samples"] == 0


def test_sharded_batch_sampler_splits_global_batches_without_padding():
    n, per_rank = 11, 2
    for world in (1, 2, 3):
        shards = [probing.ShardedBatchSampler(n, per_rank, rank=r, num_replicas=world, shuffle=True, seed=3) for r in range(world)]
        single = probing.ShardedBatchSampler(n, per_rank * world, shuffle=True, seed=3)
        for epoch in (0, 1):
            for s in shards + [single]:
                s.set_epoch(epoch)
            per_rank_batches = [list(s) for s in shards]
            assert len({len(b) for b in per_rank_batches}) == 1 == len({len(s) for s in shards})
            steps = [sum(batches, []) for batches in zip(*per_rank_batches)]
            assert steps == list(single)  # the same samples in the same global steps
            assert sorted(sum(steps, [])) == list(range(n))  # each sample once, no padding
    a, b = probing.ShardedBatchSampler(n, 4, shuffle=True), probing.ShardedBatchSampler(n, 4, shuffle=True)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(probing.ShardedBatchSampler(5, 2)) == [[0, 1], [2, 3], [4]]
    assert list(probing.ShardedBatchSampler(5, 2, rank=0, num_replicas=2)) == [[0, 1], [4]]
    assert list(probing.ShardedBatchSampler(5, 2, rank=1, num_replicas=2)) == [[2, 3], []]  # joins with an empty batch


def test_seeded_samples_depend_only_on_seed_epoch_and_index():
    class Draws(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3)

    data = probing.SeededSamples(Draws(), seed=7)
    state = torch.random.get_rng_state()
    forward = [data[i] for i in range(4)]
    backward = [data[i] for i in reversed(range(4))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert torch.equal(torch.random.get_rng_state(), state)
    data.set_epoch(1)
    assert not torch.equal(data[0], forward[0])
    assert not torch.equal(forward[0], forward[1])



def test_seeded_samples_make_the_k400_augmentation_reproducible():
    """TrainTransform draws from torch's global RNG (generator=None), which SeededSamples seeds per
    (seed, epoch, index): RandAugment, crop and erasing are the same in any order, process or resume."""
    from hf_vjepa_area.data.transforms import VJEPA2_K400_TRAIN, TrainTransform

    videos = torch.randint(0, 256, (6, 4, 3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    transform = TrainTransform(32, **VJEPA2_K400_TRAIN)

    class Clips(torch.utils.data.Dataset):
        def __len__(self):
            return len(videos)

        def __getitem__(self, i):
            return transform(videos[i])

    data = probing.SeededSamples(Clips(), seed=3)
    forward = [data[i] for i in range(6)]
    backward = [data[i] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert forward[0].shape == (1, 3, 4, 32, 32)
    data.set_epoch(1)
    assert not torch.equal(data[0], forward[0])


def test_model_card_states_the_training_augmentation():
    results = {
        "best_head": {"lr": 0.001, "weight_decay": 0.01, "val_top1": 50.0, "epoch": 20},
        "encoder": {"model": "demo", "area_splits": [2, 2, 2], "area_layers": [0, 1]},
        "data": {"num_classes": 4, "num_train": 8, "num_val": 4},
        "config": {"probe_depth": 1, "probe_heads": 4, "frames": 8, "frame_step": 2, "segments": 2, "views": 1,
                   "resolution": 32, "cache_features": False, "auto_augment": True, "erase_prob": 0.25},
    }  # fmt: skip
    card = probing.classifier_model_card(results)
    assert "- training augmentation: random resized crop, RandAugment on, random erasing p 0.25" in card
    results["config"].update(auto_augment=False, erase_prob=0.0)
    assert "RandAugment off, random erasing p 0\n" in probing.classifier_model_card(results)
    results["config"].update(cache_features=True)
    assert "- training augmentation: none" in probing.classifier_model_card(results)


# ---- training steps ---------------------------------------------------------------------------------


def _batches(features, labels, sizes, skipped_at=()):
    batches, start = [], 0
    for size in sizes:
        idx = list(range(start, start + size))
        kept = [i for i in idx if i not in skipped_at]
        batches.append({
            "features": features[kept] if kept else None, "labels": labels[kept], "indices": torch.tensor(kept, dtype=torch.long),
            "skipped_indices": [i for i in idx if i in skipped_at], "skipped_paths": [f"v{i}" for i in idx if i in skipped_at],
        })  # fmt: skip
        start += size
    return batches


def _train(accelerator, batches, grad_accum):
    specs = probing.hparam_grid([0.01, 0.001], [0.1])
    probe = make_probe(specs, depth=1)
    # SGD: AdamW's first step is g / (|g| + eps), which turns float-rounding-sized gradient differences on
    # near-zero entries into lr-sized ones and would hide what this checks (the gradient is the exact mean).
    opt = torch.optim.SGD(probe.parameters(), lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, probing.WarmupCosine(4))
    records, skipped = probing.train_one_epoch(
        accelerator, probe, opt, sched, batches, lambda b: b["features"], empty_tokens_shape=(1, 5, 24), grad_accum=grad_accum
    )
    return probe, records, skipped


def test_train_step_is_the_exact_mean_over_the_step_samples(accelerator):
    """One batch of 6 with skipped videos = the same samples in micro-batches 2+3+1 under grad_accum=3, the
    last micro-batch entirely skipped (that process joins the step with zeros and a zero loss)."""
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(12, 1, 5, 24, generator=gen), torch.randint(0, 3, (12,), generator=gen)
    skipped = {4, 5}
    big, big_records, big_skipped = _train(accelerator, _batches(features, labels, [6, 6], skipped), 1)
    small, small_records, small_skipped = _train(accelerator, _batches(features, labels, [2, 3, 1, 3, 3], skipped), 3)
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert big_records["indices"].tolist() == small_records["indices"].tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    assert sorted(big_skipped) == sorted(small_skipped) == [(4, "v4"), (5, "v5")]
    plain, _, _ = _train(accelerator, _batches(features, labels, [2, 3, 1, 3, 3], skipped), 1)
    assert not torch.allclose(plain.heads[0].linear.weight, big.heads[0].linear.weight)  # the check has teeth


def test_evaluate_collects_view_averaged_predictions(accelerator):
    specs = probing.hparam_grid([0.01], [0.1])
    probe = make_probe(specs, depth=1)
    features, labels = torch.randn(5, 3, 4, 24), torch.tensor([0, 1, 2, 0, 1])
    batches = _batches(features, labels, [3, 2], skipped_at={1})
    records, skipped = probing.evaluate(accelerator, probe, batches, lambda b: b["features"])
    kept = [0, 2, 3, 4]
    expected = probe(features[kept]).softmax(-1).mean(2).argmax(-1).T
    assert records["indices"].tolist() == kept and torch.equal(records["preds"], expected)
    assert skipped == [(1, "v1")]


# ---- feature cache and checkpoints ---------------------------------------------------------------------


def test_cached_features_computes_once_and_respects_the_spec(tmp_path, accelerator):
    calls = []

    def compute(indices):
        indices = list(indices)
        calls.append(indices)
        kept = [i for i in indices if i != 2]
        return {"features": torch.arange(len(kept) * 6, dtype=torch.float32).view(len(kept), 1, 2, 3),
                "labels": torch.tensor(kept) % 2, "indices": torch.tensor(kept), "skipped": [(2, "bad.mp4")]}  # fmt: skip

    path = tmp_path / "train.safetensors"
    first = probing.cached_features(path, {"a": 1}, compute, 4, accelerator)
    again = probing.cached_features(path, {"a": 1}, compute, 4, accelerator)
    assert calls == [[0, 1, 2, 3]] and first["indices"].tolist() == [0, 1, 3]
    assert torch.equal(first["features"], again["features"]) and again["skipped"] == [(2, "bad.mp4")]
    probing.cached_features(path, {"a": 2}, compute, 4, accelerator)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.safetensors"]  # shards merged and removed


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    probe = make_probe(probing.hparam_grid([0.01], [0.1]), depth=1)
    opt = probing.build_optimizer(probe)
    probe, opt = accelerator.prepare(probe, opt)
    root = tmp_path / "checkpoints"
    assert probing.find_checkpoint(root, "auto") is None
    for epoch in (1, 2, 3):
        probing.save_checkpoint(accelerator, root, epoch, {"epoch": epoch}, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["epoch_002", "epoch_003"]
    (root / ".tmp-epoch_004").mkdir()  # a save killed half way
    (root / "epoch_009").mkdir()  # a folder without the state file is not a checkpoint
    found = probing.find_checkpoint(root, "auto")
    assert found.name == "epoch_003" and probing.read_checkpoint_state(found) == {"epoch": 3}
    with pytest.raises(FileNotFoundError):
        probing.find_checkpoint(root, str(root / "epoch_009"))
    # Pruning counts complete checkpoints only: the stray epoch_009 sorts last but must not cost epoch_004.
    probing.save_checkpoint(accelerator, root, 4, {"epoch": 4}, keep=1)
    assert sorted(p.name for p in root.iterdir()) == ["epoch_004", "epoch_009"]
    assert probing.find_checkpoint(root, "auto").name == "epoch_004"


# ---- outputs ------------------------------------------------------------------------------------------


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
    folder = probing.save_classifier_folder(model, tmp_path / "clf", model_card="# card\n")
    loaded = VJEPA2AreaForVideoClassification.from_pretrained(folder).eval()
    assert loaded.config.id2label == {0: "left", 1: "right", 2: "up"} and loaded.config.probe_depth == 2
    assert loaded.config.area_splits == [2, 2, 1]
    clip = torch.randn(2, 3, 8, 64, 64)  # [B, C, T, H, W]
    with torch.no_grad():
        expected = head(encoder.encode(clip).last_hidden_state)
        logits = loaded(clip.transpose(1, 2)).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_push_classifier_calls_create_repo_and_upload_folder(tmp_path):
    folder = tmp_path / "clf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")

    class Recorder:
        def __init__(self):
            self.calls = []

        def create_repo(self, repo_id, **kwargs):
            self.calls.append(("create_repo", repo_id, kwargs))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs):
            self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))

    api = Recorder()
    info = probing.push_classifier(folder, "me/probe", private=True, api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][2]["private"] is True and api.calls[1][2]["folder_path"] == str(folder)
    assert info["repo_id"] == "me/probe"


def test_load_encoder_from_the_hub_by_id_and_through_timm(offline_hub):
    encoder = probing.load_encoder(offline_hub.encoder_id)
    for key, value in offline_hub.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value)
    from_classifier = probing.load_encoder(offline_hub.classifier_id, full_attention=True)  # the encoder of a probe repo
    assert from_classifier.config.area_splits is None and isinstance(from_classifier, VJEPA2AreaModel)
    for key, value in offline_hub.classifier.encoder.state_dict().items():
        assert torch.equal(from_classifier.state_dict()[key], value)
    via_timm = probing.load_encoder("hf-hub:" + offline_hub.encoder_id)
    clip = torch.randn(1, 3, 4, 32, 32)
    torch.testing.assert_close(via_timm.encode(clip).last_hidden_state, encoder.encode(clip).last_hidden_state)


def test_classifier_takes_the_probe_clip_size():
    encoder = tiny_encoder()
    head = AttentiveClassifier(96, 2, num_heads=4, depth=1)
    model = probing.build_classifier(encoder, head, ["a", "b"], frames=16, resolution=128)
    assert model.config.num_frames == 16 and model.config.img_size == [128, 128]
    for key, value in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)


def test_write_json_is_strict_json_even_with_nan(tmp_path):
    # A diverged head's NaN loss must not turn results.json into invalid JSON (bare NaN).
    path = tmp_path / "results.json"
    probing.write_json(path, {"loss": [0.5, float("nan")], "nested": {"top1": float("inf")}})

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"loss": [0.5, None], "nested": {"top1": None}}
