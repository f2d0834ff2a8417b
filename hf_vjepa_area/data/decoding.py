"""Decode chosen frames of a video file into a uint8 tensor `[T, H, W, C]` (RGB).

Two backends. PyAV is always there (its wheels bundle FFmpeg). torchcodec is PyTorch's decoder
and is faster (about 1.5x on H.264 mp4 here: `benchmarks/decode_throughput.py`), but it needs FFmpeg
shared libraries on the system, and on containers without a sample index it returns wrong frames
when the stream has B-frames (AVI: shifted by one; MPEG-TS: from a damaged seek). So
`backend="auto"` uses torchcodec only when it decodes here *and* the file is mp4/mov/mkv/webm;
otherwise PyAV, whose reader checks every seek and falls back to decoding from the start.

Frame index `i` means the i-th frame in presentation order, as decord (used by V-JEPA 2) and
torchcodec's exact mode count them, so clip indices mean the same frames on every backend.

A folder of frames (Jester, many SSv2 copies) reads like a video: frame `i` is the i-th of its
.jpg/.jpeg/.png files sorted by name, decoded with PyAV whatever the backend. A folder carries no
frame rate, so its `VideoInfo.fps` is None: the probe's clips step by `frame_step` (as V-JEPA 2's
frozen evals of Jester and SSv2 do, with no frame rate involved), and loaders that derive the step
from a frame rate (`PretrainingClipDataset(fps=...)`) ask for a fixed `frame_step` instead.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np
import torch

BACKENDS = ("pyav", "torchcodec")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")  # image files a frame folder's frames may be


class VideoDecodeError(RuntimeError):
    """The file is missing, unreadable or corrupt. Data loaders catch it and skip the sample."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float | None  # None when the container carries no usable frame rate
    height: int
    width: int


# Containers with a sample index and presentation timestamps, where torchcodec's frames match PyAV's
# for every start frame, B-frames and open GOPs included (tests/data/test_video_decoding.py).
TORCHCODEC_CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv", ".webm")


@functools.cache
def torchcodec_available() -> bool:
    """True when torchcodec decodes a video here (checked once per process).

    Importing torchcodec succeeds without FFmpeg (it loads its FFmpeg libraries on first use), so
    the check decodes a one-frame clip made in memory with PyAV.
    """
    try:
        from torchcodec.decoders import VideoDecoder

        VideoDecoder(_one_frame_clip())[0]
    except Exception:  # ImportError, or RuntimeError/OSError when it cannot load FFmpeg
        return False
    return True


def _one_frame_clip() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return buffer.getvalue()


def resolve_backend(backend: str, path: str | os.PathLike | None = None) -> str:
    """Map "auto" to the best working backend for `path`; reject unknown or unusable names early."""
    if backend == "auto":
        suited = path is None or os.fspath(path).lower().endswith(TORCHCODEC_CONTAINERS)
        return "torchcodec" if suited and torchcodec_available() else "pyav"
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose 'auto' or one of {BACKENDS}")
    if backend == "torchcodec" and not torchcodec_available():
        raise RuntimeError("backend='torchcodec' requested but torchcodec is not installed or cannot load FFmpeg")
    return backend


