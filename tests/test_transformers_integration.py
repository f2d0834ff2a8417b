"""transformers integration: auto classes, save/load, dtype, device_map, checkpointing, processor, remote code."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
    VJEPA2VideoProcessor,
)

from hf_vjepa_area import (
    VJEPA2AreaConfig,
    VJEPA2AreaForVideoClassification,
    VJEPA2AreaModel,
    register_transformers,
)
from hf_vjepa_area.modeling.modeling_vjepa2_area import sincos_3d
from hf_vjepa_area.modeling.video_processing_vjepa2_area import VJEPA2AreaVideoProcessor

from .conftest import TINY, tiny_video

from tests.numerics import assert_matches

pytestmark = pytest.mark.usefixtures("single_thread")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides) -> VJEPA2AreaConfig:
    return VJEPA2AreaConfig(**{**TINY, "area_splits": (2, 2, 1), **overrides})


def _subprocess_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_CACHE", "HF_HOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1", **extra)
    return env


# ---- registration --------------------------------------------------------------------------


def test_auto_classes_are_registered():
    config = AutoConfig.for_model("vjepa2_area", **TINY)
    assert type(config) is VJEPA2AreaConfig
    assert type(AutoModel.from_config(config)) is VJEPA2AreaModel
    assert type(AutoModelForVideoClassification.from_config(config)) is VJEPA2AreaForVideoClassification
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

    registered = VIDEO_PROCESSOR_MAPPING[VJEPA2AreaConfig]
    assert VJEPA2AreaVideoProcessor in (registered.values() if isinstance(registered, dict) else [registered])


def test_registration_is_idempotent():
    register_transformers()
    register_transformers()
    script = textwrap.dedent(
        """
        import importlib, warnings
        import hf_vjepa_area, hf_vjepa_area.registration, hf_vjepa_area.timm_models
        warnings.simplefilter("error")
        importlib.reload(hf_vjepa_area.registration)
        importlib.reload(hf_vjepa_area.timm_models)
        importlib.reload(hf_vjepa_area)
        hf_vjepa_area.register_transformers()
        import timm
        from transformers import AutoConfig
        assert len(timm.list_models("vjepa2_*")) == 14
        assert timm.create_model("vjepa2_vitt", depth=1).__class__.__module__ == "hf_vjepa_area.timm_models"
        assert AutoConfig.for_model("vjepa2_area").__class__ is hf_vjepa_area.VJEPA2AreaConfig
        print("OK")
        """
    )
    env = _subprocess_env(PYTHONPATH=REPO_ROOT)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]


# ---- the models ----------------------------------------------------------------------------


def test_encoder_outputs_and_hidden_states():
    model = VJEPA2AreaModel(_config()).eval()
    video = tiny_video().transpose(1, 2)  # [B, T, C, H, W]
    out = model(pixel_values_videos=video, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 8, TINY["embed_dim"])
    assert len(out.hidden_states) == TINY["depth"] + 1
    assert model(video).hidden_states is None
    masks = torch.tensor([[0, 3, 5, 6]]).expand(2, -1)
    assert model(video, masks=masks).last_hidden_state.shape == (2, 4, TINY["embed_dim"])
    assert isinstance(model(video, return_dict=False), tuple)


def test_classifier_loss_backward_and_probe_shape():
    config = _config(num_labels=5, probe_depth=3, probe_num_heads=4)
    model = VJEPA2AreaForVideoClassification(config)
    assert len(model.head.pooler.blocks) == 2  # depth - 1 self-attention blocks, then cross-attention
    assert model.head.pooler.cross_attention_block.xattn.num_heads == 4
    out = model(tiny_video().transpose(1, 2), labels=torch.tensor([1, 4]))
    assert out.logits.shape == (2, 5) and out.loss.ndim == 0
    out.loss.backward()
    assert model.encoder.patch_embed.proj.weight.grad is not None and model.head.linear.weight.grad is not None
    defaults = VJEPA2AreaConfig()
    assert (defaults.probe_depth, defaults.probe_num_heads) == (4, 16)


def test_trainer_trains_and_evaluates_the_classifier(tmp_path):
    from transformers import Trainer, TrainingArguments

    class Videos(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            generator = torch.Generator().manual_seed(i)
            return {"pixel_values_videos": torch.randn(4, 3, 32, 32, generator=generator), "labels": torch.tensor(i % 3)}

    model = VJEPA2AreaForVideoClassification(_config(num_labels=3))
    before = model.head.linear.weight.detach().clone()
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                             max_steps=1, use_cpu=True, report_to=[], save_strategy="no", dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=Videos(), eval_dataset=Videos())
    assert math.isfinite(trainer.train().training_loss)
    assert not torch.equal(model.head.linear.weight, before)
    assert math.isfinite(trainer.evaluate()["eval_loss"])


@pytest.mark.parametrize("cls", [VJEPA2AreaModel, VJEPA2AreaForVideoClassification])
def test_save_pretrained_round_trip_writes_remote_code(tmp_path, cls):
    model = cls(_config(num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    names = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "modeling_vjepa2_area.py", "configuration_vjepa2_area.py",
            "released.py", "area.py", "rope.py", "timm_metadata.py"} <= names
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForVideoClassification"}
    loaded = cls.from_pretrained(tmp_path).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    video = tiny_video().transpose(1, 2)
    with torch.no_grad():
        assert_matches(loaded(video)[0], model(video)[0])


def test_dtype(tmp_path):
    VJEPA2AreaModel(_config()).save_pretrained(tmp_path)
    model = AutoModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model(tiny_video().transpose(1, 2)).last_hidden_state.dtype == torch.bfloat16


def test_device_map_auto_splits_at_blocks(tmp_path):
    model = VJEPA2AreaForVideoClassification(_config(depth=4, num_labels=3)).eval()
    model.save_pretrained(tmp_path / "model")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    loaded = AutoModelForVideoClassification.from_pretrained(
        tmp_path / "model", device_map="auto", max_memory={"cpu": int(size * 0.9)}, offload_folder=tmp_path / "off"
    )
    placement = loaded.hf_device_map
    assert set(placement.values()) == {"cpu", "disk"}, placement
    assert all(not name.startswith("encoder.blocks.") or name.count(".") == 2 for name in placement), placement
    video = tiny_video().transpose(1, 2)
    with torch.no_grad():
        assert_matches(loaded(video).logits, model(video).logits)

    # Saving the offloaded model brings the disk-offloaded blocks back: the same weights, none missing.
    from hf_vjepa_area.hub import repo_state_dict, save_repo_folder

    saved = save_repo_folder(loaded, tmp_path / "repo")
    expected = repo_state_dict(model)
    with safe_open(str(saved / "model.safetensors"), "pt") as weights:
        assert set(weights.keys()) == set(expected)
        for key in expected:
            assert torch.equal(weights.get_tensor(key), expected[key]), key


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = VJEPA2AreaForVideoClassification(_config(num_labels=3))
    model.train()
    video, labels = tiny_video().transpose(1, 2), torch.tensor([0, 2])

    def grads():
        model.zero_grad()
        model(video, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    reference = grads()
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.23 name
        model.activation_checkpointing_enable()
        assert model.is_activation_checkpointing
    else:
        model.gradient_checkpointing_enable()
        assert model.is_gradient_checkpointing
    assert all(b.gradient_checkpointing for b in model.encoder.blocks)
    checkpointed = grads()
    for name, grad in reference.items():
        assert_matches(checkpointed[name], grad, msg=name)


def test_sincos_pos_embed_rebuilt_after_loading(tmp_path):
    """Models without RoPE keep a frozen sincos table: it comes back even from a file without it."""
    from safetensors.torch import load_file, save_file

    model = VJEPA2AreaModel(_config(use_rope=False, area_splits=None)).eval()
    expected = sincos_3d(TINY["embed_dim"], (2, 2, 2)).unsqueeze(0)
    assert_matches(model.pos_embed, expected)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("pos_embed")
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = VJEPA2AreaModel.from_pretrained(tmp_path)
    assert_matches(loaded.pos_embed, expected)


# ---- video processor -----------------------------------------------------------------------


def test_video_processor_output_feeds_the_model(offline_hub):
    processor = AutoVideoProcessor.from_pretrained(offline_hub.encoder_id)
    model = AutoModelForVideoClassification.from_pretrained(offline_hub.classifier_id).eval()
    assert isinstance(processor, VJEPA2VideoProcessor)
    video = np.random.default_rng(0).integers(0, 256, size=(4, 40, 52, 3), dtype=np.uint8)  # T, H, W, C
    inputs = processor([video, video[::-1].copy()], return_tensors="pt")
    assert inputs["pixel_values_videos"].shape == (2, 4, 3, 32, 32)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


# ---- remote code ---------------------------------------------------------------------------

_REMOTE_SCRIPT = """
import sys

