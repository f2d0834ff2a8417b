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
    from hf_vjepa_area.hub import save_repo_folder

    from .hub_cache import add_folder_to_hub_cache

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


# A tiny stand-in for Meta's release: transformers' own VJEPA2Model (with its predictor) and the same
# weights in Meta's `.pt` layout. Width 192 with 3 heads of 64 leaves 4 channels unrotated, as released.
RELEASED_TINY = dict(crop_size=32, frames_per_clip=4, hidden_size=192, num_attention_heads=3, num_hidden_layers=2,
                     pred_hidden_size=96, pred_num_attention_heads=12, pred_num_hidden_layers=2, pred_num_mask_tokens=3)
RELEASED_REPO = "facebook/vjepa2-tiny-test"
# What the tiny `.pt` does not store, as a user gives it (it is no released file, of no released size).
TINY_PT_OPTIONS = dict(variant="tiny", predictor_heads=RELEASED_TINY["pred_num_attention_heads"],
                       img_size=RELEASED_TINY["crop_size"], num_frames=RELEASED_TINY["frames_per_clip"])  # fmt: skip
TINY_PT_FLAGS = [arg for name, value in TINY_PT_OPTIONS.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


@dataclass
class TinyRelease:
    cache: pathlib.Path
    repo_id: str  # transformers' VJEPA2Model, saved with its own save_pretrained
    folder: pathlib.Path
    pt: pathlib.Path  # Meta's layout: target_encoder (= the repo's encoder), encoder, predictor, training state
    model: torch.nn.Module


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial values everywhere (LayerNorms and mask tokens included), so no mapping error hides."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.05)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory) -> TinyRelease:
    from transformers import VJEPA2Config, VJEPA2Model

    from .hub_cache import add_folder_to_hub_cache

    root = tmp_path_factory.mktemp("release")
    model = randomize(VJEPA2Model(VJEPA2Config(**RELEASED_TINY)), 3)
    folder = root / "vjepa2-tiny"
    model.save_pretrained(folder)
    add_folder_to_hub_cache(folder, RELEASED_REPO, root / "cache", commit_hash="c" * 40)
    pt = root / "vit-tiny.pt"
    torch.save(meta_checkpoint(model), pt)
    return TinyRelease(root / "cache", RELEASED_REPO, folder, pt, model)


def meta_checkpoint(model: torch.nn.Module) -> dict:
    """transformers' VJEPA2Model's weights in the layout of Meta's released `.pt`: target_encoder (= the model's
    encoder), encoder (the context encoder: the same + 0.25), predictor, training state."""
    # Meta's names, written out by hand (not through our key table): fused qkv rows, one tensor per mask token.
    state = model.state_dict()
    encoder_depth = len(model.encoder.layer)
    predictor_depth = len(model.predictor.layer)

    def original(prefix: str, blocks: str, layers: int) -> dict:
        out = {}
        for i in range(layers):
            t = f"{prefix}.layer.{i}."
            for p in ("weight", "bias"):
                out[f"{blocks}.{i}.attn.qkv.{p}"] = torch.cat([state[f"{t}attention.{n}.{p}"] for n in ("query", "key", "value")])
                for o, n in (("norm1", "norm1"), ("attn.proj", "attention.proj"), ("norm2", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                    out[f"{blocks}.{i}.{o}.{p}"] = state[f"{t}{n}.{p}"]
        return out

    encoder = original("encoder", "blocks", encoder_depth)
    for p in ("weight", "bias"):
        encoder[f"patch_embed.proj.{p}"] = state[f"encoder.embeddings.patch_embeddings.proj.{p}"]
        encoder[f"norm.{p}"] = state[f"encoder.layernorm.{p}"]
    predictor = original("predictor", "predictor_blocks", predictor_depth)
    for p in ("weight", "bias"):
        predictor[f"predictor_embed.{p}"] = state[f"predictor.embeddings.predictor_embeddings.{p}"]
        predictor[f"predictor_norm.{p}"] = state[f"predictor.layernorm.{p}"]
        predictor[f"predictor_proj.{p}"] = state[f"predictor.proj.{p}"]
    for i, token in enumerate(state["predictor.embeddings.mask_tokens"]):
        predictor[f"mask_tokens.{i}"] = token
    return {
        "target_encoder": {"module.backbone." + k: v.clone() for k, v in encoder.items()},
        "encoder": {"module.backbone." + k: v + 0.25 for k, v in encoder.items()},
        "predictor": {"module.backbone." + k: v.clone() for k, v in predictor.items()},
        "opt": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 10, "loss": 0.5,
    }


@pytest.fixture
def offline_release(tiny_release, monkeypatch) -> TinyRelease:
    """`tiny_release`'s cache as the Hub cache, offline."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tiny_release.cache))
    return tiny_release