def open_video(path: str | os.PathLike, backend: str = "auto", num_threads: int = 0) -> VideoReader:
    """Open a video file or a folder of frames for frame reads; use as a context manager.

    `num_threads=0` lets FFmpeg choose; use 1 inside DataLoader workers, which already supply
    the parallelism.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        resolve_backend(backend)  # an unknown or unusable backend fails the same way for folders
        return _FrameFolderReader(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(f"{path}: no such file or frame folder")
    reader = _TorchCodecReader if resolve_backend(backend, path) == "torchcodec" else _PyAVReader
    return reader(path, num_threads)


def read_frames(path: str | os.PathLike, indices: Sequence[int], backend: str = "auto") -> torch.Tensor:
    """Frames at `indices` (any order, repeats allowed) as uint8 `[len(indices), H, W, 3]`."""
    with open_video(path, backend) as video:
        return video.get_frames(indices)


class VideoReader:
    """An open video. Subclasses decode a sorted list of distinct indices."""

    path: str
    info: VideoInfo

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at `indices` as uint8 `[len(indices), H, W, 3]`; each distinct frame is decoded once."""
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("no frame indices requested")
        wanted = sorted(set(indices))
        if wanted[0] < 0 or wanted[-1] >= self.info.num_frames:
            raise IndexError(
                f"{self.path}: frame indices must lie in [0, {self.info.num_frames}), got {wanted[0]}..{wanted[-1]}"
            )
        frames = self._decode_sorted(wanted)
        row_of = {index: row for row, index in enumerate(wanted)}
        return frames[[row_of[i] for i in indices]]

    def _decode_sorted(self, wanted: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _PyAVReader(VideoReader):
    def __init__(self, path: str, num_threads: int):
        self.path = path
        try:
            self._container = av.open(path)
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(f"{path}: cannot open video ({error})") from error
        try:
            if not self._container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = num_threads
            self._frame_pts: list[int] | None = None
            self._keyframe_pts: list[int] = []
            self._rewind_needed = False
            # Container metadata first; count packets only when a format does not store it.
            num_frames = self._stream.frames or len(self._scan_frame_pts() or [])
            if num_frames == 0:
                raise VideoDecodeError(f"{path}: video stream has no frames")
            rate = self._stream.average_rate or self._stream.guessed_rate
            codec = self._stream.codec_context
            self.info = VideoInfo(num_frames, float(rate) if rate else None, codec.height, codec.width)
        except BaseException:
            self.close()
            raise

    def _scan_frame_pts(self) -> list[int] | None:
        """Presentation timestamps of all frames, sorted, from demuxing alone (no decoding).

        Index -> pts is what makes a seek exact: jump to the keyframe before the first wanted
        frame and know every decoded frame's index from its pts. None when packets lack pts.
        Keyframe pts are kept too, as earlier places to seek to when a seek lands too late.
        """
        if self._frame_pts is None:
            try:
                if self._rewind_needed:  # an earlier read left the demuxer mid-file
                    self._container.seek(0)
                packets = [(p.pts, p.is_keyframe) for p in self._container.demux(self._stream) if p.size and not p.is_discard]
            except av.FFmpegError as error:
                raise VideoDecodeError(f"{self.path}: cannot demux ({error})") from error
            self._rewind_needed = True
            pts = [p for p, _ in packets]
            self._frame_pts = sorted(pts) if pts and None not in pts else []
            self._keyframe_pts = sorted(p for p, key in packets if key and p is not None)
        return self._frame_pts or None

    def _seek_targets(self, frame_pts: list[int], first: int) -> list[int]:
        """Where to seek for frame `first`, latest first.

        A seek to the first wanted frame's pts can land on a keyframe *after* it: with open GOPs
        or B-frames the frames just before a keyframe in presentation order come after it in
        decode order and need the previous GOP. So also try the two keyframes before that pts.
        """
        target = frame_pts[first]
        earlier = [pts for pts in self._keyframe_pts if pts < target][-2:]
        return [target, *reversed(earlier)]

    def _decode_sorted(self, wanted: list[int]) -> torch.Tensor:
        first = wanted[0]
        frame_pts = self._scan_frame_pts() if first > 0 else None
        decoded, seek = {}, "none"
        try:
            if frame_pts is not None and first < len(frame_pts):
                index_of_pts = {pts: i for i, pts in enumerate(frame_pts)}
                for target in self._seek_targets(frame_pts, first):
                    self._container.seek(target, stream=self._stream, backward=True)
                    decoded, seek = self._collect_after_seek(self._container.decode(self._stream), index_of_pts, wanted)
                    if seek != "late":
                        break
            if seek != "ok":  # no seek (frame 0 wanted, no usable pts), every seek late, or untrusted
                # From the start, counting frames in the order the decoder outputs them (presentation
                # order): what a read from frame 0 does, and the way out when seeking cannot be trusted.
                if self._rewind_needed:
                    self._container.seek(0)
                decoded = self._collect(enumerate(self._container.decode(self._stream)), wanted)
        except av.FFmpegError as error:
            raise VideoDecodeError(f"{self.path}: decoding failed ({error})") from error
        finally:
            self._rewind_needed = True
        missing = [i for i in wanted if i not in decoded]
        if missing:
            raise VideoDecodeError(
                f"{self.path}: could not decode {len(missing)} of {len(wanted)} requested frames "
                f"(first missing: {missing[0]}; metadata says {self.info.num_frames} frames); "
                "truncated or corrupt file?"
            )
        return torch.from_numpy(np.stack([decoded[i] for i in wanted]))

    def _collect_after_seek(self, frames, index_of_pts: dict[int, int], wanted: list[int]) -> tuple[dict, str]:
        """The wanted frames after a seek, indexed by their pts, and how the seek went.

        "ok": it landed at or before `wanted[0]` (frames still missing then are missing from the file).
        "late": it landed after `wanted[0]` (open GOPs: leading B-frames need the previous GOP), so the
        caller retries from earlier. "untrusted": the first frame out is no keyframe (no index to seek
        by, e.g. MPEG-TS: the seek lands mid-GOP and the decoder returns damaged frames), or the pts
        do not step through the index one frame at a time or are unknown (AVI stores no presentation
        time, so with B-frames FFmpeg's guesses say nothing about a frame's index), or no frame came
        out at all: the caller decodes from the start.
        """
        wanted_set, decoded, previous = set(wanted), {}, None
        for count, frame in enumerate(frames):
            index = index_of_pts.get(frame.pts)
            if (count == 0 and not frame.key_frame) or index is None or (previous is not None and index != previous + 1):
                return {}, "untrusted"
            if count == 0 and index > wanted[0]:
                return {}, "late"
            previous = index
            if index in wanted_set:
                decoded[index] = self._rgb(frame)
            if index >= wanted[-1]:
                break
        return decoded, "ok" if previous is not None else "untrusted"  # no frame at all after the seek

    def _collect(self, frames, wanted: list[int]) -> dict[int, np.ndarray]:
        """RGB arrays of the wanted indices among `(index, frame)` pairs, stopping after the last one."""
        wanted_set, last, decoded = set(wanted), wanted[-1], {}
        for index, frame in frames:
            if index in wanted_set and index not in decoded:
                decoded[index] = self._rgb(frame)
            if index >= last:
                break
        return decoded

    def _rgb(self, frame) -> np.ndarray:
        # At the stream's declared size: a stream whose resolution changes mid-way (joined MPEG-TS
        # files, adaptive streams) still gives frames that stack into one clip.
        return frame.to_ndarray(format="rgb24", width=self.info.width, height=self.info.height)

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()


class _TorchCodecReader(VideoReader):
    def __init__(self, path: str, num_threads: int):
        from torchcodec.decoders import VideoDecoder

        self.path = path
        try:
            self._decoder = VideoDecoder(
                path, dimension_order="NHWC", seek_mode="exact", num_ffmpeg_threads=num_threads
            )
            metadata = self._decoder.metadata
        except (RuntimeError, ValueError, OSError) as error:
            raise VideoDecodeError(f"{path}: cannot open video ({error})") from error
        if not metadata.num_frames:
            raise VideoDecodeError(f"{path}: video stream has no frames")
        # The exact-mode scan counts readable frames; fewer than the header lists means a cut-off
        # file, which PyAV reports when decoding. Report it here too so both backends agree.
        listed = metadata.num_frames_from_header
        if listed and metadata.num_frames < listed:
            raise VideoDecodeError(
                f"{path}: only {metadata.num_frames} of the {listed} frames the header lists are readable; "
                "truncated or corrupt file?"
            )
        self.info = VideoInfo(metadata.num_frames, metadata.average_fps, metadata.height, metadata.width)

    def _decode_sorted(self, wanted: list[int]) -> torch.Tensor:
        try:
            return self._decoder.get_frames_at(wanted).data
        except (RuntimeError, ValueError, IndexError) as error:
            raise VideoDecodeError(f"{self.path}: decoding failed ({error})") from error

    def close(self) -> None:
        self._decoder = None


def list_frames(folder: str | os.PathLike) -> list[str]:
    """A frame folder's image files (`FRAME_EXTENSIONS`, any case), sorted by name."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if e.name.lower().endswith(FRAME_EXTENSIONS) and e.is_file()]
    return sorted(names)


class _FrameFolderReader(VideoReader):
    """Frame `i` is the i-th image of the folder by name. Every frame is decoded at the first one's size
    (as the video readers keep a stream's declared size); a missing, empty or corrupt image raises
    `VideoDecodeError` naming it, so loaders skip the folder like a corrupt video."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._files = [os.path.join(path, name) for name in list_frames(path)]
        except OSError as error:
            raise VideoDecodeError(f"{path}: cannot list frame folder ({error})") from error
        if not self._files:
            raise VideoDecodeError(f"{path}: folder holds no frames ({'/'.join(FRAME_EXTENSIONS)} files)")
        height, width = self._decode(self._files[0]).shape[:2]
        self.info = VideoInfo(len(self._files), None, height, width)

    def _decode(self, file: str, size: tuple[int, int] | None = None) -> np.ndarray:
        try:
            with av.open(file) as container:
                frame = next(container.decode(video=0), None)
                if frame is None:
                    raise VideoDecodeError(f"{file}: image holds no frame; empty or corrupt file?")
                if size is None:
                    return frame.to_ndarray(format="rgb24")
                return frame.to_ndarray(format="rgb24", width=size[1], height=size[0])
        except (av.FFmpegError, OSError, IndexError) as error:  # IndexError: no video stream in the file
            raise VideoDecodeError(f"{file}: cannot decode frame ({error})") from error

    def _decode_sorted(self, wanted: list[int]) -> torch.Tensor:
        size = (self.info.height, self.info.width)
        return torch.from_numpy(np.stack([self._decode(self._files[i], size) for i in wanted]))

    def close(self) -> None:
        pass
