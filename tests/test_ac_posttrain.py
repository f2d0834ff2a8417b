"""V-JEPA 2-AC post-training: the step against a hand-written reference of Meta's, the schedule, the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_vjepa_area.ac import next_state
from hf_vjepa_area.ac.data import StepSampler, TrajectoryClips, states_to_actions, write_synthetic_trajectories
from hf_vjepa_area.ac.posttrain import DroidRecipe, ac_loss, wsd_learning_rate
from hf_vjepa_area.modeling.ac_predictor_vjepa2_area import VJEPA2ACPredictor, VJEPA2ACPredictorConfig
from tests.modeling.reference import randomize
from tests.numerics import assert_matches


def meta_step_loss(predictor, h, actions, states, extrinsics, tokens_per_frame, auto_steps, loss_exp):
    """`forward_predictions` + `loss_fn` of Meta's app/vjepa_droid/train.py, on flat tokens h [B, T*N, D]."""

    def step(z, a, s, e):
        z = predictor(z, a, s, e)
        return F.layer_norm(z, (z.size(-1),))

    tpf = tokens_per_frame
    e = (lambda n: None) if extrinsics is None else (lambda n: extrinsics[:, :n])
    z_tf = step(h[:, :-tpf], actions, states[:, :-1], None if extrinsics is None else extrinsics[:, :-1])
    z = torch.cat([h[:, :tpf], z_tf[:, :tpf]], dim=1)
    for n in range(1, auto_steps):
        z = torch.cat([z, step(z, actions[:, : n + 1], states[:, : n + 1], e(n + 1))[:, -tpf:]], dim=1)
    z_ar = z[:, tpf:]

    def loss_fn(z, target):
        return torch.mean(torch.abs(z - target[:, tpf : z.size(1) + tpf]) ** loss_exp) / loss_exp

    return loss_fn(z_tf, h) + loss_fn(z_ar, h), loss_fn(z_tf, h), loss_fn(z_ar, h)


@pytest.mark.parametrize("use_extrinsics,auto_steps,loss_exp", [(False, 2, 1.0), (True, 3, 1.0), (False, 1, 2.0)])
def test_step_matches_metas_loss_and_gradients(use_extrinsics, auto_steps, loss_exp):
    config = VJEPA2ACPredictorConfig(embed_dim=24, predictor_embed_dim=32, depth=2, num_heads=2, img_size=(16, 24),
                                     patch_size=8, use_extrinsics=use_extrinsics)  # fmt: skip
    predictor = VJEPA2ACPredictor(config).double()
    randomize(predictor, 0)
    g = torch.Generator().manual_seed(0)
    frames, (h, w) = 4, config.grid_size
    latents = F.layer_norm(torch.randn(2, frames, h, w, 24, generator=g, dtype=torch.float64), (24,))
    actions = torch.randn(2, frames - 1, 7, generator=g, dtype=torch.float64)
    states = torch.randn(2, frames, 7, generator=g, dtype=torch.float64)
    extrinsics = torch.randn(2, frames, 6, generator=g, dtype=torch.float64) if use_extrinsics else None

    ours = ac_loss(predictor, latents, actions, states, extrinsics, auto_steps=auto_steps, loss_exp=loss_exp)
    ours.loss.backward()
    grads = {n: p.grad.clone() for n, p in predictor.named_parameters() if p.grad is not None}
    predictor.zero_grad()
    reference = meta_step_loss(predictor, latents.flatten(1, 3), actions, states, extrinsics, h * w, auto_steps, loss_exp)
    reference[0].backward()
    for got, expected in zip(ours, reference):
        assert_matches(got, expected)
    unused = {n for n, p in predictor.named_parameters() if p.grad is None}
    assert unused == set() if use_extrinsics else unused == {"extrinsics_encoder.weight", "extrinsics_encoder.bias"}
    assert set(grads) == {n for n, _ in predictor.named_parameters()} - unused
    for name, param in predictor.named_parameters():
        if name not in unused:
            assert_matches(grads[name], param.grad, msg=name)
    assert grads["action_encoder.weight"].abs().max() > 0  # the actions do condition the loss


def test_wsd_schedule_is_metas():
    recipe = DroidRecipe()
    total, warmup, anneal = 100, 10, 20
    lrs = [wsd_learning_rate(i, total, recipe.lr, recipe.start_lr, warmup, anneal, recipe.final_lr) for i in range(total)]
    expected_first = recipe.start_lr + (recipe.lr - recipe.start_lr) / warmup
    assert_matches(torch.tensor([lrs[0], lrs[-1]], dtype=torch.float64), torch.tensor([expected_first, recipe.final_lr], dtype=torch.float64))
    assert lrs[warmup - 1] == recipe.lr == lrs[total - anneal - 2] and lrs[-2] > lrs[-1]
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :]))


def test_actions_from_states_invert_next_state():
    g = torch.Generator().manual_seed(0)
    states = torch.cat([torch.randn(6, 3, generator=g), (torch.rand(6, 3, generator=g) - 0.5), torch.rand(6, 1, generator=g)], 1).double()
    actions = states_to_actions(states)
    for t in range(5):
        assert_matches(next_state(states[t], actions[t]), states[t + 1])


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory):
    return write_synthetic_trajectories(tmp_path_factory.mktemp("traj"), count=3, num_frames=24, size=32, fps=8)


def test_trajectory_clips_are_a_function_of_the_sample_number(trajectories):
    data = TrajectoryClips(trajectories, frames=4, fps=4, crop_size=32, seed=5)
    a, b = data[7], TrajectoryClips(trajectories, frames=4, fps=4, crop_size=32, seed=5)[7]
    assert a["clip"].shape == (3, 4, 32, 32) and a["clip"].dtype == torch.uint8
    assert a["actions"].shape == (3, 7) and a["states"].shape == (4, 7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(data.trajectory_of(k) for k in range(3)) == [0, 1, 2]  # an epoch visits every trajectory
    assert_matches(a["actions"][:, :3], a["states"][1:, :3] - a["states"][:-1, :3])
    assert list(StepSampler(2, 4, batch_size=2, rank=1, world=2)) == [[10, 11], [14, 15]]


def test_trajectory_folder_errors_say_what_is_wrong(trajectories, tmp_path):
    with pytest.raises(ValueError, match="no trajectories"):
        TrajectoryClips(tmp_path)
    with pytest.raises(ValueError, match="fewer than 40 clip frames"):
        TrajectoryClips(trajectories, frames=40, fps=8)
    bad = tmp_path / "bad" / "t0"
    bad.mkdir(parents=True)
    (bad / "video.mp4").write_bytes((trajectories / "trajectory_000" / "video.mp4").read_bytes())
    np.save(bad / "states.npy", np.zeros((3, 7), dtype=np.float32))
    with pytest.raises(ValueError, match="3 rows for 24 video frames"):
        TrajectoryClips(bad.parent)
