"""Run files of the examples: atomic, pruned accelerate checkpoints and strict JSON."""

import json

import pytest
import torch

from hf_vjepa_area import runs

NAMING = dict(prefix="epoch_", state_file="probe_state.json")


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model, opt = accelerator.prepare(model, opt)
    root = tmp_path / "checkpoints"
    assert runs.find_checkpoint(root, "auto", **NAMING) is None
    for epoch in (1, 2, 3):
        runs.save_checkpoint(accelerator, root, epoch, {"epoch": epoch}, keep=2, **NAMING)
    assert sorted(p.name for p in root.iterdir()) == ["epoch_002", "epoch_003"]
    (root / ".tmp-epoch_004").mkdir()  # a save killed half way
    (root / "epoch_009").mkdir()  # a folder without the state file is not a checkpoint
    found = runs.find_checkpoint(root, "auto", **NAMING)
    assert found.name == "epoch_003" and runs.read_checkpoint_state(found, NAMING["state_file"]) == {"epoch": 3}
    with pytest.raises(FileNotFoundError):
        runs.find_checkpoint(root, str(root / "epoch_009"), **NAMING)
    # Pruning counts complete checkpoints only: the stray epoch_009 sorts last but must not cost epoch_004.
    runs.save_checkpoint(accelerator, root, 4, {"epoch": 4}, keep=1, **NAMING)
    assert sorted(p.name for p in root.iterdir()) == ["epoch_004", "epoch_009"]
    assert runs.find_checkpoint(root, "auto", **NAMING).name == "epoch_004"


def test_write_json_is_strict_json_even_with_nan(tmp_path):
    # A diverged head's NaN loss must not turn results.json into invalid JSON (bare NaN).
    path = tmp_path / "results.json"
    runs.write_json(path, {"loss": [0.5, float("nan")], "nested": {"top1": float("inf")}})

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"loss": [0.5, None], "nested": {"top1": None}}


def test_output_dir_refuses_to_mix_runs(tmp_path):
    out = tmp_path / "run"
    check = dict(config={"lr": 1.0}, compared_keys=("lr",), run_file="run_config.json", kind="a test output dir", **NAMING)
    assert runs.check_output_dir(out, resume=None, overwrite=False, **check) is None  # nothing there yet
    (out / "notes").mkdir(parents=True)
    with pytest.raises(SystemExit, match="is not empty"):
        runs.check_output_dir(out, resume=None, overwrite=False, **check)
    with pytest.raises(SystemExit, match="it holds no run_config.json, so it is not a test output dir"):
        runs.check_output_dir(out, resume=None, overwrite=True, **check)
    with pytest.raises(SystemExit, match="--resume: .* is not a complete checkpoint"):
        runs.check_output_dir(out, resume=str(out / "notes"), overwrite=False, **check)
    (out / "checkpoints" / "epoch_001").mkdir(parents=True)
    (out / "checkpoints" / "epoch_001" / "probe_state.json").write_text(json.dumps({"config": {"lr": 2.0}}))
    with pytest.raises(SystemExit, match=r"other settings than the checkpoint's: \{'lr': \(2.0, 1.0\)\}"):
        runs.check_output_dir(out, resume="auto", overwrite=False, **check)


def test_default_workers_share_the_cpus_between_local_processes(monkeypatch):
    monkeypatch.setattr(runs.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert runs.default_num_workers() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert runs.default_num_workers() == 8  # at most 8
    monkeypatch.setattr(runs.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert runs.default_num_workers() == 1  # at least 1
