import os

import numpy as np
import pytest
import torch

from hf_vjepa_area.data import make_synthetic_video_dataset, read_frames, read_manifest
from hf_vjepa_area.data.synthetic import DIRECTIONS

SMALL = dict(num_classes=4, videos_per_class=2, frames=12, size=32)


def test_layout_and_manifests(synthetic_set):
    assert synthetic_set.class_names == ["right", "left", "down", "up"]
    assert synthetic_set.encoder in ("libx264", "mpeg4")
    assert (synthetic_set.root / "classes.txt").read_text().split() == synthetic_set.class_names
    train, val = read_manifest(synthetic_set.train_manifest), read_manifest(synthetic_set.val_manifest)
    assert [e.label for e in train] == [0, 0, 1, 1, 2, 2, 3, 3] and [e.label for e in val] == [0, 1, 2, 3]
    assert not {e.path for e in train} & {e.path for e in val}
    assert all(os.path.isfile(e.path) and f"/{synthetic_set.class_names[e.label]}/" in e.path for e in train + val)


def test_motion_direction_is_recoverable(synthetic_set):
    """The class is the direction the bright square travels: check it from the decoded pixels."""
    for entry in read_manifest(synthetic_set.train_manifest) + read_manifest(synthetic_set.val_manifest):
        first, last = read_frames(entry.path, [0, 23]).numpy()
        centroids = [np.argwhere(frame.min(axis=-1) > 170).mean(axis=0) for frame in (first, last)]
        moved = np.sign(np.round((centroids[1] - centroids[0]) / 4))  # ignore sub-4-pixel jitter
        assert tuple(moved) == DIRECTIONS[synthetic_set.class_names[entry.label]]


def _decoded(path):
    return read_frames(path, range(SMALL["frames"]))


def test_deterministic_given_seed(tmp_path):
    """Manifests, labels and videos depend on the seed alone, whatever ran before in the process."""
    a = make_synthetic_video_dataset(tmp_path / "a", **SMALL, seed=3)
    b = make_synthetic_video_dataset(tmp_path / "b", **SMALL, seed=3)
    c = make_synthetic_video_dataset(tmp_path / "c", **SMALL, seed=4)
    for name in ("train.csv", "val.csv", "classes.txt"):
        assert (a.root / name).read_text() == (b.root / name).read_text() == (c.root / name).read_text()
    relative = sorted(p.relative_to(a.root) for p in a.root.rglob("*.mp4"))
    assert len(relative) == 8
    assert all((a.root / p).read_bytes() == (b.root / p).read_bytes() for p in relative)
    assert all(torch.equal(_decoded(a.root / p), _decoded(b.root / p)) for p in relative)
    assert not any(torch.equal(_decoded(a.root / p), _decoded(c.root / p)) for p in relative)


def test_idempotent_and_guarded(tmp_path):
    first = make_synthetic_video_dataset(tmp_path, **SMALL)
    videos = sorted(tmp_path.rglob("*.mp4"))
    stamps = {p: p.stat().st_mtime_ns for p in videos}
    removed = videos[0]
    content = removed.read_bytes()
    removed.unlink()
    again = make_synthetic_video_dataset(tmp_path, **SMALL)
    assert again == first
    assert removed.read_bytes() == content  # regenerated identically
    assert all(p.stat().st_mtime_ns == stamps[p] for p in videos[1:])  # complete files reused
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(FileExistsError, match="other arguments"):
        make_synthetic_video_dataset(tmp_path, **{**SMALL, "frames": 13})


def test_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_video_dataset(tmp_path, num_classes=9)
    with pytest.raises(ValueError, match="size"):
        make_synthetic_video_dataset(tmp_path, size=33)
    with pytest.raises(ValueError, match="no training video"):
        make_synthetic_video_dataset(tmp_path, videos_per_class=1)
