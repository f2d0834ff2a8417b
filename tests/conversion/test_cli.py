"""The command line: exit codes, one-line errors, publishing up to the huggingface_hub call boundary."""

import inspect
import json
import runpy
import sys
from pathlib import Path

import huggingface_hub
import pytest

from hf_vjepa_area.conversion.cli import main

from tests.conftest import TINY_PT_FLAGS


class RecordingApi:
    """Stands in for huggingface_hub.HfApi and records the calls, each checked against the real signature."""

    calls: list = []

    def __init__(self, *args, **kwargs):
        self.calls = RecordingApi.calls

    def _record(self, name, args, kwargs):
        inspect.signature(getattr(huggingface_hub.HfApi, name)).bind(None, *args, **kwargs)
        self.calls.append((name, args, kwargs))

    def create_repo(self, *args, **kwargs):
        self._record("create_repo", args, kwargs)
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{args[0]}")

    def upload_folder(self, *args, **kwargs):
        self._record("upload_folder", args, kwargs)
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{'b' * 40}",
                                          commit_message=kwargs["commit_message"], commit_description="", oid="b" * 40)  # fmt: skip


@pytest.fixture
def recording_api(monkeypatch):
    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return RecordingApi.calls


def test_converts_verifies_and_pushes(tmp_path, tiny_release, recording_api, capsys):
    out = tmp_path / "vjepa2-tiny"
    argv = [str(tiny_release.pt), str(out), *TINY_PT_FLAGS, "--verify", "--area-splits", "2,2,1",
            "--push-to-hub", "someone/vjepa2-tiny", "--private"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "verify last_hidden_state: max abs diff" in printed and "verify predictor: max abs diff" in printed
    assert "pushed to https://huggingface.co/someone/vjepa2-tiny" in printed
    assert [name for name, _, _ in recording_api] == ["create_repo", "upload_folder"]
    assert recording_api[0][2]["private"] is True and recording_api[1][2]["folder_path"] == str(out)
    assert {"config.json", "model.safetensors", "predictor.safetensors", "conversion_report.json", "README.md",
            "modeling_vjepa2_area.py", "video_preprocessor_config.json"} <= {p.name for p in out.iterdir()}  # fmt: skip
    assert 'from_pretrained("someone/vjepa2-tiny"' in (out / "README.md").read_text()
    # An existing output is refused without --overwrite, before anything is read.
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err


def test_refusals_exit_2_in_one_line(tmp_path, tiny_release, capsys):
    for argv, expected in (
        ([str(tiny_release.pt), str(tmp_path / "a")], "pass --variant NAME for its heads"),
        ([str(tmp_path / "missing.pt"), str(tmp_path / "b")], "missing.pt: no such local file or folder"),
        ([str(tiny_release.pt), str(tmp_path / "c"), *TINY_PT_FLAGS, "--private"], "--private: only with --push-to-hub"),
        ([str(tiny_release.pt), str(tmp_path / "d"), *TINY_PT_FLAGS, "--push-to-hub", "no-org"], "--push-to-hub needs ORG/NAME"),
        ([str(tiny_release.folder), str(tmp_path / "e"), "--to", "transformers", "--area-splits", "2,2,1"],
         "--area-splits: not applicable with --to transformers"),
    ):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        main([str(tiny_release.pt), str(tmp_path / "f"), "--area-splits", "2,2"])


def test_garbage_checkpoint_and_unexpected_errors(tmp_path, tiny_release, capsys, monkeypatch):
    (tmp_path / "vitl.pt").write_text("hello\n")
    assert main([str(tmp_path / "vitl.pt"), str(tmp_path / "out")]) == 2
    assert "not a PyTorch checkpoint, or corrupted" in capsys.readouterr().err
    from hf_vjepa_area.conversion import cli

    def broken(*args, **kwargs):
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(cli, "convert", broken)
    assert main([str(tiny_release.pt), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: something unforeseen" in err and "--debug" in err
    with pytest.raises(RuntimeError):
        main([str(tiny_release.pt), str(tmp_path / "out"), "--debug"])


def test_failed_verification_exits_1_and_failed_upload_exits_3(tmp_path, tiny_release, recording_api, capsys, monkeypatch):
    from hf_vjepa_area.conversion import convert as convert_module

    with monkeypatch.context() as patch:
        real = convert_module.transformers_outputs
        patch.setattr(convert_module, "transformers_outputs", lambda *a: {k: v + 1e-2 for k, v in real(*a).items()})
        assert main([str(tiny_release.pt), str(tmp_path / "out"), *TINY_PT_FLAGS, "--verify"]) == 1
    assert "verification failed" in capsys.readouterr().err and not (tmp_path / "out").exists()

    def interrupted(self, *args, **kwargs):
        raise OSError("connection reset (simulated)")

    monkeypatch.setattr(RecordingApi, "upload_folder", interrupted)
    assert main([str(tiny_release.pt), str(tmp_path / "out"), *TINY_PT_FLAGS, "--push-to-hub", "org/x"]) == 3
    err = capsys.readouterr().err
    assert "OSError: connection reset (simulated)" in err and "hf upload org/x" in err
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_export_round_trip_on_the_command_line(tmp_path, tiny_release, capsys):
    assert main([str(tiny_release.folder), str(tmp_path / "ours"), "--verify"]) == 0
    assert main([str(tmp_path / "ours"), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    assert "exported VJEPA2Model" in capsys.readouterr().out
    report = json.loads((tmp_path / "hf" / "conversion_report.json").read_text())
    assert report["verification"]["passed"] and report["predictor"] == "predictor.safetensors"
    assert str(tmp_path) not in (tmp_path / "ours" / "conversion_report.json").read_text()  # published: no local paths


def test_python_dash_m_entry_point(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["python -m hf_vjepa_area.conversion", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("hf_vjepa_area.conversion", run_name="__main__", alter_sys=True)
    printed = capsys.readouterr().out
    assert exit_info.value.code == 0 and "target_encoder" in printed and "load_model" in printed


def test_console_script_is_declared():
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'vjepa2-area-convert = "hf_vjepa_area.conversion.cli:main"' in pyproject


def test_a_revision_of_a_local_path_is_refused(tmp_path, tiny_release, capsys):
    assert main([str(tiny_release.folder), str(tmp_path / "out"), "--revision", "v1"]) == 2
    assert "--revision: " in capsys.readouterr().err and not (tmp_path / "out").exists()