class BlockPackage:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_vjepa_area" or name.startswith("hf_vjepa_area."):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockPackage())
try:
    import hf_vjepa_area  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("hf_vjepa_area is importable: the test would prove nothing")

import torch
from transformers import AutoModel, AutoModelForVideoClassification

encoder_id, classifier_id, data_path, out_dir, outputs_path = sys.argv[1:]
data = torch.load(data_path)
encoder = AutoModel.from_pretrained(encoder_id, trust_remote_code=True).eval()
classifier = AutoModelForVideoClassification.from_pretrained(classifier_id, trust_remote_code=True).eval()
assert type(encoder).__module__.startswith("transformers_modules."), type(encoder).__module__
encoder.save_pretrained(out_dir)  # a remote-code model writes its code again
again = AutoModel.from_pretrained(out_dir, trust_remote_code=True).eval()
with torch.no_grad():
    outputs = dict(tokens=encoder(data["video"]).last_hidden_state, logits=classifier(data["video"]).logits,
                   resaved_tokens=again(data["video"]).last_hidden_state)
torch.save(outputs, outputs_path)  # compared by the test, under tests/numerics' rule
assert not [m for m in sys.modules if m.startswith("hf_vjepa_area")]
print("OK")
"""


def test_trust_remote_code_without_the_package(tiny_hub, tmp_path):
    video = tiny_video().transpose(1, 2)
    with torch.no_grad():
        data = dict(
            video=video,
            tokens=tiny_hub.encoder(video).last_hidden_state,
            logits=tiny_hub.classifier(video).logits,
        )
    torch.save(data, tmp_path / "data.pt")
    (tmp_path / "remote.py").write_text(_REMOTE_SCRIPT)
    env = _subprocess_env(HF_HUB_CACHE=str(tiny_hub.cache), HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), tiny_hub.encoder_id, tiny_hub.classifier_id,
         str(tmp_path / "data.pt"), str(tmp_path / "resaved"), str(tmp_path / "outputs.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout[-2000:] + result.stderr[-4000:]
    outputs = torch.load(tmp_path / "outputs.pt")
    for name, expected in (("tokens", data["tokens"]), ("logits", data["logits"]), ("resaved_tokens", data["tokens"])):
        assert_matches(outputs[name], expected, msg=name)


# ---- the one mapping to and from transformers' VJEPA2Config ---------------------------------


def test_config_maps_to_and_from_transformers_vjepa2config():
    from hf_vjepa_area.modeling.released import variant_of

    config = _config(predictor_embed_dim=48, predictor_num_heads=4, predictor_depth=3, predictor_num_mask_tokens=2)
    theirs = config.to_transformers_config()
    assert (theirs.crop_size, theirs.frames_per_clip, theirs.hidden_size, theirs.num_attention_heads) == (32, 4, 24, 2)
    assert (theirs.pred_hidden_size, theirs.pred_num_attention_heads, theirs.pred_num_hidden_layers, theirs.pred_num_mask_tokens) == (48, 4, 3, 2)
    back = VJEPA2AreaConfig.from_transformers_config(theirs, area_splits=(2, 2, 1), probe_depth=2, probe_num_heads=2)
    assert back.to_dict() == config.to_dict()
    assert VJEPA2AreaConfig.from_transformers_config(theirs, classifier=True).probe_num_heads == 2  # the encoder's
    for bad, message in ((dict(use_rope=False), "use_rope=False"), (dict(img_size=[32, 64]), "non-square")):
        with pytest.raises(ValueError, match=message):
            _config(**bad).to_transformers_config()
    assert variant_of(VJEPA2AreaConfig.from_variant("giant")) == "giant" and variant_of(config) is None
