"""End to end: `examples/ssl_anneal.py` as CI runs it (subprocesses, CPU, a tiny model and videos).

- a tiny anneal from a model folder writes a model folder that `VJEPA2AreaModel.from_pretrained` loads (the
  EMA target encoder, the checkpoint's) and `examples/k400_probe.py --model` probes;
- a run killed (SIGKILL) after a checkpoint and resumed ends with the uninterrupted run's losses;
- 2 processes (`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2`) at the same global batch = 1 process;
- a model without predictor weights gets a one-line error (and trains with `--init-predictor random`);
- an existing output dir is not overwritten without `--overwrite`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.examples.test_k400_probe import BIN, REPO, env, run
from tests.numerics import FLOAT32_RTOL, approx, assert_differs, assert_matches

SCRIPT = REPO / "examples" / "ssl_anneal.py"
PROBE = REPO / "examples" / "k400_probe.py"
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None

# Patch 8 at 48 px: a 6 x 6 grid, room for V-JEPA 2's blocks; 4 frames / tubelet 2 = 2 time steps.
TINY_MODEL = dict(embed_dim=24, depth=2, num_heads=2, img_size=48, patch_size=8, num_frames=4, area_splits=(2, 2, 1),
                  predictor_embed_dim=16, predictor_depth=1, predictor_num_heads=2, predictor_num_mask_tokens=2)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    """A model folder with predictor weights, the same without, and 8 videos (24 frames, 48 px, 8 fps)."""
    from safetensors.torch import save_file

    from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaModel, VJEPA2AreaPredictor
    from hf_vjepa_area.data import make_synthetic_video_dataset
    from hf_vjepa_area.hub import save_repo_folder

    root = tmp_path_factory.mktemp("ssl_inputs")
    torch.manual_seed(0)
    config = VJEPA2AreaConfig(**TINY_MODEL)
    without = save_repo_folder(VJEPA2AreaModel(config), root / "no_predictor")
    model = save_repo_folder(VJEPA2AreaModel.from_pretrained(without), root / "model")
    predictor = VJEPA2AreaPredictor(config)
    torch.nn.init.normal_(predictor.mask_tokens[0], std=0.02)
    save_file(predictor.state_dict(), str(model / "predictor.safetensors"))
    data = make_synthetic_video_dataset(root / "videos", num_classes=4, videos_per_class=3, frames=24, size=48)
    # The anneal's manifest: the 8 train videos and a corrupt file, which must be skipped, counted and replaced.
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 4)
    (root / "videos" / "ssl.csv").write_text(data.train_manifest.read_text() + "broken.mp4 0\n")
    return dict(model=model, no_predictor=without, ssl=root / "videos" / "ssl.csv", train=data.train_manifest,
                val=data.val_manifest, root=root)  # fmt: skip


def tiny_args(inputs: dict, output: Path, batch_size: int, *extra: str, model: str = "model") -> list[str]:
    return [
        "--model", str(inputs[model]), "--train-csv", str(inputs["ssl"]), "--frames", "4", "--resolution", "48",
        "--batch-size", str(batch_size), "--steps", "6", "--checkpoint-every", "3", "--lr", "1e-3", "--ema", "0.99",
        "--num-workers", "0", "--no-progress", "--output-dir", str(output), *extra,
    ]  # fmt: skip


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.fixture(scope="module")
def reference(tiny_inputs, tmp_path_factory):
    """One process, global batch 2, uninterrupted, with TensorBoard."""
    out = tmp_path_factory.mktemp("reference") / "run"
    args = tiny_args(tiny_inputs, out, 2, "--report-to", "tensorboard" if HAS_TENSORBOARD else "none")
    return out, run([sys.executable, str(SCRIPT), *args], cwd=out.parent)


def test_tiny_anneal_writes_the_target_encoder_and_predictor(tiny_inputs, reference):
    from hf_vjepa_area import VJEPA2AreaModel, VJEPA2AreaPredictor, ssl

    out, result = reference
    summary = results(out)
    assert summary["steps"] == 6 and summary["global_batch_size"] == 2
    # With seed 0 the corrupt video is among the clips of the 6 steps: skipped, counted, replaced by a seeded draw.
    assert summary["skipped_videos"]["count"] == 1 and summary["skipped_videos"]["paths"][0].endswith("broken.mp4")
    assert result.stderr.count("skipping video") == 1 and "broken.mp4" in result.stderr  # named once, with its reason
    history = summary["history"]
    assert len(history["loss"]) == 6 and all(len(pair) == 2 for pair in history["loss_per_mask"])
    assert all(torch.isfinite(torch.tensor(history["loss"])))
    assert history["lr"] == approx([ssl.learning_rate(i, 6, 1e-3, 1e-6) for i in range(6)])
    assert history["lr"][-1] == approx(1e-6) and history["momentum"] == [0.99] * 6
    assert "Annealed target encoder" in result.stdout
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000006"]

    folder = out / "model"
    model = VJEPA2AreaModel.from_pretrained(folder)
    assert model.config.area_splits == [2, 2, 1]
    # The folder's encoder is the EMA target encoder, not the trained context encoder.
    saved_target = torch.load(out / "checkpoints" / "step_000006" / "custom_checkpoint_0.pkl", weights_only=True)
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved_target[name]), name
    initial = VJEPA2AreaModel.from_pretrained(tiny_inputs["model"]).state_dict()
    assert not torch.equal(initial["blocks.0.attn.qkv.weight"], model.state_dict()["blocks.0.attn.qkv.weight"])
    predictor = VJEPA2AreaPredictor(model.config)
    predictor.load_state_dict(load_file(str(folder / "predictor.safetensors")))


def test_the_probe_takes_the_annealed_folder_as_it_is(tiny_inputs, reference, tmp_path):
    out = tmp_path / "probe"
    probe = [
        "--model", str(reference[0] / "model"), "--train-csv", str(tiny_inputs["train"]), "--val-csv",
        str(tiny_inputs["val"]), "--frames", "4", "--frame-step", "2", "--segments", "1", "--views", "1",
        "--resolution", "48", "--epochs", "1", "--batch-size", "4", "--lrs", "0.001", "--wds", "0.01",
        "--probe-depth", "1", "--probe-heads", "2", "--num-workers", "0", "--no-progress", "--output-dir", str(out),
    ]  # fmt: skip
    run([sys.executable, str(PROBE), *probe], cwd=tmp_path)
    assert results(out)["encoder"]["area_splits"] == [2, 2, 1]


def test_killed_run_resumes_to_the_uninterrupted_losses(tiny_inputs, reference, tmp_path):
    out = tmp_path / "run"
    killer = Path(__file__).with_name("kill_after_checkpoint.py")
    killed = subprocess.run([sys.executable, str(killer), str(SCRIPT), "3", *tiny_args(tiny_inputs, out, 2)],
                            cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000003"]
    assert not (out / "results.json").exists()
    refused = subprocess.run([sys.executable, str(SCRIPT), *tiny_args(tiny_inputs, out, 2)], cwd=tmp_path, env=env(),
                             capture_output=True, text=True, timeout=240)  # fmt: skip
    assert refused.returncode != 0 and "pass --resume to continue it or --overwrite" in refused.stderr
    resumed = run([sys.executable, str(SCRIPT), *tiny_args(tiny_inputs, out, 2, "--resume")], cwd=tmp_path)
    assert "resumed from" in resumed.stdout and "step_000003" in resumed.stdout
    assert results(out)["history"]["loss_per_mask"] == results(reference[0])["history"]["loss_per_mask"]  # exactly
    resumed_model, reference_model = (load_file(str(p / "model" / "model.safetensors")) for p in (out, reference[0]))
    assert all(torch.equal(resumed_model[k], reference_model[k]) for k in reference_model)


def test_two_processes_train_like_one_at_the_same_global_batch(tiny_inputs, reference, tmp_path):
    out = tmp_path / "run"
    result = run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(SCRIPT), *tiny_args(tiny_inputs, out, 1)],
                 cwd=tmp_path)  # fmt: skip
    assert result.stderr.count("skipping video") == 1  # by the main process, after gathering both processes' skips
    one, two = results(reference[0]), results(out)
    assert (one["num_processes"], two["num_processes"], two["global_batch_size"]) == (1, 2, 2)
    # The same clips and masks every step; gradients averaged over 2 processes instead of summed in one
    # differ in the last float32 bits, compounded over 6 steps.
    for a, b in zip(one["history"]["loss_per_mask"], two["history"]["loss_per_mask"]):
        assert b == approx(a, rtol=FLOAT32_RTOL)


def test_a_model_without_predictor_weights(tiny_inputs, tmp_path):
    out = tmp_path / "run"
    failed = subprocess.run([sys.executable, str(SCRIPT), *tiny_args(tiny_inputs, out, 2, model="no_predictor")],
                            cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240)  # fmt: skip
    assert failed.returncode != 0
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and "predictor.safetensors" in message and "--init-predictor random" in message
    assert not out.exists()
    # A new predictor, on a folder of videos instead of a manifest, with activation checkpointing.
    args = tiny_args(tiny_inputs, out, 2, "--init-predictor", "random", "--steps", "3", "--activation-checkpointing")
    args[args.index("--train-csv") : args.index("--train-csv") + 2] = ["--video-dir", str(tiny_inputs["root"] / "videos")]
    run([sys.executable, str(SCRIPT), *args], cwd=tmp_path)
    summary = results(out)
    assert summary["steps"] == 3 and summary["config"]["video_dir"] and summary["skipped_videos"]["count"] <= 1
    assert all(torch.isfinite(torch.tensor(summary["history"]["loss"])))


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed")
def test_tensorboard_holds_the_loss_per_mask_config(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = reference[0]
    runs = [EventAccumulator(str(f)).Reload() for f in out.rglob("events.out.tfevents.*")]
    (events,) = [e for e in runs if e.Tags()["scalars"]]
    history = results(out)["history"]
    for tag in ("loss", "lr", "momentum", "step_time_s", "loss/mask_0", "loss/mask_1", "visible_ratio/mask_0"):
        assert [e.step for e in events.Scalars(tag)] == list(range(1, 7)), tag
    logged = [e.value for e in events.Scalars("loss/mask_1")]  # tensorboard stores float32
    assert logged == approx([pair[1] for pair in history["loss_per_mask"]], rtol=FLOAT32_RTOL)
    assert all(0 < e.value < 1 for e in events.Scalars("visible_ratio/mask_1"))


def test_fsdp2_shards_the_ema_target_like_the_encoder(tmp_path):
    """FSDP 2 on 2 CPU processes (gloo), sharded as accelerate's FSDP 2 prepare does, with the example's
    `anneal.shard_like` for the target and `anneal.FullState` for its checkpoints: the EMA target equals a 1-process run's
    at the same global batch. (accelerate itself runs FSDP on GPUs only, so the example's FSDP launch is not
    run here.)"""
    worker = REPO / "tests" / "examples" / "fsdp_ema_worker.py"
    run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path / "sharded.pt")], cwd=tmp_path)
    run([sys.executable, str(worker), str(tmp_path / "plain.pt")], cwd=tmp_path)
    sharded, plain = torch.load(tmp_path / "sharded.pt"), torch.load(tmp_path / "plain.pt")
    assert sharded["initial"].keys() == plain["trained"].keys()
    for name, reference in plain["trained"].items():
        assert reference.dtype == torch.float64, name  # exactness, in float64: only the order of the sums differs
        assert_matches(sharded["trained"][name], reference, msg=name)
    # The EMA did move the target: the check above is not of two initial states.
    moved = torch.cat([(plain["trained"][k] - plain["initial"][k]).flatten() for k in plain["initial"]])
    assert_differs(moved, torch.zeros_like(moved), msg="EMA target after 3 steps vs before")


def load_example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ssl_anneal", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations in their module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--train-csv", "nope.csv"], "error: --train-csv: nope.csv: no such manifest or folder"),
        (["--video-dir", "."], "error: --video-dir: .: no videos"),
        (["--model", "no/such/folder/x"], "error: --model no/such/folder/x: no such local file or folder"),
    ],
)
def test_bad_inputs_end_in_one_line_before_the_output_dir_is_touched(tiny_inputs, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    args = tiny_args(tiny_inputs, tmp_path / "out", 2)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args[args.index("--train-csv") : args.index("--train-csv") + 2] = [flag, value]
    with pytest.raises(SystemExit, match=message):
        load_example().main(args)
    assert not (tmp_path / "out").exists()


def test_anneal_starts_from_a_released_transformers_repo(tiny_inputs, tiny_release, tmp_path):
    """--model takes a facebook/vjepa2-* repo as transformers wrote it (encoder + predictor, no conversion),
    by folder; the written folder holds the annealed target encoder and the repo's predictor, trained."""
    from hf_vjepa_area import VJEPA2AreaModel

    out = tmp_path / "run"
    args = tiny_args(tiny_inputs, out, 2, "--steps", "2", "--checkpoint-every", "2", model="model")
    args[args.index("--model") + 1] = str(tiny_release.folder)
    args[args.index("--resolution") + 1] = "64"  # patch 16: a 4 x 4 grid
    run([sys.executable, str(SCRIPT), *args], cwd=tmp_path)
    annealed = VJEPA2AreaModel.from_pretrained(out / "model")
    assert annealed.config.embed_dim == 192 and annealed.config.area_layers  # the report's area attention
    predictor = load_file(out / "model" / "predictor.safetensors")
    assert predictor["predictor_embed.weight"].shape == (96, 192) and "mask_tokens.2" in predictor


