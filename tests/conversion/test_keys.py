"""The key table (both directions, exact), Meta's `.pt` unpacking, and safe loading."""

import os
import pickle

import pytest
import torch

from hf_vjepa_area.checkpoint_keys import (
    ConversionError,
    UnsafeCheckpointError,
    original_parts,
    safe_torch_load,
    strip_original_prefixes,
    to_transformers,
    ENCODER_KEYS,
    HEAD_KEYS,
    PREDICTOR_KEYS,
)


def test_transformers_state_dicts_round_trip_exactly(tiny_release, hf_classifier_dir):
    from safetensors.torch import load_file

    for state in (tiny_release.model.state_dict(), load_file(hf_classifier_dir / "model.safetensors")):
        root = "vjepa2." if "classifier.weight" in state else ""
        parts = original_parts(state)
        assert "blocks.1.attn.qkv.weight" in parts["encoder"] and "mask_tokens.2" in parts["predictor"]
        back = to_transformers({k: v for k, v in parts["encoder"].items() if not k.startswith("head.")}, ENCODER_KEYS, root + "encoder.")
        back.update(to_transformers(parts["predictor"], PREDICTOR_KEYS, root + "predictor."))
        back.update(to_transformers({k: v for k, v in parts["encoder"].items() if k.startswith("head.")}, HEAD_KEYS))
        assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_fused_rows_are_query_key_value_in_order(tiny_release):
    state = tiny_release.model.state_dict()
    qkv = original_parts(state)["encoder"]["blocks.0.attn.qkv.bias"]
    expected = torch.cat([state[f"encoder.layer.0.attention.{n}.bias"] for n in ("query", "key", "value")])
    assert torch.equal(qkv, expected)
    assert original_parts(state)["predictor"]["mask_tokens.1"].shape == (1, 1, 96)


@pytest.mark.parametrize("prefix", ["module.backbone.", "module.", "backbone.", ""])
def test_original_prefixes_are_stripped(prefix):
    state = {prefix + "blocks.0.norm1.weight": torch.ones(2), prefix + "norm.bias": torch.zeros(2)}
    assert sorted(strip_original_prefixes(state)) == ["blocks.0.norm1.weight", "norm.bias"]


def test_metas_checkpoint_entries(tiny_release):
    checkpoint = safe_torch_load(tiny_release.pt)
    target = original_parts(checkpoint)
    context = original_parts(checkpoint, "encoder")
    assert torch.equal(context["encoder"]["norm.weight"], target["encoder"]["norm.weight"] + 0.25)
    assert torch.equal(target["context_encoder"]["norm.weight"], context["encoder"]["norm.weight"])
    assert "predictor_blocks.1.attn.qkv.weight" in target["predictor"]
    with pytest.raises(ConversionError, match=r"no 'ema' entry; its state dicts are \['encoder', 'predictor', 'target_encoder'\]"):
        original_parts(checkpoint, "ema")
    with pytest.raises(ConversionError, match="a probe file"):
        original_parts({"classifiers": [{"w": torch.zeros(1)}]})


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickles_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"encoder": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, tmp_path / "vitl.pt")
    with pytest.raises(UnsafeCheckpointError, match="refusing to load vitl.pt: it names (posix|nt).system"):
        safe_torch_load(tmp_path / "vitl.pt")
    with open(tmp_path / "legacy.pt", "wb") as handle:
        pickle.dump({"encoder": _RunsCode(marker)}, handle)
    with pytest.raises(ConversionError, match=r"cannot read legacy.pt with torch.load\(weights_only=True\)"):
        safe_torch_load(tmp_path / "legacy.pt")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"not a checkpoint", b"hello\n", None])
def test_garbage_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "vitl.pt"
    if content is None:  # a zip checkpoint cut short
        torch.save({"encoder": {"w": torch.zeros(64)}}, path)
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_bytes(content)
    with pytest.raises(ConversionError) as err:
        safe_torch_load(path)
    assert type(err.value) is ConversionError and "cannot read vitl.pt" in str(err.value) and "\n" not in str(err.value)
