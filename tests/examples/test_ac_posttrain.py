"""`examples/ac_posttrain.py` on tiny generated trajectories:

- a run killed (SIGKILL) right after a checkpoint and resumed ends with the uninterrupted run's losses and
  predictor weights, exactly;
- the trained world model folder loads with `load_world_model`;
- 2 processes (DDP) at the same global batch train like 1;
- a new predictor on an encoder `.pt`, with extrinsics;
- an existing output dir is not reused without --resume / --overwrite; a bad --data is one line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vjepa_area.ac.data import write_synthetic_trajectories
from tests.examples.test_k400_probe import REPO, env, results, run
from tests.numerics import assert_matches

SCRIPT = REPO / "examples" / "ac_posttrain.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_trajectories(tmp_path_factory.mktemp("ac") / "traj", count=3, num_frames=20, size=32, fps=8)


def tiny_args(data: Path, out: Path, *extra) -> list[str]:
    return ["--data", str(data), "--output-dir", str(out), "--frames", "4", "--crop-size", "32", "--batch-size", "2",
            "--steps", "4", "--checkpoint-every", "2", "--num-workers", "0", "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ac_ref") / "run"
    run([sys.executable, str(SCRIPT), *tiny_args(data, out)], cwd=out.parent)
    return out


def test_demo_run_writes_a_loadable_world_model(reference):
    from hf_vjepa_area.ac import load_world_model

    result = results(reference)
    assert result["steps"] == 4 and len(result["history"]["rollout"]) == 4
    model = load_world_model(reference / "model")
    saved = load_file(str(reference / "model" / "ac_predictor.safetensors"))
    assert all(torch.equal(model.predictor.state_dict()[k], saved[k]) for k in saved)


def test_killed_run_resumes_to_the_uninterrupted_losses(data, reference, tmp_path):
    out = tmp_path / "run"
    killer = Path(__file__).with_name("kill_after_checkpoint.py")
    killed = subprocess.run([sys.executable, str(killer), str(SCRIPT), "2", *tiny_args(data, out)], cwd=tmp_path, env=env(),
                            capture_output=True, text=True, timeout=240)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000002"]
    refused = subprocess.run([sys.executable, str(SCRIPT), *tiny_args(data, out)], cwd=tmp_path, env=env(),
                             capture_output=True, text=True, timeout=240)  # fmt: skip
    assert refused.returncode != 0 and "pass --resume to continue it or --overwrite" in refused.stderr
    resumed = run([sys.executable, str(SCRIPT), *tiny_args(data, out, "--resume")], cwd=tmp_path)
    assert "resumed from" in resumed.stdout and "step_000002" in resumed.stdout
    assert results(out)["history"]["loss"] == results(reference)["history"]["loss"]  # exactly
    got, expected = (load_file(str(p / "model" / "ac_predictor.safetensors")) for p in (out, reference))
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_bad_trajectory_folder_is_one_line(tmp_path):
    failed = subprocess.run([sys.executable, str(SCRIPT), *tiny_args(tmp_path / "nothing", tmp_path / "run")], cwd=tmp_path,
                            env=env(), capture_output=True, text=True, timeout=240)  # fmt: skip
    assert failed.returncode != 0
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and "no trajectories" in message and not (tmp_path / "run").exists()


def test_a_new_predictor_on_an_encoder_checkpoint_with_extrinsics(data, tmp_path):
    import shutil

    import numpy as np

    from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaModel

    torch.manual_seed(0)
    encoder = VJEPA2AreaModel(VJEPA2AreaConfig(embed_dim=192, depth=12, num_heads=3, img_size=32, num_frames=4))
    pt = tmp_path / "encoder.pt"  # not a released file: its resolution and frame count are asked for
    torch.save({"target_encoder": {"module.backbone." + k: v for k, v in encoder.state_dict().items()}}, pt)
    refused = subprocess.run([sys.executable, str(SCRIPT), *tiny_args(data, tmp_path / "refused", "--model", str(pt))],
                             cwd=tmp_path, env=env(), capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "pass --img-size and --num-frames" in refused.stderr and "vjepa2-area-convert" in refused.stderr
    encoder_dir = tmp_path / "encoder"
    encoder.save_pretrained(encoder_dir)
    data = shutil.copytree(data, tmp_path / "traj")
    for folder in data.iterdir():
        np.save(folder / "extrinsics.npy", np.ones((20, 6), dtype=np.float32))
    out = tmp_path / "run"
    args = tiny_args(data, out, "--model", str(encoder_dir), "--use-extrinsics", "--predictor-width", "32", "--predictor-depth", "1",
                     "--predictor-heads", "2", "--no-activation-checkpointing")  # fmt: skip
    args[args.index("--steps") + 1] = "2"
    run([sys.executable, str(SCRIPT), *args], cwd=tmp_path)
    from hf_vjepa_area.ac import load_world_model

    model = load_world_model(out / "model")
    assert model.predictor.config.use_extrinsics and model.predictor.config.predictor_embed_dim == 32
    assert model.encoder.config.embed_dim == 192 and results(out)["steps"] == 2


def test_two_processes_train_like_one_at_the_same_global_batch(data, reference, tmp_path):
    from tests.examples.test_k400_probe import BIN

    out = tmp_path / "run"
    args = tiny_args(data, out)
    args[args.index("--batch-size") + 1] = "1"
    run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(SCRIPT), *args], cwd=tmp_path)
    one, two = results(reference), results(out)
    assert (one["num_processes"], two["num_processes"], two["global_batch_size"]) == (1, 2, 2)
    # The same clips every step; gradients averaged over 2 processes instead of within one batch differ in
    # the last float bits, compounded over 4 steps.
    assert_matches(torch.tensor(two["history"]["loss"]), torch.tensor(one["history"]["loss"]))  # the float32 bound
