"""Shared fixtures: a tiny converted model in an offline Hugging Face Hub cache."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import pytest
import torch

# Small enough for CPU tests, big enough to exercise RoPE (head_dim 12), areas and a probe block.
TINY = dict(embed_dim=24, depth=2, num_heads=2, img_size=32, num_frames=4, probe_depth=2, probe_num_heads=2)
TINY_ORG = "test-org"


@dataclass
class TinyHub:
    cache: pathlib.Path
    encoder_id: str  # area encoder, VJEPA2AreaModel
    classifier_id: str  # area encoder + attentive probe (3 classes), VJEPA2AreaForVideoClassification
    encoder_dir: pathlib.Path
    classifier_dir: pathlib.Path
    encoder: torch.nn.Module
    classifier: torch.nn.Module


def tiny_video(batch: int = 2, frames: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Pixels [B, C, T, H, W] (timm layout); `.transpose(1, 2)` gives transformers' [B, T, C, H, W]."""
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread for every test: tiny models gain nothing from more, and on a busy
    machine spinning OpenMP threads make each tiny op tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory) -> TinyHub:
    """A tiny encoder and classifier written with `save_repo_folder` into a Hub cache (not yet active)."""
    from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel
    from hf_vjepa_area.hub import add_folder_to_hub_cache, save_repo_folder

    root = tmp_path_factory.mktemp("tiny_hub")
    torch.manual_seed(0)
    encoder = VJEPA2AreaModel(VJEPA2AreaConfig(**TINY, area_splits=(2, 2, 1))).eval()
    classifier = VJEPA2AreaForVideoClassification(
        VJEPA2AreaConfig(**TINY, area_splits=(2, 2, 1), id2label={0: "bike", 1: "bunny", 2: "phone"})
    ).eval()
    encoder_dir = save_repo_folder(encoder, root / "encoder", model_card="# tiny ST-A² encoder\n")
    classifier_dir = save_repo_folder(classifier, root / "classifier")
    cache = root / "cache"
    encoder_id, classifier_id = f"{TINY_ORG}/vjepa2-tiny-st-a2", f"{TINY_ORG}/vjepa2-tiny-st-a2-probe"
    add_folder_to_hub_cache(encoder_dir, encoder_id, cache)
    add_folder_to_hub_cache(classifier_dir, classifier_id, cache)
    return TinyHub(cache, encoder_id, classifier_id, encoder_dir, classifier_dir, encoder, classifier)


@pytest.fixture
def offline_hub(tiny_hub, monkeypatch) -> TinyHub:
    """`tiny_hub`'s cache as the Hub cache, offline (huggingface_hub reads these at call time)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_hub.cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tiny_hub.cache))
    return tiny_hub
