"""Unit tests of hf_vjepa_area.probing: token layout, the multi-head grid, schedule, exact metrics."""

import copy
import math
import types
from pathlib import Path

import pytest
import torch

from hf_vjepa_area import AttentiveClassifier
from hf_vjepa_area import probing, sources
from hf_vjepa_area.data import SkippedSample
from hf_vjepa_area.data.sampling import item_generator
from tests.numerics import FLOAT32_RTOL, approx, assert_differs, assert_matches


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def tiny_encoder(**overrides):
    return sources.build_demo_encoder(0, **overrides).eval()


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
            assert_matches(out[b, v], expected)
    chunked = probing.encode_clips(encoder, clips, segments, views, chunk_size=5)
    assert_matches(chunked, out)
    assert not torch.is_grad_enabled() or not out.requires_grad
    with pytest.raises(ValueError, match="S\\*V"):
        probing.encode_clips(encoder, clips, 4, 1)


def test_hparam_grid_is_weight_decay_major_like_vjepa2():
    specs = probing.hparam_grid([0.005, 0.003, 0.001, 0.0003, 0.0001], [0.01, 0.1, 0.4, 0.8])
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
    assert_matches(probe(x), make_probe(specs)(x))


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
    opts = [torch.optim.AdamW(h.parameters(), lr=s.lr, weight_decay=s.weight_decay, fused=True) for h, s in zip(separate, specs)]
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
            assert_matches(a, b)


