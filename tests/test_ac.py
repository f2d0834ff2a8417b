"""V-JEPA 2-AC: loading a released-layout `.pt` (by the reader and by conversion), rollouts and planning."""

from __future__ import annotations

import json

import pytest
import torch

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaModel
from hf_vjepa_area.ac import CEMConfig, WorldModel, cem, load_world_model, next_state, plan_actions, rollout_energy
from hf_vjepa_area.ac.planning import full_actions
from hf_vjepa_area.conversion import ConversionError
from hf_vjepa_area.conversion.convert import convert
from hf_vjepa_area.modeling.ac_predictor_vjepa2_area import (
    AC_PREDICTOR_WEIGHTS_NAME,
    VJEPA2ACPredictor,
    VJEPA2ACPredictorConfig,
)
from tests.modeling.reference import randomize
from tests.numerics import FLOAT64_RTOL, SEARCH_RTOL, assert_matches, scaled_max_diff

# A "tiny"-width encoder with 2 blocks (heads from --variant tiny) and an AC predictor of an unreleased width.
ENCODER = dict(embed_dim=192, depth=2, num_heads=3, img_size=32, num_frames=4)
PREDICTOR = dict(embed_dim=192, predictor_embed_dim=64, depth=2, num_heads=4, img_size=32, patch_size=16)


def tiny_world_model(seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    encoder = VJEPA2AreaModel(VJEPA2AreaConfig(**ENCODER)).eval()
    predictor = VJEPA2ACPredictor(VJEPA2ACPredictorConfig(**PREDICTOR)).eval()
    randomize(predictor, seed + 1)
    return WorldModel(encoder, predictor).eval()


@pytest.fixture(scope="module")
def ac_pt(tmp_path_factory):
    """Meta's V-JEPA 2-AC layout: `encoder` (no target_encoder) and `predictor`, keys `module.backbone.*`."""
    model = tiny_world_model()
    path = tmp_path_factory.mktemp("ac") / "vjepa2-ac-tiny.pt"
    prefixed = {name: {"module.backbone." + k: v for k, v in part.state_dict().items()}
                for name, part in (("encoder", model.encoder), ("predictor", model.predictor))}  # fmt: skip
    torch.save({**prefixed, "opt": {"state": {}}, "epoch": 315, "batch_size": 4}, path)
    return path, model


def _outputs(world_model: WorldModel, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(1, 3, 2, 32, 32, generator=g)
    with torch.no_grad():
        latents = world_model.encode(frames)
        actions = torch.randn(1, 3, 7, generator=g) * 0.05
        states = torch.rand(1, 2, 7, generator=g)
        return latents, world_model.rollout(latents, states, actions)[0]


def _assert_same(a: WorldModel, b: WorldModel):
    for name, part in (("encoder", "encoder"), ("predictor", "predictor")):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), name
    for got, expected in zip(_outputs(a), _outputs(b)):
        assert torch.equal(got, expected)  # same weights, same kernels, same inputs


def test_released_layout_pt_loads_with_the_heads_flag(ac_pt):
    path, model = ac_pt
    with pytest.raises(ConversionError, match="--predictor-heads"):
        load_world_model(path, variant="tiny", img_size=32, num_frames=4)
    loaded = load_world_model(path, variant="tiny", img_size=32, num_frames=4, predictor_heads=4)
    assert loaded.predictor.config.num_heads == 4 and loaded.predictor.config.depth == 2
    assert loaded.predictor.config.predictor_embed_dim == 64 and loaded.predictor.config.action_embed_dim == 7
    _assert_same(loaded, model)


def test_load_model_reads_the_encoder_of_an_ac_checkpoint(ac_pt):
    from hf_vjepa_area import load_model

    path, model = ac_pt
    encoder = load_model(path, read_options=dict(variant="tiny", img_size=32, num_frames=4))  # the `encoder` entry: there is no target_encoder
    expected = model.encoder.state_dict()
    assert all(torch.equal(encoder.state_dict()[k], expected[k]) for k in expected)


def test_conversion_writes_the_ac_predictor_in_metas_names(ac_pt, tmp_path):
    path, model = ac_pt
    report = convert(path, tmp_path / "out", variant="tiny", img_size=32, num_frames=4, predictor_heads=4, verify=True)
    folder = tmp_path / "out"
    assert report["ac_predictor"] and not report["predictor"] and report["verification"]["passed"]
    assert report["source"]["checkpoint_key"] == "encoder"
    assert (folder / AC_PREDICTOR_WEIGHTS_NAME).is_file() and not (folder / "predictor.safetensors").exists()
    saved = json.loads((folder / "config.json").read_text())["ac_predictor"]
    assert saved == VJEPA2ACPredictorConfig(**PREDICTOR).hyperparameters()
    _assert_same(load_world_model(folder), model)


def test_a_checkpoint_without_an_ac_predictor_is_no_world_model(tmp_path):
    torch.manual_seed(0)
    encoder = VJEPA2AreaModel(VJEPA2AreaConfig(**ENCODER))
    path = tmp_path / "plain.pt"
    torch.save({"target_encoder": {"module.backbone." + k: v for k, v in encoder.state_dict().items()}}, path)
    with pytest.raises(ConversionError, match="--predictor-heads: the checkpoint has no predictor"):
        load_world_model(path, variant="tiny", img_size=32, num_frames=4, predictor_heads=4)
    with pytest.raises(ConversionError, match="not a V-JEPA 2-AC checkpoint"):
        load_world_model(path, variant="tiny", img_size=32, num_frames=4)


def test_rollout_shapes_batching_and_causality():
    model = tiny_world_model().double()
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 2, 2, 2, 192, generator=g, dtype=torch.float64)
    states = torch.rand(1, 2, 7, generator=g, dtype=torch.float64)
    actions = torch.randn(5, 4, 7, generator=g, dtype=torch.float64) * 0.05  # 5 candidates: 1 past + 3 steps
    with torch.no_grad():
        predicted, new_states = model.rollout(latents, states, actions)
        assert predicted.shape == (5, 3, 2, 2, 192) and new_states.shape == (5, 3, 7)
        single, _ = model.rollout(latents, states, actions[3:4])
        assert_matches(single[0], predicted[3])  # batched candidates = one at a time
        later = actions.clone()
        later[:, -1] += 1.0
        moved, _ = model.rollout(latents, states, later)
    assert_matches(moved[:, :2], predicted[:, :2])  # a later action cannot change an earlier prediction
    assert scaled_max_diff(moved[:, 2], predicted[:, 2]) > 1e6 * FLOAT64_RTOL


