"""V-JEPA 2 training pieces: one step against a hand-written reference (loss, gradients, AdamW, EMA),
schedules, parameter groups, and loading models from a converted folder."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from hf_vjepa_area import (
    VJEPA2AreaConfig,
    VJEPA2AreaForVideoClassification,
    VJEPA2AreaModel,
    VJEPA2AreaPredictor,
    save_repo_folder,
)
from hf_vjepa_area.data.masks import MultiBlockMaskCollator
from hf_vjepa_area.sources import AreaOptions, SourceError, load_ssl_models
from hf_vjepa_area.ssl import (
    JEPA,
    ema_momentum,
    ema_update,
    learning_rate,
    make_optimizer,
    param_groups,
    target_tokens,
)
from tests.conftest import TINY_PT_OPTIONS
from tests.modeling.reference import randomize, reference_encoder, reference_predictor
from tests.numerics import BFLOAT16_RTOL, approx, assert_matches

GRID = (2, 4, 4)  # 4 frames, 64 px, tubelet 2, patch 16


def tiny_config(**kwargs) -> VJEPA2AreaConfig:
    fields = dict(embed_dim=32, depth=2, num_heads=2, img_size=64, num_frames=4, predictor_embed_dim=24,
                  predictor_depth=2, predictor_num_heads=2, predictor_num_mask_tokens=3)
    return VJEPA2AreaConfig(**{**fields, **kwargs})


def tiny_models(seed: int = 0, **config):
    config = tiny_config(**config)
    encoder, predictor = VJEPA2AreaModel(config), VJEPA2AreaPredictor(config)
    randomize(encoder, seed)
    randomize(predictor, seed + 1)
    target = copy.deepcopy(encoder)
    randomize(target, seed + 2)  # a target that differs from the encoder, so the EMA is visible
    return encoder, target.requires_grad_(False), predictor


def batch(step: int, batch_size: int = 2):
    clips = torch.randn(batch_size, 3, 4, 64, 64, generator=torch.Generator().manual_seed(100 + step))
    masks_context, masks_target = MultiBlockMaskCollator(GRID, seed=5).masks(step, batch_size)
    return clips, masks_context, masks_target


# ----------------------------------------------------------------------------------------------
# The hand-written reference step
# ----------------------------------------------------------------------------------------------


def reference_loss(encoder, target, predictor, clips, masks_context, masks_target):
    """Per config and sample: dense encoder on the visible ids, dense predictor, L1 against the target
    encoder's tokens normalized by hand (mean 0, variance 1, eps 1e-5)."""
    with torch.no_grad():
        full = reference_encoder(target, clips)
        mean = full.mean(dim=-1, keepdim=True)
        var = ((full - mean) ** 2).mean(dim=-1, keepdim=True)
        normed = (full - mean) / torch.sqrt(var + 1e-5)
    losses = []
    for context_ids, target_ids in zip(masks_context, masks_target):
        context = reference_encoder(encoder, clips, context_ids)
        prediction = reference_predictor(predictor, predictor.config, context, context_ids, target_ids, GRID, 0)
        total = 0.0
        for b in range(clips.shape[0]):
            total = total + (prediction[b] - normed[b, target_ids[b]]).abs().sum()
        losses.append(total / prediction.numel())
    return sum(losses) / len(losses)


