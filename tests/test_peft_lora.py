"""LoRA fine-tuning with `peft` (the optional extra `peft`): activation checkpointing, input gradients, save/load."""

from __future__ import annotations

import pytest
import torch

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification
from tests.conftest import TINY, tiny_video
from tests.numerics import assert_matches

peft = pytest.importorskip("peft", reason="peft is the optional extra `peft` (installed with `dev`)")


def _classifier(seed: int = 0) -> VJEPA2AreaForVideoClassification:
    torch.manual_seed(seed)
    return VJEPA2AreaForVideoClassification(VJEPA2AreaConfig(**TINY, area_splits=(2, 2, 1), num_labels=3))


def _lora(model):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["qkv"], modules_to_save=["head"], init_lora_weights=False)
    return peft.get_peft_model(model, config)


def _lora_grads(model, video, labels) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(pixel_values_videos=video, labels=labels).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_lora_on_qkv_with_activation_checkpointing_gives_the_plain_gradients(use_reentrant):
    """Reentrant checkpointing needs an input that requires grad: with the base frozen, that is what
    `enable_input_require_grads` provides (the patch projection's output), as for transformers' models."""
    model = _lora(_classifier()).train()
    video, labels = tiny_video().transpose(1, 2), torch.tensor([0, 2])
    reference = _lora_grads(model, video, labels)
    assert len(reference) == 2 * TINY["depth"]  # lora_A and lora_B of every encoder block's qkv
    assert all(grad.abs().sum() > 0 for grad in reference.values())

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert all(block.gradient_checkpointing for block in model.base_model.model.encoder.blocks)
    if use_reentrant:
        with pytest.warns(UserWarning, match="requires_grad"):
            assert _lora_grads(model, video, labels) == {}  # frozen inputs: the blocks' LoRA gets no gradient
    model.enable_input_require_grads()
    checkpointed = _lora_grads(model, video, labels)
    assert set(checkpointed) == set(reference)
    for name, grad in reference.items():
        assert_matches(checkpointed[name], grad, msg=name)
    model.disable_input_require_grads()
    model.gradient_checkpointing_disable()
    assert not any(block.gradient_checkpointing for block in model.base_model.model.encoder.blocks)


def test_lora_trains_saves_and_loads(tmp_path):
    model = _lora(_classifier()).train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all("lora_" not in n and "modules_to_save" not in n for n in frozen)
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    video, labels = tiny_video().transpose(1, 2), torch.tensor([0, 2])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model(pixel_values_videos=video, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    for name, param in model.named_parameters():  # the base stayed frozen
        if name in frozen:
            assert torch.equal(param, frozen[name]), name

    model.eval()
    with torch.no_grad():
        expected = model(pixel_values_videos=video).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    loaded = peft.PeftModel.from_pretrained(_classifier(), tmp_path).eval()  # same base weights (seed)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values_videos=video).logits, expected)
        merged = loaded.merge_and_unload()
        assert type(merged) is VJEPA2AreaForVideoClassification
        assert_matches(merged(pixel_values_videos=video).logits, expected)