def test_the_demos_closing_hint_probes_the_demo_videos_at_the_demo_settings(tmp_path):
    """The printed probe command, run as printed (one epoch instead of 20), probes the annealed demo encoder
    on the demo's own manifests at the probe demo's small settings, not the K400 preset."""
    import shlex

    result = run([sys.executable, str(SCRIPT), "--steps", "2", "--checkpoint-every", "0", "--no-progress"], cwd=tmp_path)
    hint = next(line for line in result.stdout.splitlines() if line.startswith("Probe it: "))
    command = shlex.split(hint.removeprefix("Probe it: "))
    assert command[:3] == ["accelerate", "launch", "examples/k400_probe.py"] and "--preset" in command
    run([sys.executable, str(PROBE), *command[3:], "--epochs", "1", "--no-progress", "--report-to", "none"], cwd=tmp_path)
    summary = json.loads((tmp_path / "outputs" / "demo_ssl_probe" / "results.json").read_text())
    assert not (tmp_path / "outputs" / "demo_ssl" / "probe").exists()  # the anneal's folder holds only what it wrote
    config = summary["config"]
    assert config["preset"] == "demo" and (config["frames"], config["resolution"], config["segments"]) == (8, 64, 2)
    assert config["model"] == str(Path("outputs/demo_ssl/model")) and summary["data"]["num_train"] == 120


def test_settings_help_shows_the_defaults_and_the_demos_and_resume_compares_what_changes_results():
    settings = load_example().AnnealSettings
    help = " ".join(settings.parser().format_help().split())
    assert "--steps STEPS optimizer steps (default: 800; demo: 300)" in help
    assert "--ema M [M ...] EMA momentum, or START END for a linear ramp (default: 0.99925; demo: 0.996 1)" in help
    assert set(settings.result_keys()) == {
        "model", "revision", "init_predictor", "area_splits", "area_layers", "full_attention", "train_csv", "video_dir", "frames",
        "fps", "frame_step", "resolution", "min_frames", "video_backend", "batch_size", "global_batch_size", "steps", "lr", "final_lr",
        "warmup_steps", "schedule", "weight_decay", "ema", "grad_clip", "mixed_precision", "seed",
    }  # fmt: skip
    demo, real = settings.parse([]), settings.parse(["--model", "m", "--train-csv", "t.csv"])
    assert (demo.demo, demo.model, demo.warmup_steps, demo.num_workers, demo.output_dir) == (True, "demo", 30, 0, "outputs/demo_ssl")
    assert (real.demo, real.warmup_steps, real.num_workers, real.output_dir) == (False, 0, None, "outputs/ssl_anneal")
