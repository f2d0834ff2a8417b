"""`examples/ac_plan.py` with --model (a converted V-JEPA 2-AC folder) on the user's video and image: it prints a plan
and writes the energy landscape as a PNG; bad arguments are one line."""

from __future__ import annotations

import runpy

import pytest
import torch

from hf_vjepa_area.ac.data import write_synthetic_trajectories
from hf_vjepa_area.ac.landscape import write_png
from hf_vjepa_area.conversion.convert import convert
from hf_vjepa_area.data.decoding import open_video
from tests.examples.test_k400_probe import REPO
from tests.test_ac import tiny_world_model

SCRIPT = REPO / "examples" / "ac_plan.py"


@pytest.fixture(scope="module")
def main():
    return runpy.run_path(str(SCRIPT))["main"]


def test_plans_on_user_videos_with_a_converted_model(main, tmp_path, capsys):
    model = tiny_world_model()
    pt = tmp_path / "ac.pt"
    torch.save({"encoder": model.encoder.state_dict(), "predictor": model.predictor.state_dict()}, pt)
    convert(pt, tmp_path / "model", variant="tiny", img_size=32, num_frames=4, predictor_heads=4)
    videos = write_synthetic_trajectories(tmp_path / "videos", count=2, num_frames=6, size=48, fps=8)
    context = videos / "trajectory_000" / "video.mp4"
    goal = tmp_path / "goal.png"  # an image: the last frame of another trajectory
    with open_video(videos / "trajectory_001" / "video.mp4") as video:
        write_png(goal, video.get_frames([video.info.num_frames - 1])[0])
    out = tmp_path / "energy.png"
    code = main(["--model", str(tmp_path / "model"), "--context", str(context), "--goal", str(goal), "--state", *["0.1"] * 7,
                 "--dims", "0", "2", "--steps", "5", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "planned actions (2 steps; CEM 400 samples, top 10, 10 iterations" in printed
    assert "landscape over dx (rows) x dz (columns)" in printed
    assert out.read_bytes().startswith(b"\x89PNG") and b"dz -0.050..0.050" in out.read_bytes()


def test_bad_arguments_are_one_line(main, capsys):
    assert main(["--context", "x.mp4"]) == 2
    assert main(["--model", "missing.pt", "--context", "a.mp4", "--goal", "b.mp4"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("error: ") for e in errors) and "missing.pt" in errors[1]
