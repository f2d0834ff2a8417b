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


class _Accelerator:  # the main process of one
    is_main_process = True

    def wait_for_everyone(self):
        pass


PROBE = dict(script="probe", outputs=("checkpoints", "results.json", "model"))


def _check(out, *, resume=None, overwrite=False, config=None, folder=PROBE):
    return runs.check_output_dir(out, resume=resume, overwrite=overwrite, config=config or {"lr": 1.0},
                                 compared_keys=("lr",), **folder, **NAMING)  # fmt: skip


def _checkpoint(out, config):
    (out / "checkpoints" / "epoch_001").mkdir(parents=True)
    (out / "checkpoints" / "epoch_001" / "probe_state.json").write_text(json.dumps({"config": config}))


def test_output_dir_refuses_to_mix_runs(tmp_path):
    out = tmp_path / "run"
    assert _check(out) is None  # nothing there yet
    runs.start_output_dir(out, _Accelerator(), overwrite=False, config={"lr": 1.0}, **PROBE)
    assert json.loads((out / runs.RUN_FILE).read_text()) == {"script": "probe", "config": {"lr": 1.0}}
    assert _check(out) is None  # a run that failed before its first checkpoint: reused as it is
    _checkpoint(out, {"lr": 2.0})
    with pytest.raises(SystemExit, match="is not empty .* pass --resume to continue it or --overwrite"):
        _check(out)
    with pytest.raises(SystemExit, match=r"other settings than the checkpoint's: \{'lr': \(2.0, 1.0\)\}"):
        _check(out, resume="auto")
    assert _check(out, resume="auto", config={"lr": 2.0}).name == "epoch_001"
    with pytest.raises(SystemExit, match="--resume: .* is not a complete checkpoint"):
        _check(out, resume=str(out / "model"))
    assert _check(out, overwrite=True) is None


def test_overwrite_and_resume_take_only_the_scripts_own_folders(tmp_path):
    anneal = dict(script="anneal", outputs=("checkpoints", "results.json", "model"))
    out = tmp_path / "run"
    runs.start_output_dir(out, _Accelerator(), overwrite=False, config={"lr": 1.0}, **anneal)
    _checkpoint(out, {"lr": 1.0})
    (out / "results.json").write_text("{}")
    for flags in (dict(overwrite=True), dict(resume="auto"), {}):  # another script's folder
        with pytest.raises(SystemExit, match=f"{out} is made by anneal: --resume and --overwrite take only probe's own"):
            _check(out, **flags)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="is no probe run folder"):
        _check(mine, overwrite=True)
    # Our run folder, plus a file the script did not write: refused; then --overwrite removes only its own.
    runs.start_output_dir(mine, _Accelerator(), overwrite=False, config={"lr": 1.0}, **PROBE)
    _checkpoint(mine, {"lr": 1.0})
    with pytest.raises(SystemExit, match=r"holds files that probe did not write \(notes.txt\)"):
        _check(mine, overwrite=True)
    (mine / "notes.txt").unlink()
    (mine / "model").mkdir()
    assert _check(mine, overwrite=True) is None
    runs.start_output_dir(mine, _Accelerator(), overwrite=True, config={"lr": 3.0}, **PROBE)
    assert sorted(p.name for p in mine.iterdir()) == [runs.RUN_FILE]


def test_default_workers_share_the_cpus_between_local_processes(monkeypatch):
    monkeypatch.setattr(runs.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert runs.default_num_workers() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert runs.default_num_workers() == 8  # at most 8
    monkeypatch.setattr(runs.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert runs.default_num_workers() == 1  # at least 1
