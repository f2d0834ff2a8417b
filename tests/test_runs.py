"""Run files of the examples: atomic, pruned accelerate checkpoints and strict JSON."""

import dataclasses
import json
import os
import sys

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
    with pytest.raises(runs.UsageError, match="is not empty .* pass --resume to continue it or --overwrite"):
        _check(out)
    with pytest.raises(runs.UsageError, match=r"other settings than the checkpoint's: \{'lr': \(2.0, 1.0\)\}"):
        _check(out, resume="auto")
    assert _check(out, resume="auto", config={"lr": 2.0}).name == "epoch_001"
    with pytest.raises(runs.UsageError, match="--resume: .* is not a complete checkpoint"):
        _check(out, resume=str(out / "model"))
    assert _check(out, overwrite=True) is None


def test_overwrite_and_resume_take_only_the_scripts_own_folders(tmp_path):
    anneal = dict(script="anneal", outputs=("checkpoints", "results.json", "model"))
    out = tmp_path / "run"
    runs.start_output_dir(out, _Accelerator(), overwrite=False, config={"lr": 1.0}, **anneal)
    _checkpoint(out, {"lr": 1.0})
    (out / "results.json").write_text("{}")
    for flags in (dict(overwrite=True), dict(resume="auto"), {}):  # another script's folder
        with pytest.raises(runs.UsageError, match=f"{out} is made by anneal: probe writes, resumes and overwrites only its own run folders"):
            _check(out, **flags)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(runs.UsageError, match="is no probe run folder"):
        _check(mine, overwrite=True)
    # Our run folder, plus a file the script did not write: refused; then --overwrite removes only its own.
    runs.start_output_dir(mine, _Accelerator(), overwrite=False, config={"lr": 1.0}, **PROBE)
    _checkpoint(mine, {"lr": 1.0})
    with pytest.raises(runs.UsageError, match=r"holds files that probe did not write \(notes.txt\)"):
        _check(mine, overwrite=True)
    (mine / "notes.txt").unlink()
    (mine / "model").mkdir()
    assert _check(mine, overwrite=True) is None
    runs.start_output_dir(mine, _Accelerator(), overwrite=True, config={"lr": 3.0}, **PROBE)
    assert sorted(p.name for p in mine.iterdir()) == [runs.RUN_FILE]


def test_default_workers_share_the_cpus_between_local_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert runs.default_num_workers() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert runs.default_num_workers() == 8  # at most 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert runs.default_num_workers() == 1  # at least 1


@dataclasses.dataclass
class _Settings(runs.RunSettings):
    lr: float = runs.setting(0.1, "learning rate", result=True, group="optimization")
    ema: tuple[float, ...] = runs.setting((0.99,), "EMA momentum, or START END", result=True, metavar="M")
    train_csv: str | None = runs.setting(None, "manifest", result=True, path=True, group="data")
    preset: str | None = runs.setting(None, "protocol", choices=["fast", "slow"])
    steps: int = runs.setting(10, "optimizer steps", result=True)
    total: int | None = runs.setting(None, "derived", flag=False)

    PRESETS = {"fast": dict(steps=2, lr=1.0, output_dir="out/fast"), "slow": dict(steps=100, output_dir="out/slow")}

    def complete(self, given):
        super().complete(given)
        if self.steps < 1:
            raise runs.UsageError("--steps must be >= 1")
        self.total = self.steps * 2


def test_settings_parse_defaults_then_preset_then_flags():
    s = _Settings.parse(["--preset", "fast", "--lr", "0.5", "--ema", "0.9", "1.0"])
    assert (s.steps, s.lr, s.ema, s.output_dir, s.total) == (2, 0.5, (0.9, 1.0), "out/fast", 4)
    assert _Settings.parse([]).steps == 10 and _Settings.parse([]).ema == (0.99,)
    assert _Settings.result_keys() == ("mixed_precision", "seed", "lr", "ema", "train_csv", "steps")
    help = _Settings.parser().format_help()
    assert "--steps STEPS         optimizer steps (default: 10; fast: 2; slow: 100)" in " ".join(help.split("\n"))
    assert "learning rate (default: 0.1; fast: 1)" in help and "--total" not in help
    assert "seed of every random draw (default: 0)" in " ".join(help.split())  # 0 is a default, not "no default"
    assert help.index("--lr") < help.index("--output-dir")  # the script's own options first


