"""The command line and the push path, up to the huggingface_hub call boundary (no network)."""

import inspect
import json
import runpy
import sys
from pathlib import Path

import huggingface_hub
import pytest

from hf_vjepa_area.conversion.cli import main
from hf_vjepa_area.conversion.push import planned_files, push_folder

TINY = ["--num-heads", "2", "--img-size", "32", "--num-frames", "4"]


class RecordingApi:
    """Stands in for huggingface_hub.HfApi and records the operations it would send."""

    calls: list = []

    def __init__(self, *args, **kwargs):
        self.calls = RecordingApi.calls

    def _record(self, name, args, kwargs):
        # Prove the call fits the real HfApi method before recording it.
        inspect.signature(getattr(huggingface_hub.HfApi, name)).bind(None, *args, **kwargs)
        self.calls.append((name, args, kwargs))

    def create_repo(self, *args, **kwargs):
        self._record("create_repo", args, kwargs)
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{args[0]}")

    def create_branch(self, *args, **kwargs):
        self._record("create_branch", args, kwargs)

    def upload_folder(self, *args, **kwargs):
        self._record("upload_folder", args, kwargs)
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{'b' * 40}",
            commit_message=kwargs["commit_message"], commit_description="", oid="b" * 40,
        )


@pytest.fixture
def recording_api(monkeypatch):
    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return RecordingApi.calls