def test_next_state_matches_scipy_rotation_composition():
    rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    g = torch.Generator().manual_seed(0)
    state = torch.cat([torch.randn(4, 3, generator=g), (torch.rand(4, 3, generator=g) - 0.5) * 2, torch.rand(4, 1, generator=g)], 1)
    action = torch.randn(4, 7, generator=g, dtype=torch.float64).float() * 0.3
    got = next_state(state.double(), action.double())
    for i in range(4):
        turn, start = (rotation.from_euler("xyz", x[i, 3:6].double().numpy()).as_matrix() for x in (action, state))
        matrix = turn @ start
        angles = torch.from_numpy(rotation.from_matrix(matrix).as_euler("xyz"))
        assert_matches(got[i, 3:6], angles)
    assert_matches(got[:, :3], state[:, :3].double() + action[:, :3].double())
    assert_matches(got[:, 6], (state[:, 6].double() + action[:, 6].double()).clamp(0, 1))


def test_cem_finds_the_minimum_of_a_quadratic_energy():
    target = torch.tensor([[0.02, -0.03, 0.01, 0.5], [-0.01, 0.04, 0.0, -0.6]])
    weights = torch.tensor([1.0, 2.0, 0.5, 0.01])

    def energy(actions):
        searched = actions[..., [0, 1, 2, 6]]
        return ((searched - target) ** 2 * weights).sum((1, 2))

    config = CEMConfig()
    plan = cem(energy, config, seed=0)
    assert plan.shape == (config.rollout, 7) and torch.equal(plan[:, 3:6], torch.zeros(2, 3))
    # CEM is a sampler: it lands within a few percent of the action bound, far closer than its initial spread.
    assert_matches(plan[:, :3], target[:, :3], rtol=SEARCH_RTOL * config.max_translation)
    assert_matches(plan[:, 6], target[:, 3], rtol=SEARCH_RTOL * config.max_gripper)
    assert torch.equal(cem(energy, config, seed=0), plan)  # deterministic for a seed
    assert not torch.equal(cem(energy, config, seed=1), plan)