def test_settings_errors_are_usage_errors(capsys):
    for argv, message in ((["--steps", "0"], "--steps must be >= 1"), (["--resume", "--overwrite"], "--resume and --overwrite exclude each other")):
        with pytest.raises(SystemExit) as exit:
            _Settings.parse(argv)
        assert exit.value.code == 2 and f"error: {message}" in capsys.readouterr().err


def test_settings_config_is_json_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _Settings.parse(["--train-csv", "data.csv"]).to_config()
    assert config["train_csv"] == str(tmp_path / "data.csv") and config["ema"] == [0.99] and config["total"] == 20
    assert json.loads(json.dumps(config)) == config  # what a checkpoint holds compares equal to it


def test_main_turns_bad_input_into_one_line_and_status_2(capsys):
    def bad(argv):
        raise runs.UsageError(f"--model {argv[0]}: no such folder")

    assert runs.main(bad, ["x"]) == 2
    assert capsys.readouterr().err == "error: --model x: no such folder\n"
    assert runs.main(lambda: None) == 0
    with pytest.raises(SystemExit) as exit:  # an exit with a status is no message: it passes through
        runs.main(lambda: sys.exit(3))
    assert exit.value.code == 3


def test_run_records_checkpoints_resumes_and_writes_results(tmp_path):
    out = tmp_path / "run"
    naming = dict(script="test", outputs=("checkpoints", "logs", "results.json"), prefix="step_", state_file="state.json")
    settings = _Settings.parse(["--output-dir", str(out), "--report-to", "none", "--num-workers", "0"])
    run = runs.Run(settings, **naming)
    assert (run.mixed_precision, run.num_workers, run.world) == ("no", 0, 1)  # CPU: "auto" is no autocast
    assert run.check_output_dir() is None and run.resume() is None
    run.start_output_dir()
    assert json.loads((out / runs.RUN_FILE).read_text())["script"] == "test"
    run.started -= 100.0  # 100 s into the run
    run.save_checkpoint(1, {"step": 1})
    with pytest.raises(SystemExit, match="pass --resume to continue it"):
        runs.Run(settings, **naming).check_output_dir()
    changed = _Settings.parse(["--output-dir", str(out), "--report-to", "none", "--resume", "--lr", "2"])
    with pytest.raises(runs.UsageError, match=r"other settings than the checkpoint's: \{'lr': \(0.1, 2.0\)\}"):
        runs.Run(changed, **naming).check_output_dir()
    resumed = runs.Run(dataclasses.replace(settings, resume="auto"), **naming)
    assert resumed.check_output_dir().name == "step_001"
    state = resumed.resume()
    assert state["step"] == 1 and state["num_processes"] == 1 and state["config"]["lr"] == 0.1
    assert resumed.elapsed >= 100.0  # the interrupted part counts
    resumed.finish({"loss": float("nan")})
    assert json.loads((out / "results.json").read_text()) == {"loss": None}


def test_one_auto_rule_for_precision_and_workers(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert runs.resolve_mixed_precision("auto") == "no" and runs.autocast_dtype("auto") is None  # a GPU without bf16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert runs.resolve_mixed_precision("auto") == "bf16" and runs.autocast_dtype("auto") is torch.bfloat16
    assert runs.resolve_mixed_precision("fp16") == "fp16" and runs.autocast_dtype("fp32") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runs.resolve_mixed_precision(None) == "no"
    assert runs.resolve_num_workers(0) == 0 and runs.resolve_num_workers(None) == runs.default_num_workers()