def test_warmup_cosine_schedule():
    cosine = probing.WarmupCosine(total_steps=10)
    values = [cosine(k) for k in range(10)]
    assert values[-1] == approx(0.0)  # V-JEPA 2 ends on final_lr at the last step
    assert values[0] == approx(0.5 * (1 + math.cos(math.pi / 10)))
    assert all(a > b for a, b in zip(values, values[1:]))
    warm = probing.WarmupCosine(total_steps=10, warmup_steps=4)
    assert [warm(k) for k in range(3)] == [0.25, 0.5, 0.75] and warm(3) == approx(1.0)

    probe = make_probe(probing.hparam_grid([0.01, 0.001], [0.1]))
    opt = probing.build_optimizer(probe)
    sched = probing.build_scheduler(opt, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [l[0] for l in lrs] == approx([0.01 * v for v in values])
    assert [l[1] for l in lrs] == approx([0.001 * v for v in values])
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
            assert_matches(loss[h, b], expected)
    probs = probing.view_averaged_probs(logits)
    assert_matches(probs, logits.softmax(-1).mean(2))


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
    # head 0: all right; head 1: 0 and 4 wrong; from float32 records
    assert summary["top1"] == approx([100.0, 60.0], rtol=FLOAT32_RTOL)
    assert summary["loss"] == approx([(0.1 * 3 + 0.2 + 0.3) / 5, (1.0 * 3 + 2.0 + 3.0) / 5], rtol=FLOAT32_RTOL)
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
    # the pretraining clips' seed: item i of epoch e draws what item_generator(seed, e, i) draws
    assert torch.equal(data[2], torch.rand(3, generator=item_generator(7, 1, 2)))



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


# ---- training steps ---------------------------------------------------------------------------------


def _batches(features, labels, sizes, skipped_at=()):
    batches, start = [], 0
    for size in sizes:
        idx = list(range(start, start + size))
        kept = [i for i in idx if i not in skipped_at]
        batches.append({
            "features": features[kept] if kept else None, "labels": labels[kept], "indices": torch.tensor(kept, dtype=torch.long),
            "skipped_samples": [SkippedSample(i, f"v{i}", "unreadable") for i in idx if i in skipped_at],
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
        assert_matches(a, b)
    assert big_records["indices"].tolist() == small_records["indices"].tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    assert sorted((s.index, s.path) for s in big_skipped) == sorted((s.index, s.path) for s in small_skipped) == [
        (4, "v4"), (5, "v5")]
    plain, _, _ = _train(accelerator, _batches(features, labels, [2, 3, 1, 3, 3], skipped), 1)
    assert_differs(plain.heads[0].linear.weight, big.heads[0].linear.weight)  # the check has teeth


class GradientRecorder:
    """An optimizer stand-in that keeps each step's gradients (`train_one_epoch` divides them by the step's
    sample count before `step`) and changes no parameter, so every step's gradient can be compared."""

    def __init__(self, params):
        self.params, self.steps = list(params), []

    def step(self):
        self.steps.append([p.grad.clone() for p in self.params])

    def zero_grad(self, set_to_none=False):
        for p in self.params:
            p.grad.zero_()


@pytest.mark.parametrize("k", [2, 4])
def test_k_accumulated_micro_batches_give_the_whole_batchs_gradient(accelerator, k):
    """The global-batch protocol through accumulation: one optimizer step over k micro-batches of 3 has
    the gradient of one step on all 3k samples, per head (float64)."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(3 * k, 2, 5, 24, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (3 * k,), generator=gen)

    def gradient(sizes, grad_accum):
        probe = make_probe(probing.hparam_grid([0.01, 0.001], [0.1]), depth=1).double()
        recorder = GradientRecorder(probe.parameters())
        probing.train_one_epoch(accelerator, probe, recorder, types.SimpleNamespace(step=lambda: None),
                                _batches(features, labels, sizes), lambda b: b["features"], empty_tokens_shape=(2, 5, 24),
                                grad_accum=grad_accum)  # fmt: skip
        return recorder.steps

    (whole,), (accumulated,) = gradient([3 * k], 1), gradient([3] * k, k)
    for a, b in zip(accumulated, whole):
        assert_matches(a, b)
    separate = gradient([3] * k, 1)  # without accumulation: k steps, the first on 3 samples only
    assert len(separate) == k
    assert_differs(separate[0][0], whole[0])


class CountedIterations:
    """A loader that counts how often it is iterated (each DataLoader iteration starts its own workers)."""

    def __init__(self, batches):
        self.batches, self.iterations = batches, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.iterations += 1
        return iter(self.batches)


@pytest.mark.parametrize("progress", [False, True])
def test_each_loop_iterates_its_loader_once(accelerator, progress):
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(4, 1, 5, 24, generator=gen), torch.randint(0, 3, (4,), generator=gen)
    loader = CountedIterations(_batches(features, labels, [2, 2]))
    probe = make_probe(probing.hparam_grid([0.01], [0.1]), depth=1)
    opt = probing.build_optimizer(probe)
    sched = probing.build_scheduler(opt, 2)
    probing.train_one_epoch(accelerator, probe, opt, sched, loader, lambda b: b["features"], empty_tokens_shape=(1, 5, 24),
                            progress=progress)  # fmt: skip
    probing.evaluate(accelerator, probe, loader, lambda b: b["features"], progress=progress)
    assert loader.iterations == 2


def test_evaluate_collects_view_averaged_predictions(accelerator):
    specs = probing.hparam_grid([0.01], [0.1])
    probe = make_probe(specs, depth=1)
    features, labels = torch.randn(5, 3, 4, 24), torch.tensor([0, 1, 2, 0, 1])
    batches = _batches(features, labels, [3, 2], skipped_at={1})
    records, skipped = probing.evaluate(accelerator, probe, batches, lambda b: b["features"])
    kept = [0, 2, 3, 4]
    expected = probe(features[kept]).softmax(-1).mean(2).argmax(-1).T
    assert records["indices"].tolist() == kept and torch.equal(records["preds"], expected)
    assert [(s.index, s.path) for s in skipped] == [(1, "v1")]


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


# ---- one head at a time: memory and gradients ------------------------------------------------------------


@pytest.fixture
def meter(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from bench_probe import SavedTensorMeter

    return SavedTensorMeter


def _grid(heads: int) -> list:
    return probing.hparam_grid([10.0 ** -(i + 1) for i in range(heads)], [0.1])


def test_saved_for_backward_bytes_do_not_grow_with_the_number_of_heads(accelerator, meter):
    """The peak of tensors autograd holds for backward during a training step: one head's graph, for 1 or 20 heads."""
    gen = torch.Generator().manual_seed(0)
    tokens, labels = torch.randn(2, 3, 40, 24, generator=gen), torch.tensor([0, 2])
    peaks = {}
    for heads in (1, 20):
        probe = make_probe(_grid(heads))
        with meter() as saved:
            probing.backward_per_head(accelerator, probe, tokens, labels, loss_scale=1.0, sync=True)
        peaks[heads] = saved.peak
        assert saved.live == 0  # every graph freed by the end of the step
    assert peaks[1] > 0 and peaks[20] == peaks[1], peaks
    # the check has teeth: one backward over the summed losses (all graphs alive at once) holds 20 graphs
    probe = make_probe(_grid(20))
    with meter() as saved:
        probing.per_sample_loss(probe(tokens), labels).sum().backward()
    assert saved.peak > 15 * peaks[1]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_each_head_gets_the_gradient_it_gets_alone(accelerator, checkpointing):
    """20 heads trained one at a time: every head's gradient is bit for bit the gradient of that head alone
    (the same kernels on the same inputs), and equals one backward over the summed losses (the former way)."""
    gen = torch.Generator().manual_seed(1)
    tokens, labels = torch.randn(3, 2, 30, 24, generator=gen), torch.tensor([0, 1, 2])
    probe = make_probe(_grid(20))
    summed = copy.deepcopy(probe)
    probe.activation_checkpointing = checkpointing
    logits = probing.backward_per_head(accelerator, probe, tokens, labels, loss_scale=1.0, sync=True)
    assert logits.shape == (20, 3, 2, 3) and not logits.requires_grad
    for index in (0, 7, 19):
        alone = probing.MultiHeadProbe(24, 3, _grid(20)[index : index + 1], num_heads=4, depth=2)
        alone.heads[0].load_state_dict(summed.heads[index].state_dict())
        probing.backward_per_head(accelerator, alone, tokens, labels, loss_scale=1.0, sync=True)
        for (name, a), b in zip(probe.heads[index].named_parameters(), alone.heads[0].parameters()):
            if checkpointing:  # recomputed forward: the same kernels again, but allow reassociation
                assert_matches(a.grad, b.grad, msg=name)
            else:
                assert torch.equal(a.grad, b.grad), name
    probing.per_sample_loss(summed(tokens), labels).sum().backward()
    for a, b in zip(probe.parameters(), summed.parameters()):
        assert_matches(a.grad, b.grad)


def test_checkpointed_heads_save_less_and_give_the_same_outputs(meter):
    probe = make_probe(_grid(1), depth=4)
    tokens = torch.randn(2, 1, 64, 24, generator=torch.Generator().manual_seed(2))
    peaks = []
    for checkpointing in (False, True):
        probe.activation_checkpointing = checkpointing
        with meter() as saved:
            out = probe(tokens, head=0)
            out.sum().backward()
        peaks.append(saved.peak)
    assert_matches(out, probe(tokens, head=0))
    assert peaks[1] * 4 < peaks[0], peaks
    token_channels = 2 * 64 * 24
    assert probing.head_activation_bytes(token_channels, 4, True) < probing.head_activation_bytes(token_channels, 4)


def test_a_ddp_probe_must_allow_unused_heads():
    class FakeDDP(torch.nn.parallel.DistributedDataParallel):
        def __init__(self):  # no process group needed to check the flag
            torch.nn.Module.__init__(self)
            self.find_unused_parameters = False

    with pytest.raises(ValueError, match="find_unused_parameters=True"):
        probing._check_per_head_ddp(FakeDDP())


def test_two_processes_reduce_gradients_once_per_step_and_match_one(tmp_path):
    """torchrun, 2 CPU processes (gloo): the per-head passes under no_sync and one synced pass give the
    1-process parameters, with one bucket reduction per optimizer step (a DDP comm hook counts them)."""
    import subprocess
    import sys

    helper = Path(__file__).with_name("ddp_per_head.py")
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ACCELERATE_USE_CPU": "1"}
    outputs = {}
    for world in (1, 2):
        out = tmp_path / f"world{world}.pt"
        command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", str(world), str(helper), str(out)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-4000:]
        outputs[world] = torch.load(out)
    assert outputs[2]["reductions"] == outputs[2]["optimizer_steps"] == 3  # grad_accum 2 over 6 micro-batches
    for a, b in zip(outputs[1]["params"], outputs[2]["params"]):
        assert_matches(a, b)


# ---- frozen forward on uint8 clips, encoder errors --------------------------------------------------------


def test_encode_clips_normalizes_uint8_clips_on_their_device():
    from hf_vjepa_area.data import normalize

    encoder = tiny_encoder()
    pixels = torch.randint(0, 256, (1, 2, 3, 4, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = probing.encode_clips(encoder, pixels, 2, 1, chunk_size=1)
    expected = probing.encode_clips(encoder, normalize(pixels, channel_dim=2), 2, 1)
    assert_matches(ours, expected)
