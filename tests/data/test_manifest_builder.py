import runpy
import sys
import warnings
from pathlib import Path

import pytest

from hf_vjepa_area.data import (
    build_manifest_from_annotations,
    build_manifest_from_folder,
    read_class_list,
    read_manifest,
)
from hf_vjepa_area.data.manifest import main


def make_tree(root, files):
    for relative in files:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"")
    return root


@pytest.fixture
def kinetics_folder(tmp_path):
    files = ["zumba/z1.mp4", "abseiling/a2.mp4", "abseiling/a1.mp4", "bowling/b1.webm", "bowling/notes.txt"]
    return make_tree(tmp_path / "train", files)


def test_folder_manifest(tmp_path, kinetics_folder):
    summary = build_manifest_from_folder(kinetics_folder, tmp_path / "out" / "train.csv")
    assert (summary.num_videos, summary.num_classes) == (4, 3)
    assert summary.classes_file == tmp_path / "out" / "train_classes.txt"
    assert read_class_list(summary.classes_file) == ["abseiling", "bowling", "zumba"]
    lines = (tmp_path / "out" / "train.csv").read_text().splitlines()
    expected = [("abseiling/a1.mp4", 0), ("abseiling/a2.mp4", 0), ("bowling/b1.webm", 1), ("zumba/z1.mp4", 2)]
    assert lines == [f"{kinetics_folder / name} {label}" for name, label in expected]


def test_relative_paths_resolve_through_the_dataset_reader(tmp_path, kinetics_folder):
    build_manifest_from_folder(kinetics_folder, tmp_path / "lists" / "train.csv", relative=True)
    text = (tmp_path / "lists" / "train.csv").read_text()
    assert text.startswith("../train/abseiling/a1.mp4 0\n")
    entries = read_manifest(tmp_path / "lists" / "train.csv")
    assert len(entries) == 4 and all(Path(entry.path).resolve().is_file() for entry in entries)


def test_refuses_to_overwrite(tmp_path, kinetics_folder):
    output = tmp_path / "train.csv"
    build_manifest_from_folder(kinetics_folder, output)
    output.write_text("keep me\n")
    with pytest.raises(FileExistsError, match="overwrite"):
        build_manifest_from_folder(kinetics_folder, output)
    assert output.read_text() == "keep me\n"
    output.unlink()  # the class list alone also blocks the write, and nothing is half-written
    with pytest.raises(FileExistsError, match="train_classes.txt"):
        build_manifest_from_folder(kinetics_folder, output)
    assert not output.exists()
    build_manifest_from_folder(kinetics_folder, output, overwrite=True)
    assert len(read_manifest(output)) == 4


def test_reusing_a_class_list_keeps_labels_stable(tmp_path, kinetics_folder):
    train = build_manifest_from_folder(kinetics_folder, tmp_path / "train.csv")
    val_root = make_tree(tmp_path / "val", ["zumba/z9.mp4"])  # a split that lacks most classes
    build_manifest_from_folder(val_root, tmp_path / "val.csv", classes=train.classes_file)
    assert (tmp_path / "val.csv").read_text() == f"{val_root / 'zumba/z9.mp4'} 2\n"
    assert not (tmp_path / "val_classes.txt").exists()
    make_tree(val_root, ["yoga/y1.mp4"])
    with pytest.raises(ValueError, match="yoga"):
        build_manifest_from_folder(val_root, tmp_path / "val2.csv", classes=train.classes_file)


ANNOTATIONS = """label,youtube_id,time_start,time_end,split
abseiling,aaa,10,20,train
"bowling, ten-pin",bbb,0,10,train
zumba,ccc,5,15,val
abseiling,gone,1,11,train
"""


def test_annotation_manifest(tmp_path):
    files = ["aaa_000010_000020.mp4", "bowling, ten-pin/bbb_000000_000010.mp4", "ccc_000005_000015.mp4"]
    videos = make_tree(tmp_path / "videos", files)  # flat and per-class layouts mixed
    (tmp_path / "train.csv").write_text(ANNOTATIONS)
    summary = build_manifest_from_annotations(tmp_path / "train.csv", videos, tmp_path / "out.csv", split="train")
    assert (summary.num_videos, summary.num_classes, summary.missing) == (2, 2, ["gone_000001_000011.mp4"])
    assert read_class_list(summary.classes_file) == ["abseiling", "bowling, ten-pin"]
    assert (tmp_path / "out.csv").read_text() == (
        f"{videos / 'aaa_000010_000020.mp4'} 0\n{videos / 'bowling, ten-pin' / 'bbb_000000_000010.mp4'} 1\n"
    )
    everything = build_manifest_from_annotations(tmp_path / "train.csv", videos, tmp_path / "all.csv")
    assert (everything.num_videos, everything.num_classes) == (3, 3)


def test_annotation_csv_errors(tmp_path):
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\naaa,0,10,test\n")
    with pytest.raises(ValueError, match="missing column.*label"):
        build_manifest_from_annotations(tmp_path / "test.csv", tmp_path, tmp_path / "out.csv")
    (tmp_path / "bad.csv").write_text("label,youtube_id,time_start,time_end\nx,aaa,ten,20\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: bad time_start"):
        build_manifest_from_annotations(tmp_path / "bad.csv", tmp_path, tmp_path / "out.csv")


def test_cli(tmp_path, kinetics_folder, capsys):
    assert main(["folder", str(kinetics_folder), str(tmp_path / "train.csv"), "--relative"]) == 0
    assert "4 videos, 3 classes" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main(["folder", str(kinetics_folder), str(tmp_path / "train.csv")])
    assert refused.value.code == 2 and "already exist" in capsys.readouterr().err


def test_cli_runs_as_a_module(monkeypatch, capsys):
    """What `python -m hf_vjepa_area.data.manifest --help` does, in-process (a fresh interpreter
    would spend seconds importing the package)."""
    for name in [name for name in sys.modules if name.startswith("hf_vjepa_area.data")]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    monkeypatch.setattr(sys, "argv", ["manifest", "--help"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # raised if the package pre-imported the module
        with pytest.raises(SystemExit) as finished:
            runpy.run_module("hf_vjepa_area.data.manifest", run_name="__main__", alter_sys=True)
    assert finished.value.code == 0
    assert "{folder,annotations}" in capsys.readouterr().out
