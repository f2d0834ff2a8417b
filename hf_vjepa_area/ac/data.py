"""Robot trajectories for V-JEPA 2-AC post-training, in a DROID-like folder layout:

    ROOT/<trajectory>/video.mp4        one camera's recording
    ROOT/<trajectory>/states.npy       float [num_video_frames, 7]: end-effector x y z, roll pitch yaw
                                       (extrinsic x-y-z Euler angles, radians), gripper closedness 0..1,
                                       one row per video frame
    ROOT/<trajectory>/extrinsics.npy   optional float [num_video_frames, 6]: the camera's pose, for a
                                       predictor with use_extrinsics

A clip is `frames` frames at `fps` (every ceil(video_fps / fps)-th frame from a random start, as Meta's
DROID loader); its actions are the state differences between consecutive clip frames (`states_to_actions`).
Every random choice of sample k (trajectory, start, crop) is a function of (seed, k) alone, so a resumed
run reads the same clips as an uninterrupted one, whatever the workers or processes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..data.decoding import open_video
from ..data.transforms import TrainTransform
from .world_model import euler_to_matrix, matrix_to_euler

VIDEO_NAME = "video.mp4"
STATES_NAME = "states.npy"
EXTRINSICS_NAME = "extrinsics.npy"


def states_to_actions(states: torch.Tensor) -> torch.Tensor:
    """States [T, 7] -> actions [T - 1, 7]: xyz differences, the rotation R_{t+1} R_t^T as Euler angles, gripper
    differences (Meta's `poses_to_diffs`; `world_model.next_state` inverts it)."""
    rotations = euler_to_matrix(states[:, 3:6])
    turn = matrix_to_euler(rotations[1:] @ rotations[:-1].transpose(-1, -2))
    return torch.cat([states[1:, :3] - states[:-1, :3], turn, states[1:, 6:] - states[:-1, 6:]], dim=1)


class TrajectoryClips(torch.utils.data.Dataset):
    """Sample k -> {"clip": uint8 [C, T, crop, crop], "actions": [T-1, 7], "states": [T, 7] (+ "extrinsics")}.

    Sample k reads trajectory `perm_e[k mod n]` of the epoch-e permutation (e = k div n), both drawn from
    `seed`; its start frame and crop from `seed` and k."""

    def __init__(self, root: str | Path, frames: int = 8, fps: float = 4.0, crop_size: int = 256,
                 crop_scale=(1.777, 1.777), crop_ratio=(0.75, 1.35), seed: int = 0, extrinsics: bool = False):  # fmt: skip
        root = Path(root)
        self.trajectories = sorted(p for p in root.iterdir() if (p / VIDEO_NAME).is_file()) if root.is_dir() else []
        if not self.trajectories:
            raise ValueError(f"{root}: no trajectories (expected ROOT/<name>/{VIDEO_NAME} with {STATES_NAME}; see hf_vjepa_area.ac.data)")
        self.frames, self.fps, self.seed, self.extrinsics = frames, fps, seed, extrinsics
        self.crop = dict(crop_size=crop_size, scale=tuple(crop_scale), ratio=tuple(crop_ratio), horizontal_flip=False)
        self.lengths, self.steps = [], []
        for path in self.trajectories:
            with open_video(path / VIDEO_NAME) as video:
                num_frames, video_fps = video.info.num_frames, video.info.fps or fps
            step = math.ceil(video_fps / fps)
            states = self._array(path, STATES_NAME, 7)
            if len(states) != num_frames:
                raise ValueError(f"{path / STATES_NAME}: {len(states)} rows for {num_frames} video frames (one state per frame)")
            if extrinsics and len(self._array(path, EXTRINSICS_NAME, 6)) != num_frames:
                raise ValueError(f"{path / EXTRINSICS_NAME}: one row per video frame ({num_frames}) needed")
            if num_frames < frames * step:
                raise ValueError(f"{path / VIDEO_NAME}: {num_frames} frames, fewer than {frames} clip frames x step {step} "
                                 f"({video_fps:g} fps video, {fps:g} fps clips): use fewer --frames or a lower --fps")  # fmt: skip
            self.lengths.append(num_frames)
            self.steps.append(step)

    @staticmethod
    def _array(path: Path, name: str, columns: int) -> np.ndarray:
        file = path / name
        if not file.is_file():
            raise ValueError(f"{file}: missing (float [num_video_frames, {columns}])")
        array = np.load(file, allow_pickle=False)
        if array.ndim != 2 or array.shape[1] != columns:
            raise ValueError(f"{file}: expected shape [num_video_frames, {columns}], got {list(array.shape)}")
        return array

    def __len__(self) -> int:
        return len(self.trajectories)

    def trajectory_of(self, k: int) -> int:
        epoch, i = divmod(k, len(self.trajectories))
        order = torch.randperm(len(self.trajectories), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        return int(order[i])

    def __getitem__(self, k: int) -> dict:
        t = self.trajectory_of(k)
        path, length, step = self.trajectories[t], self.lengths[t], self.steps[t]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + 7_919 * (k + 1))
        span = self.frames * step
        start = int(torch.randint(length - span, (1,), generator=generator)) if length > span else 0
        indices = list(range(start, start + span, step))
        with open_video(path / VIDEO_NAME, num_threads=1) as video:
            frames = video.get_frames(indices).permute(0, 3, 1, 2)  # [T, C, H, W] uint8
        clip = TrainTransform(**self.crop, generator=generator)(frames)[0]
        states = torch.from_numpy(self._array(path, STATES_NAME, 7)[indices]).float()
        sample = {"clip": clip, "actions": states_to_actions(states.double()).float(), "states": states}
        if self.extrinsics:
            sample["extrinsics"] = torch.from_numpy(self._array(path, EXTRINSICS_NAME, 6)[indices]).float()
        return sample


class StepSampler(torch.utils.data.Sampler):
    """Batches of sample numbers for steps `start_step`.. of `total_steps`: process `rank` of `world` takes its
    slice of each step's global batch."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start_step, self.total_steps, self.batch_size, self.rank, self.world = start_step, total_steps, batch_size, rank, world

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            first = (step * self.world + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def write_synthetic_trajectories(root: str | Path, count: int = 6, num_frames: int = 40, size: int = 64, fps: int = 8,
                                 seed: int = 0) -> Path:  # fmt: skip
    """Generated trajectories in the folder layout above: a bright square (the end effector) moves over a
    noisy background as its state's x and y do (a smooth random walk); the gripper state sets its size."""
    from ..data.synthetic import video_encoder, write_video

    root = Path(root)
    rng = np.random.default_rng(seed)
    encoder = video_encoder()
    for n in range(count):
        folder = root / f"trajectory_{n:03d}"
        if (folder / VIDEO_NAME).is_file() and (folder / STATES_NAME).is_file():
            continue
        velocity = np.cumsum(rng.normal(0, 0.004, size=(num_frames, 2)), axis=0).clip(-0.02, 0.02)
        xy = (0.5 + np.cumsum(velocity, axis=0)).clip(0.15, 0.85)
        states = np.zeros((num_frames, 7), dtype=np.float32)
        states[:, :2] = xy
        states[:, 2] = 0.3
        states[:, 5] = np.cumsum(rng.normal(0, 0.02, num_frames))
        states[:, 6] = (np.arange(num_frames) > rng.integers(num_frames // 3, num_frames)).astype(np.float32)
        background = rng.integers(30, 120, size=3) + 12 * rng.standard_normal((size, size, 3))
        video = np.empty((num_frames, size, size, 3), dtype=np.uint8)
        for t in range(num_frames):
            image = background + 4 * rng.standard_normal((size, size, 3))
            side = size // 8 if states[t, 6] > 0.5 else size // 5
            top, left = (int(round(c * (size - side))) for c in (xy[t, 1], xy[t, 0]))
            image[top : top + side, left : left + side] = (230, 200, 60)
            video[t] = image.clip(0, 255)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / STATES_NAME, states)
        write_video(folder / VIDEO_NAME, video, fps, encoder)
    return root


__all__ = ["TrajectoryClips", "StepSampler", "states_to_actions", "write_synthetic_trajectories", "VIDEO_NAME",
           "STATES_NAME", "EXTRINSICS_NAME"]  # fmt: skip
