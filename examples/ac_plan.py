#!/usr/bin/env python
r"""Plan robot actions with V-JEPA 2-AC: CEM in latent space towards a goal image, plus the energy landscape.

    # Built-in demo: a small random-init world model and a generated scene (a square to be moved), on CPU
    # in about a minute. Prints the plan, writes outputs/ac_plan/energy.png.
    python examples/ac_plan.py

    # Meta's released world model (or a folder converted from it) on your frames: the context frame is the
    # last frame of --context, the goal the last frame of --goal (videos or images); --state is the robot's
    # end-effector state (x y z roll pitch yaw gripper, as DROID) at the context frame.
    python examples/ac_plan.py --model vjepa2-ac-vitg.pt --context now.mp4 --goal goal.png \
        --state 0.45 0.0 0.3 3.14 0.0 0.0 0.0

Planning is Meta's (hf_vjepa_area.ac.CEMConfig holds its settings: rollout 2, 400 samples, top 10, 10 CEM
steps, momentum 0.15, translation deltas clipped to 0.05, gripper to 0.75): the energy of an action sequence
is the mean absolute difference between the predicted last frame's layer-normed latents and the goal's.
The landscape is that energy for one action whose two --dims sweep +-0.05 (others 0): dark is low; white
frames mark the lowest cell and the plan's first action.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

try:
    import hf_vjepa_area  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_vjepa_area.ac import CEMConfig, cem, load_world_model, rollout_energy
from hf_vjepa_area.ac.demo import DEMO_SIZE, demo_world_model
from hf_vjepa_area.ac.landscape import energy_landscape, heatmap_rgb, write_png
from hf_vjepa_area.conversion import ConversionError
from hf_vjepa_area.data import normalize
from hf_vjepa_area.data.decoding import VideoDecodeError, open_video
from hf_vjepa_area.data.synthetic import render_moving_square
from hf_vjepa_area.data.transforms import resize_short_side

ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "dgripper")


def demo_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [H, W, 3] context and goal: a bright square before and after moving diagonally."""
    video = render_moving_square((1, 1), frames=8, size=DEMO_SIZE, rng=np.random.default_rng(0))
    return torch.from_numpy(video[0]), torch.from_numpy(video[-1])


def last_frame(path: str) -> torch.Tensor:
    with open_video(path) as video:
        return video.get_frames([video.info.num_frames - 1])[0]


def to_clip(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [H, W, 3] -> normalised [1, 3, 1, h, w]: short side resized to the model's size, centre crop."""
    image = resize_short_side(frame.permute(2, 0, 1).unsqueeze(0), min(size))
    height, width = image.shape[-2:]
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    image = image[..., top : top + size[0], left : left + size[1]]
    return normalize(image).transpose(0, 1).unsqueeze(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="vjepa2-ac-vitg.pt, or a folder converted from it (default: the built-in demo)")
    parser.add_argument("--predictor-heads", type=int, help="heads of an AC predictor of an unreleased width (a .pt --model)")
    parser.add_argument("--context", help="video or image whose last frame is the current scene (with --model)")
    parser.add_argument("--goal", help="video or image whose last frame is the goal (with --model)")
    parser.add_argument("--state", type=float, nargs=7, metavar="S", help="end-effector state at the context frame (default 0s)")
    parser.add_argument("--dims", type=int, nargs=2, default=(0, 1), metavar="D", help="action dims of the landscape (default 0 1: dx dy)")
    parser.add_argument("--steps", type=int, default=21, help="landscape cells per dim")
    parser.add_argument("--chunk", type=int, help="candidates per predictor call (bounds memory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/ac_plan/energy.png", help="the landscape PNG")
    args = parser.parse_args(argv)
    try:
        if args.model is None and (args.context or args.goal):
            raise ValueError("--context/--goal: pass --model too (the built-in demo makes its own scene)")
        if args.model is not None and not (args.context and args.goal):
            raise ValueError("--model needs --context and --goal, videos or images (their last frames are the scene and the goal)")
        if not all(0 <= d < 7 for d in args.dims) or args.dims[0] == args.dims[1]:
            raise ValueError(f"--dims: two different action dims in 0..6 ({' '.join(ACTION_NAMES)}), got {args.dims}")
        started = time.perf_counter()
        if args.model is None:
            world_model, (context, goal) = demo_world_model(), demo_scene()
        else:
            options = {"predictor_heads": args.predictor_heads} if args.predictor_heads else {}
            world_model = load_world_model(args.model, **options)
            context, goal = last_frame(args.context), last_frame(args.goal)
    except (ConversionError, VideoDecodeError, OSError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    world_model.to(device)
    size = tuple(world_model.predictor.config.img_size)
    state = torch.tensor(args.state or [0.0] * 7, device=device).view(1, 1, 7)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        latents = world_model.encode(to_clip(context, size).to(device)).float()
        goal_latents = world_model.encode(to_clip(goal, size).to(device)).float()[0, -1]
        energy = rollout_energy(world_model, latents, state, goal_latents, chunk=args.chunk)
        config = CEMConfig()
        plan = cem(lambda a: energy(a).float(), config, seed=args.seed, device=device).cpu()
        planned = time.perf_counter()
        landscape, values = energy_landscape(lambda a: energy(a.to(device)), tuple(args.dims), config.max_translation,
                                             args.steps, chunk=args.chunk)  # fmt: skip
        plan_energy = energy(plan.unsqueeze(0).to(device)).item()
        still_energy = energy(torch.zeros(1, config.rollout, 7, device=device)).item()

    print(f"planned actions ({config.rollout} steps; CEM {config.samples} samples, top {config.topk}, {config.cem_steps} iterations, "
          f"seed {args.seed}, {planned - started:.1f} s):")  # fmt: skip
    print("  step " + " ".join(f"{n:>9}" for n in ACTION_NAMES))
    for step, action in enumerate(plan.tolist()):
        print(f"  {step:>4} " + " ".join(f"{v:>9.4f}" for v in action))
    print(f"energy: plan {plan_energy:.4f}, no motion {still_energy:.4f}")
    low = divmod(int(landscape.argmin()), args.steps)
    nearest = [int((values - plan[0, d].double()).abs().argmin()) for d in args.dims]
    names = [ACTION_NAMES[d] for d in args.dims]
    print(f"landscape over {names[0]} (rows) x {names[1]} (columns), {values[0]:.3f}..{values[-1]:.3f}: energy "
          f"{landscape.min():.4f}..{landscape.max():.4f}, lowest at {names[0]}={values[low[0]]:.3f}, {names[1]}={values[low[1]]:.3f}")  # fmt: skip
    image = heatmap_rgb(landscape, marks=[low, tuple(nearest)])
    text = {"Title": "V-JEPA 2-AC energy landscape", "Rows": f"{names[0]} {values[0]:.3f}..{values[-1]:.3f} (top to bottom)",
            "Columns": f"{names[1]} {values[0]:.3f}..{values[-1]:.3f} (left to right)",
            "Energy": f"{landscape.min():.4f} (dark) .. {landscape.max():.4f} (bright)"}  # fmt: skip
    write_png(args.out, image, text)
    print(f"wrote {args.out} ({time.perf_counter() - started:.1f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