def test_cem_respects_bounds_and_deadband():
    config = CEMConfig(samples=50, topk=5, cem_steps=3)
    seen = []

    def energy(actions):
        seen.append(actions)
        return -actions[:, :, 0].sum(1) + 10 * actions[:, :, 6].abs().sum(1)  # push x to its bound, gripper to 0

    plan = cem(energy, config, seed=0)
    sampled = torch.cat(seen)
    assert sampled[..., :3].abs().max() <= config.max_translation and sampled[..., 6].abs().max() <= config.max_gripper
    assert torch.equal(plan[:, 6], torch.zeros(config.rollout))  # within the deadband: no gripper command
    assert_matches(full_actions(torch.ones(4))[6], torch.tensor(1.0))


def test_plan_actions_runs_on_the_world_model():
    model = tiny_world_model()
    g = torch.Generator().manual_seed(2)
    frames, goal = torch.randn(1, 3, 1, 32, 32, generator=g), torch.randn(1, 3, 1, 32, 32, generator=g)
    config = CEMConfig(samples=16, topk=4, cem_steps=2)
    state = torch.rand(7, generator=g)
    plan = plan_actions(model, frames, state, goal, config, seed=0, chunk=5)
    assert plan.shape == (2, 7) and torch.isfinite(plan).all()
    assert torch.equal(plan_actions(model, frames, state, goal, config, seed=0, chunk=5), plan)  # deterministic
    with torch.no_grad():
        latents, goal_latents = model.encode(frames), model.encode(goal)[0, -1]
    candidates = full_actions(torch.rand(7, 2, 4, generator=g) * 0.1)
    whole = rollout_energy(model, latents, state.view(1, 1, 7), goal_latents)(candidates)
    assert_matches(rollout_energy(model, latents, state.view(1, 1, 7), goal_latents, chunk=3)(candidates), whole)


def test_cli_converts_an_ac_checkpoint(ac_pt, tmp_path, capsys):
    from hf_vjepa_area.conversion.cli import main

    path, _ = ac_pt
    assert main([str(path), str(tmp_path / "a"), "--variant", "tiny", "--img-size", "32", "--num-frames", "4"]) == 2
    err = capsys.readouterr().err
    assert "--predictor-heads" in err and len(err.strip().splitlines()) == 1
    assert main([str(path), str(tmp_path / "b"), "--variant", "tiny", "--img-size", "32", "--num-frames", "4", "--predictor-heads", "4"]) == 0
    assert (tmp_path / "b" / AC_PREDICTOR_WEIGHTS_NAME).is_file()


def test_energy_landscape_and_png(tmp_path):
    import struct
    import zlib

    from hf_vjepa_area.ac.landscape import energy_landscape, heatmap_rgb, write_png

    lowest = torch.tensor([0.02, -0.01], dtype=torch.float64)  # dx, dz

    def energy(actions):
        return (actions[:, 0, 0] - lowest[0]) ** 2 + (actions[:, 0, 2] - lowest[1]) ** 2

    landscape, values = energy_landscape(energy, dims=(0, 2), extent=0.05, steps=11)
    row, col = divmod(int(landscape.argmin()), 11)
    assert_matches(values[[row, col]], lowest)
    image = heatmap_rgb(landscape, cell=3, marks=[(row, col)])
    assert image.shape == (33, 33, 3) and image.dtype == torch.uint8
    write_png(tmp_path / "e.png", image, {"Rows": "dx"})
    blob = (tmp_path / "e.png").read_bytes()
    assert blob.startswith(b"\x89PNG\r\n\x1a\n") and b"tEXtRows\x00dx" in blob
    width, height = struct.unpack(">II", blob[16:24])
    start = blob.index(b"IDAT") + 4
    raw = zlib.decompress(blob[start : start + struct.unpack(">I", blob[start - 8 : start - 4])[0]])
    rows = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(height, 1 + width * 3)
    assert (width, height) == (33, 33) and torch.equal(rows[:, 1:].reshape(33, 33, 3), image)


def test_one_call_encodes_and_rolls_out():
    model = tiny_world_model()
    g = torch.Generator().manual_seed(3)
    frames, states = torch.randn(1, 3, 2, 32, 32, generator=g), torch.rand(1, 2, 7, generator=g)
    actions = torch.randn(6, 3, 7, generator=g) * 0.05  # 6 candidate sequences: 1 past action + 2 steps each
    with torch.no_grad():
        predicted, new_states = model(frames, states, actions)
        expected = model.rollout(model.encode(frames), states, actions)
    assert predicted.shape == (6, 2, 2, 2, 192) and new_states.shape == (6, 2, 7)
    assert torch.equal(predicted, expected[0]) and torch.equal(new_states, expected[1])
