import logging

import pytest
import torch
from torch.utils.data import DataLoader

from hf_vjepa_area.data import (
    EvalTransform,
    SkippedSample,
    VideoClipDataset,
    clip_indices,
    collate_skip_none,
    read_frames,
    read_manifest,
)


def test_read_manifest_resolves_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "sub" / "list.csv"
    manifest.write_text("a.mp4 0\n\n/abs/b c.mp4 12\nclips/d.mp4   3\n")
    entries = read_manifest(manifest)
    assert [(e.path, e.label) for e in entries] == [
        (str(tmp_path / "sub" / "a.mp4"), 0),
        ("/abs/b c.mp4", 12),
        (str(tmp_path / "sub" / "clips" / "d.mp4"), 3),
    ]


def test_read_manifest_drops_a_byte_order_mark_and_surrounding_spaces(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_bytes("\ufeffa.mp4 0\r\n  b.mp4 1  \n".encode("utf-8"))
    assert [(e.path, e.label) for e in read_manifest(manifest)] == [(str(tmp_path / "a.mp4"), 0), (str(tmp_path / "b.mp4"), 1)]


@pytest.mark.parametrize(
    "bad_line,message",
    [
        ("video.mp4", "expected 'path label'"),
        ("video.mp4 cat", "label must be an integer"),
        ("video.mp4 -1", "label must be >= 0"),
    ],
)
def test_read_manifest_rejects_malformed_lines(tmp_path, bad_line, message):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(f"ok.mp4 1\n{bad_line}\n")
    with pytest.raises(ValueError, match=rf"bad\.csv:2: {message}"):
        read_manifest(manifest)


def test_read_manifest_rejects_empty(tmp_path):
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(ValueError, match="lists no videos"):
        read_manifest(tmp_path / "empty.csv")


def test_train_items(synthetic_set):
    dataset = VideoClipDataset(synthetic_set.train_manifest, train=True, frames_per_clip=4, frame_step=2, crop_size=16)
    assert len(dataset) == 8 and dataset.labels == [0, 0, 1, 1, 2, 2, 3, 3]
    clips, label, index = dataset[3]
    assert clips.shape == (1, 3, 4, 16, 16) and clips.dtype == torch.uint8
    assert (label, index) == (1, 3)


def test_eval_items_are_segment_major_views(synthetic_set):
    dataset = VideoClipDataset(
        synthetic_set.val_manifest, train=False, frames_per_clip=4, frame_step=2, num_segments=2, num_views=3,
        crop_size=16,
    )
    clips, label, index = dataset[1]
    assert clips.shape == (6, 3, 4, 16, 16) and (label, index) == (1, 1)
    frames = read_frames(dataset.entries[1].path, clip_indices(24, 4, 2, 2).reshape(-1)).permute(0, 3, 1, 2)
    for segment in range(2):
        expected = EvalTransform(16, num_views=3)(frames[segment * 4 : segment * 4 + 4])
        assert torch.equal(clips[segment * 3 : segment * 3 + 3], expected)


def test_training_refuses_several_views(synthetic_set):
    with pytest.raises(ValueError, match="num_views"):
        VideoClipDataset(synthetic_set.train_manifest, train=True, num_views=3)


@pytest.fixture
def manifest_with_bad_videos(tmp_path, synthetic_set):
    good = [line.split() for line in synthetic_set.train_manifest.read_text().splitlines()]
    (tmp_path / "noise.mp4").write_bytes(b"\x00garbage" * 500)
    lines = [f"{synthetic_set.root / path} {label}" for path, label in good]
    lines[1:1] = ["missing.mp4 0", "noise.mp4 2"]
    manifest = tmp_path / "mixed.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, len(good)


def test_bad_videos_are_skipped_with_their_reason_and_workers_do_not_log(manifest_with_bad_videos, caplog):
    manifest, _ = manifest_with_bad_videos
    dataset = VideoClipDataset(manifest, train=True, frames_per_clip=4, frame_step=2, crop_size=16)
    with caplog.at_level(logging.DEBUG, logger="hf_vjepa_area"):
        missing, noise = dataset[1], dataset[2]
    assert isinstance(missing, SkippedSample) and missing.index == 1 and "no such file" in missing.reason
    assert isinstance(noise, SkippedSample) and noise.path.endswith("noise.mp4")
    assert not caplog.records  # runs.SkippedFiles names them, once per run
    batch = collate_skip_none([dataset[0], missing, noise])
    assert batch["skipped"] == 2 and batch["skipped_samples"] == [missing, noise]
    assert batch["skipped_paths"] == [missing.path, noise.path]


def test_every_skipped_file_is_named_once_whatever_the_worker_count(synthetic_set, tmp_path, caplog):
    """Two workers, two epochs, bad files spread over the batches of both workers: each named once, with its reason."""
    from hf_vjepa_area import runs

    good = [line.split() for line in synthetic_set.train_manifest.read_text().splitlines()]
    bad = [tmp_path / f"missing_{i}.mp4" for i in range(3)] + [tmp_path / f"noise_{i}.mp4" for i in range(3)]
    for path in bad[3:]:
        path.write_bytes(b"\x00garbage" * 500)
    lines = [f"{synthetic_set.root / path} {label}" for path, label in good[:6]]
    for i, path in enumerate(bad):
        lines.insert(2 * i, f"{path} 0")
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    dataset = VideoClipDataset(tmp_path / "bad.csv", train=True, frames_per_clip=4, frame_step=2, crop_size=16)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_skip_none)
    skipped = runs.SkippedFiles()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            for batch in loader:
                skipped.add(batch["skipped_samples"])
    named = [r.getMessage() for r in caplog.records if "skipping video" in r.getMessage()]
    assert sorted(message.split()[2].rstrip(":") for message in named) == sorted(map(str, bad))
    assert all("no such file" in m for m in named if "missing_" in m)
    assert skipped.counts == {str(path): 2 for path in bad} and skipped.summary()["count"] == 6


def test_too_short_videos_follow_min_frames(synthetic_set):
    options = dict(train=True, frames_per_clip=16, frame_step=4, crop_size=16)
    strict = VideoClipDataset(synthetic_set.train_manifest, min_frames=64, **options)  # 24-frame videos
    assert isinstance(strict[0], SkippedSample) and "at least 64" in strict[0].reason
    padded = VideoClipDataset(synthetic_set.train_manifest, **options)
    assert padded[0][0].shape == (1, 3, 16, 16, 16)


def test_dataloader_with_workers_counts_skips(manifest_with_bad_videos):
    manifest, num_good = manifest_with_bad_videos
    dataset = VideoClipDataset(manifest, train=True, frames_per_clip=4, frame_step=2, crop_size=16)
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_skip_none)
    kept, skipped, skipped_paths = [], 0, []
    for batch in loader:
        if batch["clips"] is not None:
            assert batch["clips"].shape == (len(batch["labels"]), 1, 3, 4, 16, 16)
        kept += batch["indices"].tolist()
        skipped += batch["skipped"]
        skipped_paths += batch["skipped_paths"]
    assert skipped == 2 and sorted(p.rsplit("/", 1)[-1] for p in skipped_paths) == ["missing.mp4", "noise.mp4"]
    assert sorted(kept) == [i for i in range(num_good + 2) if i not in (1, 2)]


def test_collate_of_only_skipped_items():
    batch = collate_skip_none([None, SkippedSample(4, "x.mp4", "corrupt")])
    assert batch["clips"] is None and batch["labels"].numel() == 0
    assert batch["skipped"] == 2 and batch["skipped_paths"] == ["x.mp4"]