def test_cli_converts_verifies_and_pushes(tmp_path, original_pt, recording_api, capsys):
    out = tmp_path / "vjepa2-tiny"
    argv = [str(original_pt), str(out), *TINY, "--verify", "--area-splits", "2,2,1", "--area-layers", "0:1",
            "--push-to-hub", "someone/vjepa2-tiny", "--private", "--revision", "v1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "verify last_hidden_state: max abs diff" in printed and "(information)" in printed
    assert "pushed to https://huggingface.co/someone/vjepa2-tiny" in printed
    names = [name for name, _, _ in recording_api]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    _, args, kwargs = recording_api[0]
    assert args == ("someone/vjepa2-tiny",) and kwargs["private"] is True and kwargs["exist_ok"] is True
    assert recording_api[1][2]["branch"] == "v1" and recording_api[1][2]["exist_ok"] is True
    upload = recording_api[2][2]
    assert upload["repo_id"] == "someone/vjepa2-tiny" and upload["revision"] == "v1"
    assert Path(upload["folder_path"]) == out.absolute() or Path(upload["folder_path"]) == out
    uploaded = {f["path_in_repo"] for f in planned_files(out)}
    assert {"config.json", "model.safetensors", "README.md", "conversion_report.json", "modeling_vjepa2_area.py"} <= uploaded
    assert 'from_pretrained("someone/vjepa2-tiny"' in (out / "README.md").read_text()

    # Running the same command again (e.g. after a failed upload) reuses the folder and pushes again.
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert main(argv) == 0
    assert "pushing it as is" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert [name for name, _, _ in recording_api] == names * 2

    # Different options with the same output: refused, not silently reused.
    assert main([str(original_pt), str(out), *TINY, "--verify", "--push-to-hub", "someone/vjepa2-tiny"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_rerun_push_reuses_a_conversion_of_a_pytorch_model_bin_folder(tmp_path, hf_encoder_dir, recording_api, capsys):
    """The reuse check hashes the files the conversion read: a legacy .bin folder was re-hashed as
    "no *.safetensors", never matched, and the rerun was refused as an existing output."""
    import shutil

    import torch
    from safetensors.torch import load_file

    source = tmp_path / "legacy"
    source.mkdir()
    shutil.copy(hf_encoder_dir / "config.json", source / "config.json")
    torch.save(load_file(hf_encoder_dir / "model.safetensors"), source / "pytorch_model.bin")
    # A stray safetensors file beside it is not part of the model and must not enter the fingerprint.
    (source / "notes.safetensors").write_bytes(b"not weights")
    argv = [str(source), str(tmp_path / "out"), "--push-to-hub", "someone/legacy"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 0
    assert "pushing it as is" in capsys.readouterr().out
    assert [name for name, _, _ in recording_api] == ["create_repo", "upload_folder"] * 2


def test_push_on_main_skips_the_branch(tmp_path, original_pt):
    out = tmp_path / "out"
    assert main([str(original_pt), str(out), *TINY]) == 0
    calls = []

    class Api(RecordingApi):
        def __init__(self):
            self.calls = calls

    info = push_folder(out, "org/name", api=Api())
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert calls[0][2]["private"] is False and calls[1][2]["revision"] is None
    assert info["commit"] == "b" * 40 and info["revision"] == "main"
    with pytest.raises(ValueError, match="ORG/NAME"):
        push_folder(out, "no-org", api=Api())


def test_cli_refusals_exit_2_with_a_message(tmp_path, original_pt, capsys):
    assert main([str(original_pt), str(tmp_path / "a"), "--img-size", "32", "--num-frames", "4"]) == 2
    assert "--num-heads" in capsys.readouterr().err
    assert main([str(original_pt), str(tmp_path / "b"), *TINY, "--variant", "huge"]) == 2
    err = capsys.readouterr().err
    assert "patch_embed.proj.weight" in err and "[1280, 3, 2, 16, 16]" in err
    assert main([str(tmp_path / "missing.pt"), str(tmp_path / "c")]) == 2
    assert main([str(original_pt), str(tmp_path / "d"), *TINY, "--predictor-from", "x/y"]) == 2
    with pytest.raises(SystemExit):
        main([str(original_pt), str(tmp_path / "e"), "--area-splits", "2,2"])


def test_cli_export_round_trip(tmp_path, hf_encoder_dir, capsys):
    ours, back = tmp_path / "ours", tmp_path / "hf"
    assert main([str(hf_encoder_dir), str(ours), "--verify"]) == 0
    assert main([str(ours), str(back), "--to", "transformers", "--predictor-from", str(hf_encoder_dir)]) == 0
    printed = capsys.readouterr().out
    assert "exported VJEPA2Model" in printed
    report = json.loads((back / "conversion_report.json").read_text())
    assert report["direction"] == "to transformers" and report["verification"]["passed"]
    assert main([str(ours), str(tmp_path / "again"), "--to", "transformers", "--area-splits", "2,2,1"]) == 2
    assert "--area-splits: not applicable with --to transformers" in capsys.readouterr().err
    # Output options of the other direction are refused too, not silently dropped.
    for flag, value in (("--dtype", "bfloat16"), ("--license", "apache-2.0"), ("--base-model", "x/y"), ("--probe-index", "1")):
        assert main([str(ours), str(tmp_path / "again"), "--to", "transformers", flag, value]) == 2
        assert f"{flag}: not applicable with --to transformers" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_cli_refuses_probe_options_without_a_probe(tmp_path, original_pt, capsys):
    assert main([str(original_pt), str(tmp_path / "out"), *TINY, "--probe-num-heads", "8"]) == 2
    assert "--probe-num-heads: only with --probe" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_python_dash_m_entry_point(monkeypatch, capsys):
    # In-process `python -m hf_vjepa_area.conversion --help` (a subprocess would re-import torch for seconds).
    monkeypatch.setattr(sys, "argv", ["python -m hf_vjepa_area.conversion", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("hf_vjepa_area.conversion", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "target_encoder" in printed and "--push-to-hub" in printed and "facebookresearch/vjepa2" in printed


def test_console_script_is_declared():
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'vjepa2-area-convert = "hf_vjepa_area.conversion.cli:main"' in pyproject


def test_overwrite_never_deletes_an_input_inside_output(tmp_path, original_pt, probe_pt, capsys, monkeypatch):
    """--overwrite replaces OUTPUT as a whole: a source inside it (or OUTPUT = source, or the working
    directory) used to be deleted by the rename into place."""
    import shutil

    ckdir = tmp_path / "ckdir"
    ckdir.mkdir()
    source = ckdir / "vit-tiny.pt"
    shutil.copy(original_pt, source)
    (ckdir / "notes.txt").write_text("mine")
    for overwrite in ([], ["--overwrite"]):  # without --overwrite too: not advice to pass it
        assert main([str(source), str(ckdir), *TINY, *overwrite]) == 2
        err = capsys.readouterr().err
        assert "SOURCE" in err and "inside OUTPUT" in err and "another folder" in err and "pass --overwrite" not in err
    assert sorted(p.name for p in ckdir.iterdir()) == ["notes.txt", "vit-tiny.pt"]

    # --probe and --labels inside OUTPUT: refused the same way, before anything is read or written.
    out = tmp_path / "out"
    assert main([str(original_pt), str(out), *TINY]) == 0
    labels = out / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(5)))
    shutil.copy(probe_pt, out / "probe-4x2x3.pt")
    probe = [str(original_pt), str(out), *TINY, "--probe-num-heads", "2", "--overwrite", "--probe"]
    for argv, flag, path in (
        (probe + [str(probe_pt), "--labels", str(labels)], "--labels", labels),
        (probe + [str(out / "probe-4x2x3.pt")], "--probe", out / "probe-4x2x3.pt"),
    ):
        assert main(argv) == 2
        assert f"{flag} {path} is inside OUTPUT" in capsys.readouterr().err
        assert path.is_file()

    # Our folder exported onto itself, and --predictor-from inside OUTPUT.
    before = sorted(p.name for p in out.iterdir())
    assert main([str(out), str(out), "--to", "transformers", "--overwrite"]) == 2
    assert "inside OUTPUT" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before

    # OUTPUT is the working directory (or a parent of it).
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work / "sub")
    for target in (".", str(work)):
        assert main([str(original_pt), target, *TINY, "--overwrite"]) == 2
        assert "current directory" in capsys.readouterr().err
    assert (work / "sub").is_dir()


def test_predictor_of_another_width_is_refused(tmp_path, hf_encoder_dir, capsys):
    """--predictor-from a repo of another hidden_size used to escape as a size-mismatch RuntimeError (exit 1)."""
    from transformers import VJEPA2Model

    from .conftest import tiny_hf_config

    ours, other = tmp_path / "ours", tmp_path / "other"
    assert main([str(hf_encoder_dir), str(ours)]) == 0
    VJEPA2Model(tiny_hf_config(hidden_size=64, num_attention_heads=1)).save_pretrained(other)
    assert main([str(ours), str(tmp_path / "hf"), "--to", "transformers", "--predictor-from", str(other)]) == 2
    err = capsys.readouterr().err
    assert "reads hidden_size 64 tokens, but this encoder's embed_dim is 128" in err
    assert not (tmp_path / "hf").exists()


def test_unexpected_errors_are_one_line_with_exit_2(tmp_path, original_pt, capsys, monkeypatch):
    from hf_vjepa_area.conversion import cli

    def broken(*args, **kwargs):
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(cli, "convert", broken)
    assert main([str(original_pt), str(tmp_path / "out"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: something unforeseen" in err and "--debug" in err
    with pytest.raises(RuntimeError):
        main([str(original_pt), str(tmp_path / "out"), *TINY, "--debug"])

    # Any exception type: exit 1 is kept for "verification failed" (a labels file holding a bare string
    # used to end in an AttributeError traceback with exit 1).
    def attribute_error(*args, **kwargs):
        return "abc".items()

    monkeypatch.setattr(cli, "convert", attribute_error)
    assert main([str(original_pt), str(tmp_path / "out2"), *TINY]) == 2
    assert "AttributeError" in capsys.readouterr().err


def test_a_path_through_output_and_back_out_is_not_inside_it(tmp_path):
    from hf_vjepa_area.conversion.convert import check_inputs_outside_output
    from hf_vjepa_area.conversion.sources import ConversionError

    (tmp_path / "o2").mkdir()
    (tmp_path / "labels.txt").write_text("c0\n")
    (tmp_path / "o2" / "labels.txt").write_text("c0\n")
    check_inputs_outside_output(tmp_path / "o2", {"--labels": f"{tmp_path}/o2/../labels.txt"})  # really beside o2
    with pytest.raises(ConversionError, match="inside OUTPUT"):
        check_inputs_outside_output(tmp_path / "o2", {"--labels": f"{tmp_path}/o2/./labels.txt"})


def test_missing_absolute_path_is_not_sent_to_the_hub():
    from hf_vjepa_area.conversion.sources import ConversionError, source_kind

    with pytest.raises(ConversionError, match=r"no such local file or folder \(an absolute path\)"):
        source_kind("/nonexistent/vjepa2-vitl")


def test_garbage_checkpoint_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "vitl.pt"
    path.write_text("hello\n")
    assert main([str(path), str(tmp_path / "out")]) == 2
    assert "not a PyTorch checkpoint, or corrupted" in capsys.readouterr().err


def test_rerun_push_reconverts_when_labels_or_config_json_changed(tmp_path, classifier_encoder_pt, probe_pt,
                                                                  hf_classifier_dir, recording_api, capsys):
    """The reuse check stored the --labels path, not its content, and ignored a transformers source's
    config.json: a rerun after editing either pushed the stale folder."""
    import shutil

    labels, out = tmp_path / "labels.txt", tmp_path / "out"
    labels.write_text("\n".join(f"old{i}" for i in range(5)))
    argv = [str(classifier_encoder_pt), str(out), *TINY, "--probe", str(probe_pt), "--probe-num-heads", "2",
            "--labels", str(labels), "--push-to-hub", "someone/cls"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reusing" in printed and "wrote" not in printed  # nothing was written: not "wrote"
    labels.write_text("\n".join(f"new{i}" for i in range(5)))
    assert main(argv) == 2  # not reused: an existing output that is not this conversion needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["id2label"]["0"] == "new0"

    source, out = tmp_path / "hf", tmp_path / "out-hf"
    shutil.copytree(hf_classifier_dir, source)
    argv = [str(source), str(out), "--push-to-hub", "someone/cls"]
    assert main(argv) == 0
    config = json.loads((source / "config.json").read_text())
    config["id2label"]["0"] = "renamed"
    (source / "config.json").write_text(json.dumps(config))
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err


def test_reports_publish_no_local_paths(tmp_path, classifier_encoder_pt, probe_pt, hf_encoder_dir):
    """conversion_report.json is uploaded with the model: --probe/--labels/--predictor-from used to be
    recorded as the local paths they were given as."""
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(5)))
    out = tmp_path / "out"
    assert main([str(classifier_encoder_pt), str(out), *TINY, "--probe", str(probe_pt), "--probe-num-heads", "2",
                 "--labels", str(labels)]) == 0
    text = (out / "conversion_report.json").read_text()
    report = json.loads(text)
    assert report["options"]["probe"] == probe_pt.name and report["options"]["labels"] == "labels.txt"
    assert len(report["inputs_sha256"]["labels"]) == 64
    ours, back = tmp_path / "ours", tmp_path / "back"
    assert main([str(hf_encoder_dir), str(ours)]) == 0
    assert main([str(ours), str(back), "--to", "transformers", "--predictor-from", str(hf_encoder_dir)]) == 0
    exported = json.loads((back / "conversion_report.json").read_text())
    assert exported["options"]["predictor_from"] == hf_encoder_dir.name
    for folder in (out, ours, back):
        text = "".join(path.read_text() for path in folder.glob("*.json")) + "".join(p.read_text() for p in folder.glob("*.md"))
        for local in (str(tmp_path), str(probe_pt.parent), str(hf_encoder_dir.parent)):
            assert local not in text, (folder.name, local)


def test_interrupted_export_push_is_resumed_by_rerunning(tmp_path, hf_encoder_dir, recording_api, capsys, monkeypatch):
    """--to transformers --push-to-hub had no reuse check: after a failed upload (a traceback), the rerun
    was refused because OUTPUT existed."""
    ours, out = tmp_path / "ours", tmp_path / "hf"
    assert main([str(hf_encoder_dir), str(ours)]) == 0
    argv = [str(ours), str(out), "--to", "transformers", "--predictor-from", str(hf_encoder_dir), "--push-to-hub", "org/x"]

    def interrupted(self, *args, **kwargs):
        raise OSError("connection reset (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(RecordingApi, "upload_folder", interrupted)
        assert main(argv) == 3
    err = capsys.readouterr().err
    assert "upload of" in err and "OSError: connection reset (simulated)" in err and "run the same command again" in err
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reusing" in printed and "pushed to https://huggingface.co/org/x" in printed
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert [name for name, _, _ in recording_api][-2:] == ["create_repo", "upload_folder"]
    # A revision of a local predictor folder means nothing: refused, never silently reused or ignored.
    assert main([*argv, "--predictor-revision", "v2"]) == 2
    assert "is a local path, which has no revisions" in capsys.readouterr().err


def test_publishing_flags_without_push_are_refused(tmp_path, original_pt, capsys):
    for flag in (["--private"], ["--revision", "v1"], ["--commit-message", "m"]):
        assert main([str(original_pt), str(tmp_path / "out"), *TINY, *flag]) == 2
        assert f"{flag[0]}: only with --push-to-hub" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("repo_id", ["no-org", "org/-name", "org/na me", "a/b/c"])
def test_push_target_is_checked_before_converting(tmp_path, original_pt, capsys, repo_id):
    """By the Hub's own rules (huggingface_hub.validate_repo_id), the same check as push_folder's."""
    assert main([str(original_pt), str(tmp_path / "out"), *TINY, "--push-to-hub", repo_id]) == 2
    assert f"--push-to-hub needs ORG/NAME, got {repo_id!r}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_revisions_of_local_paths_are_refused(tmp_path, original_pt, capsys):
    """--source-revision / --predictor-revision used to be ignored silently for local files and folders."""
    assert main([str(original_pt), str(tmp_path / "out"), *TINY, "--source-revision", "v1"]) == 2
    assert "--source-revision: " in capsys.readouterr().err
    assert main([str(tmp_path), str(tmp_path / "hf"), "--to", "transformers", "--predictor-from", str(original_pt.parent),
                 "--predictor-revision", "v1"]) == 2
    assert "--predictor-revision: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "hf").exists()