def reference_adamw(params: dict, grads: dict, state: dict, lr: float, step: int):
    """torch.optim.AdamW's formulas written out: decoupled decay 0.04 on >= 2-D tensors, betas (0.9, 0.999)."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for name, param in params.items():
        if name not in grads:
            continue
        g = grads[name]
        m, v = state.setdefault(name, (torch.zeros_like(g), torch.zeros_like(g)))
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        state[name] = (m, v)
        decay = 0.04 if param.ndim >= 2 else 0.0
        m_hat = m / (1 - beta1 ** (step + 1))
        v_hat = v / (1 - beta2 ** (step + 1))
        with torch.no_grad():
            param.mul_(1 - lr * decay)
            param.sub_(lr * m_hat / (v_hat.sqrt() + eps))


def test_steps_match_hand_written_reference():
    """In float64: the claim is exactness (the same maths written out by hand)."""
    encoder, target, predictor = (m.double() for m in tiny_models())
    ref_encoder, ref_target, ref_predictor = (copy.deepcopy(m) for m in (encoder, target, predictor))
    jepa = JEPA(encoder, predictor)
    optimizer = make_optimizer(jepa, lr=0.0)
    total_steps, ema = 2, (0.9, 0.95)
    adam_state = {}
    for step in range(total_steps):
        lr = learning_rate(step, total_steps, lr=1e-2, final_lr=1e-3)
        clips, masks_context, masks_target = batch(step)
        clips = clips.double()

        for group in optimizer.param_groups:
            group["lr"] = lr
        out = jepa(clips, masks_context, masks_target, target_tokens(target, clips))
        optimizer.zero_grad()
        out.loss.backward()
        grads = {name: p.grad.clone() for name, p in jepa.named_parameters() if p.grad is not None}
        optimizer.step()
        ema_update(target, encoder, ema_momentum(step, total_steps, ema))

        ref_loss = reference_loss(ref_encoder, ref_target, ref_predictor, clips, masks_context, masks_target)
        assert_matches(out.loss, ref_loss, msg=f"loss at step {step}")
        assert_matches(torch.stack(out.per_config).mean(), out.loss)
        ref_params = {f"encoder.{n}": p for n, p in ref_encoder.named_parameters()}
        ref_params |= {f"predictor.{n}": p for n, p in ref_predictor.named_parameters()}
        ref_loss.backward()
        # Every trained tensor gets a gradient; of the mask tokens only mask_tokens.0 (Meta's index).
        expected = {n for n in ref_params if not n.startswith("predictor.mask_tokens.") or n.endswith(".0")}
        assert set(grads) == expected
        for name, grad in grads.items():
            assert_matches(grad, ref_params[name].grad, msg=f"gradient of {name}")

        # The update from the same gradients, so a near-zero gradient cannot flip Adam's sign.
        reference_adamw(ref_params, grads, adam_state, lr, step)
        for module in (ref_encoder, ref_predictor):
            module.zero_grad()
        for name, param in jepa.named_parameters():
            assert_matches(param, ref_params[name], msg=f"{name} after AdamW")
        momentum = ema[0] + step * (ema[1] - ema[0]) / total_steps
        with torch.no_grad():
            for t, o in zip(ref_target.parameters(), ref_encoder.parameters()):
                t.copy_(momentum * t + (1 - momentum) * o)
        for (name, got), ref in zip(target.named_parameters(), ref_target.parameters()):
            assert_matches(got, ref, msg=f"target {name} after EMA")
    assert lr == approx(1e-3)  # the anneal ends at final_lr on the last step


def test_checkpointing_gives_the_same_gradients_and_bf16_autocast_runs():
    encoder, target, predictor = tiny_models(area_splits=(2, 2, 1), area_layers=[0], predictor_area_splits=(1, 2, 2))
    jepa = JEPA(encoder, predictor)
    clips, masks_context, masks_target = batch(0, batch_size=3)

    def grads():
        jepa.zero_grad()
        loss = jepa(clips, masks_context, masks_target, target_tokens(target, clips)).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in jepa.named_parameters() if p.grad is not None}

    loss, plain = grads()
    jepa.set_grad_checkpointing(True)
    assert all(block.gradient_checkpointing for block in [*encoder.blocks, *predictor.predictor_blocks])
    loss_ckpt, checkpointed = grads()
    assert torch.equal(loss, loss_ckpt) and plain.keys() == checkpointed.keys()
    for name in plain:
        assert_matches(checkpointed[name], plain[name], msg=name)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = jepa(clips, masks_context, masks_target, target_tokens(target, clips))
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert_matches(out.loss.detach(), loss, rtol=BFLOAT16_RTOL)
    jepa.set_grad_checkpointing(False)
    assert not any(block.gradient_checkpointing for block in predictor.predictor_blocks)


def test_ema_update_is_a_lerp_and_checks_shapes():
    target, online = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = [0.75 * t.detach() + 0.25 * o.detach() for t, o in zip(target.parameters(), online.parameters())]
    ema_update(target, online, 0.75)
    for got, want in zip(target.parameters(), expected):
        assert_matches(got, want)
    with pytest.raises(ValueError, match="same parameters"):
        ema_update(target, torch.nn.Linear(3, 3), 0.5)


def test_learning_rate_schedules():
    # Anneal: linear from lr, reached by Meta's first scheduler call, to final_lr at the last step.
    assert learning_rate(0, 800, 5.25e-4, 1e-6) == approx(5.25e-4 + (1e-6 - 5.25e-4) / 800)
    assert learning_rate(399, 800, 5.25e-4, 1e-6) == approx((5.25e-4 + 1e-6) / 2)
    assert learning_rate(799, 800, 5.25e-4, 1e-6) == approx(1e-6)
    assert learning_rate(900, 800, 5.25e-4, 1e-6) == approx(1e-6)
    # Warmup then cosine.
    kwargs = dict(total_steps=110, lr=1e-3, final_lr=1e-5, warmup_steps=10, start_lr=2e-4, decay="cosine")
    assert learning_rate(0, **kwargs) == approx(2e-4 + 0.1 * 8e-4)
    assert learning_rate(8, **kwargs) == approx(2e-4 + 0.9 * 8e-4)
    assert learning_rate(9, **kwargs) == approx(1e-3)
    assert learning_rate(59, **kwargs) == approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert learning_rate(109, **kwargs) == approx(1e-5)
    values = [learning_rate(s, **kwargs) for s in range(9, 110)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert learning_rate(20, 100, 1e-3, 0.0, warmup_steps=10) == approx(1e-3 * (1 - 11 / 90))
    with pytest.raises(ValueError, match="decay"):
        learning_rate(0, 10, 1e-3, decay="step")


def test_momentum_schedule():
    assert all(ema_momentum(s, 800) == 0.99925 for s in (0, 400, 799))
    assert ema_momentum(0, 100, (0.99, 0.999)) == approx(0.99)
    assert ema_momentum(50, 100, (0.99, 0.999)) == approx(0.9945)
    assert ema_momentum(100, 100, (0.99, 0.999)) == approx(0.999)


def test_param_groups():
    encoder, _, predictor = tiny_models()
    jepa = JEPA(encoder, predictor, mask_index=1)
    decayed, plain = param_groups(jepa)
    names = {id(p): n for n, p in jepa.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert decayed["weight_decay"] == 0.04 and plain["weight_decay"] == 0.0
    assert "predictor.mask_tokens.1" in decayed_names  # mask tokens are decayed, as released
    assert not {"predictor.mask_tokens.0", "predictor.mask_tokens.2"} & (decayed_names | plain_names)  # unused: frozen
    assert {"encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.qkv.weight", "predictor.predictor_embed.weight"} <= decayed_names
    assert all(n.endswith(".bias") or "norm" in n for n in plain_names)
    assert {"encoder.norm.weight", "encoder.blocks.1.mlp.fc2.bias", "predictor.predictor_norm.bias"} <= plain_names
    assert len(decayed_names) + len(plain_names) == sum(p.requires_grad for p in jepa.parameters())
    optimizer = make_optimizer(jepa, lr=1e-3)
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def write_folder(path, *, num_mask_tokens=10, predictor=True, context_encoder=False, **config):
    """A converted folder as the library writes it (`save_repo_folder`), with the SSL files beside it."""
    encoder, _, _ = tiny_models(**config)
    files = {"encoder": encoder.state_dict()}
    extra = {}
    if predictor:
        shapes = VJEPA2AreaPredictor(tiny_config(predictor_num_mask_tokens=num_mask_tokens, **config)).state_dict()
        files["predictor"] = {k: torch.randn_like(v) for k, v in shapes.items()}
        extra["predictor.safetensors"] = safetensors_bytes(files["predictor"])
    if context_encoder:
        files["context"] = {k: v + 1.0 for k, v in encoder.state_dict().items()}
        extra["context_encoder.safetensors"] = safetensors_bytes(files["context"])
    save_repo_folder(encoder, path, extra_files=extra)
    return files


def states_equal(module, state) -> bool:
    own = module.state_dict()
    return own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in own)


def test_load_from_folder_with_released_mask_token_count(tmp_path):
    files = write_folder(tmp_path, num_mask_tokens=10)  # config.json says 3 mask tokens
    assert json.loads((tmp_path / "config.json").read_text())["predictor_num_mask_tokens"] == 3
    encoder, target, predictor = load_ssl_models(tmp_path)
    assert len(predictor.mask_tokens) == 10 and states_equal(predictor, files["predictor"])
    assert states_equal(target, files["encoder"]) and states_equal(encoder, files["encoder"])
    assert all(not p.requires_grad for p in target.parameters()) and not target.training
    assert all(p.requires_grad for p in encoder.parameters()) and encoder.training and predictor.training
    assert encoder.patch_embed.proj.weight.data_ptr() != target.patch_embed.proj.weight.data_ptr()
    assert all(p.dtype == torch.float32 for m in (encoder, target, predictor) for p in m.parameters())


def test_load_context_encoder_and_area_overrides(tmp_path):
    files = write_folder(tmp_path, context_encoder=True)
    encoder, target, predictor = load_ssl_models(tmp_path, area=AreaOptions((2, 2, 1), "0:1"))
    assert states_equal(encoder, files["context"]) and states_equal(target, files["encoder"])
    for model in (encoder, target):
        assert model.config.area_splits == [2, 2, 1] and model.config.area_layers == [0]
        assert [block.attn.area for block in model.blocks] == [True, False]
    assert not any(block.attn.area for block in predictor.predictor_blocks)
    # Splits alone: the default layers (first 75% of blocks), not the folder's empty list.
    encoder, target, _ = load_ssl_models(tmp_path, area=AreaOptions((1, 2, 2)))
    assert encoder.config.area_layers == target.config.area_layers == [0]


def test_load_without_predictor(tmp_path):
    files = write_folder(tmp_path, predictor=False)
    with pytest.raises(SourceError, match="init_predictor='random'"):
        load_ssl_models(tmp_path)
    encoder, target, predictor = load_ssl_models(tmp_path, init_predictor="random")
    assert states_equal(target, files["encoder"])
    assert len(predictor.mask_tokens) == 3 and not predictor.mask_tokens[0].any()


def test_load_from_a_classifier_folder(tmp_path):
    classifier = VJEPA2AreaForVideoClassification(tiny_config(num_labels=3))
    randomize(classifier, seed=9)
    save_repo_folder(classifier, tmp_path)
    encoder, target, _ = load_ssl_models(tmp_path, init_predictor="random")
    assert states_equal(target, classifier.encoder.state_dict()) and states_equal(encoder, classifier.encoder.state_dict())


def test_load_from_a_model_instance():
    model, _, _ = tiny_models()
    encoder, target, predictor = load_ssl_models(model, init_predictor="random", area=AreaOptions((2, 1, 1)))
    assert states_equal(target, model.state_dict()) and states_equal(encoder, model.state_dict())
    assert target.config.area_splits == [2, 1, 1] and model.config.area_splits is None
    with pytest.raises(SourceError, match="a model instance"):
        load_ssl_models(model)


def test_load_refuses_bad_input(tmp_path):
    with pytest.raises(SourceError, match="config.json"):
        load_ssl_models(tmp_path)
    write_folder(tmp_path)
    with pytest.raises(ValueError, match="not VJEPA2AreaConfig fields"):
        load_ssl_models(tmp_path, area_split=(2, 2, 1))
    with pytest.raises(ValueError, match="area=AreaOptions"):
        load_ssl_models(tmp_path, area_splits=(2, 2, 1))
    with pytest.raises(ValueError, match="init_predictor"):
        load_ssl_models(tmp_path, init_predictor="pretrained")
    with pytest.raises(ValueError, match="predictor.safetensors: the tensors do not fit"):
        load_ssl_models(tmp_path, predictor_embed_dim=48)


def test_released_sources_load_directly(tiny_release):
    """Meta's .pt (target_encoder, encoder = context, predictor) and transformers' folder (encoder,
    predictor) give the same target encoder and predictor; only the .pt has a context encoder of its own."""
    from hf_vjepa_area.checkpoint_keys import original_parts, safe_torch_load

    parts = original_parts(safe_torch_load(tiny_release.pt))
    from_pt = load_ssl_models(tiny_release.pt, read_options=TINY_PT_OPTIONS, area=AreaOptions((2, 2, 1)))
    from_folder = load_ssl_models(tiny_release.folder)
    assert from_pt.target_encoder.config.area_layers and not from_folder.target_encoder.config.area_layers
    assert states_equal(from_pt.target_encoder, parts["encoder"]) and states_equal(from_folder.target_encoder, parts["encoder"])
    assert states_equal(from_pt.encoder, parts["context_encoder"])  # the .pt's `encoder` entry (+0.25)
    assert states_equal(from_folder.encoder, parts["encoder"])  # no context encoder: a copy of the target
    assert states_equal(from_pt.predictor, parts["predictor"]) and states_equal(from_folder.predictor, parts["predictor"])
    assert len(from_pt.predictor.mask_tokens) == 3
