"""Tiny classifier sources beside the root conftest's tiny release (transformers repo + Meta `.pt`)."""

from __future__ import annotations

import pytest
import torch

from hf_vjepa_area import AttentiveClassifier

from ..conftest import RELEASED_TINY, randomize

NUM_LABELS = 5


@pytest.fixture(scope="session")
def hf_classifier_dir(tmp_path_factory):
    """transformers' own VJEPA2ForVideoClassification (its pooler: the encoder's 3 heads, 1 + 1 layers)."""
    from transformers import VJEPA2Config, VJEPA2ForVideoClassification

    labels = {i: f"action_{i}" for i in range(NUM_LABELS)}
    config = VJEPA2Config(**RELEASED_TINY, num_pooler_layers=1, id2label=labels, label2id={v: k for k, v in labels.items()})
    folder = tmp_path_factory.mktemp("hf_cls") / "vjepa2-tiny-cls"
    randomize(VJEPA2ForVideoClassification(config), 4).save_pretrained(folder)
    return folder


def write_released_probe(path, init_seed: int, values_seed: int) -> AttentiveClassifier:
    """A released probe's layout at `path`: classifiers[0] with module.pooler.* / module.linear.* (16 heads,
    depth 2); returns the probe it holds."""
    torch.manual_seed(init_seed)
    head = randomize(AttentiveClassifier(RELEASED_TINY["hidden_size"], NUM_LABELS, num_heads=16, depth=2), values_seed)
    torch.save({"classifiers": [{"module." + k: v for k, v in head.state_dict().items()}], "epoch": 20}, path)
    return head


@pytest.fixture(scope="session")
def probe_pt(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "ssv2-vit-tiny-4x2x3.pt"
    write_released_probe(path, 0, 5)
    return path
