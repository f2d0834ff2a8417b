"""Tiny checkpoints in every input format the converter reads (built once per session, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel

# head_dim 64 leaves 4 channels unrotated by RoPE (3 x 20 rotated), as in the released models.
TINY = dict(img_size=32, num_frames=4, embed_dim=128, depth=2, num_heads=2)
NUM_LABELS = 5


def tiny_hf_config(**overrides):
    from transformers import VJEPA2Config

    fields = dict(
        crop_size=32, frames_per_clip=4, hidden_size=128, num_attention_heads=2, num_hidden_layers=2,
        pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=1, num_pooler_layers=1,
    )
    fields.update(overrides)
    return VJEPA2Config(**fields)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial values everywhere (LayerNorm weights and biases included), so no mapping error hides."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=generator) * 0.05
                tensor.copy_(1.0 + noise if name.endswith("norm1.weight") or name.endswith("norm2.weight") else tensor + noise)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_encoder() -> VJEPA2AreaModel:
    torch.manual_seed(0)
    return randomize(VJEPA2AreaModel(VJEPA2AreaConfig(**TINY)), 1)


@pytest.fixture(scope="session")
def tiny_classifier() -> VJEPA2AreaForVideoClassification:
    torch.manual_seed(0)
    config = VJEPA2AreaConfig(**TINY, num_labels=NUM_LABELS, probe_depth=2, probe_num_heads=2)
    return randomize(VJEPA2AreaForVideoClassification(config), 2)


def original_checkpoint(encoder_sd: dict, prefix: str = "module.backbone.") -> dict:
    """Meta's layout: encoder and target_encoder (different values), predictor, optimizer state, epoch."""
    return {
        "encoder": {prefix + k: v.clone() for k, v in encoder_sd.items()},
        "target_encoder": {prefix + k: (v + 0.25).clone() for k, v in encoder_sd.items()},
        "predictor": {"module.backbone.predictor_embed.weight": torch.zeros(4, 8)},
        "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "weight_decay": 0.04}]},
        "scaler": None,
        "epoch": 10,
        "loss": 0.5,
        "batch_size": 8,
        "lr": 1e-4,
    }


@pytest.fixture(scope="session")
def original_pt(tmp_path_factory, tiny_encoder):
    path = tmp_path_factory.mktemp("meta") / "vit-tiny-test.pt"
    torch.save(original_checkpoint(tiny_encoder.state_dict()), path)
    return path


@pytest.fixture(scope="session")
def probe_pt(tmp_path_factory, tiny_classifier):
    """A released-probe layout: classifiers[0] with module.pooler.* and module.linear.*."""
    head = {"module." + k.removeprefix("head."): v.clone() for k, v in tiny_classifier.state_dict().items() if k.startswith("head.")}
    path = tmp_path_factory.mktemp("probe") / "ssv2-vit-tiny-4x2x3.pt"
    torch.save({"classifiers": [head], "opt": [{}], "epoch": 20}, path)
    return path


@pytest.fixture(scope="session")
def classifier_encoder_pt(tmp_path_factory, tiny_classifier):
    encoder_sd = {k.removeprefix("encoder."): v for k, v in tiny_classifier.state_dict().items() if k.startswith("encoder.")}
    path = tmp_path_factory.mktemp("meta_cls") / "vit-tiny-cls.pt"
    torch.save(original_checkpoint(encoder_sd), path)
    return path


@pytest.fixture(scope="session")
def hf_encoder_dir(tmp_path_factory):
    from transformers import VJEPA2Model

    torch.manual_seed(0)
    model = randomize(VJEPA2Model(tiny_hf_config()), 3)
    folder = tmp_path_factory.mktemp("hf") / "vjepa2-tiny"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def hf_classifier_dir(tmp_path_factory):
    from transformers import VJEPA2ForVideoClassification

    torch.manual_seed(0)
    labels = {i: f"action_{i}" for i in range(NUM_LABELS)}
    config = tiny_hf_config(id2label=labels, label2id={v: k for k, v in labels.items()})
    model = randomize(VJEPA2ForVideoClassification(config), 4)
    folder = tmp_path_factory.mktemp("hf_cls") / "vjepa2-tiny-cls"
    model.save_pretrained(folder)
    return folder
