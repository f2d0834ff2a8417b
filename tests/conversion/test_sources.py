"""Reading checkpoints safely: weights_only loading, refusal of code-running pickles, entry selection."""

import os
import pickle

import pytest
import torch

from hf_vjepa_area.conversion.sources import (
    ConversionError,
    UnsafeCheckpointError,
    read_original_encoder,
    read_original_probe,
    safe_torch_load,
)


class _RunsCode:
    """Unpickling this would call os.system: a stand-in for a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "vitl.pt"
    torch.save({"encoder": {"patch_embed.proj.weight": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load vitl.pt"):
        safe_torch_load(path)
    with pytest.raises(UnsafeCheckpointError):
        read_original_encoder(path)
    assert not marker.exists()


def test_malicious_legacy_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned-legacy"
    path = tmp_path / "legacy.pt"
    with open(path, "wb") as handle:
        pickle.dump({"encoder": _RunsCode(marker)}, handle)
    with pytest.raises(UnsafeCheckpointError, match="it names posix.system|it names nt.system"):
        safe_torch_load(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, content",
    [
        ("broken.pt", b"not a checkpoint"),  # the unpickler's "Unsupported operand": used to be "would execute code"
        ("notes.pt", b"hello\n"),  # used to escape as a bare KeyError
        ("truncated.pt", None),  # a zip checkpoint cut short
    ],
)
def test_garbage_file_is_a_clear_error(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        torch.save({"encoder": {"w": torch.zeros(64)}}, path)
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_bytes(content)
    with pytest.raises(ConversionError) as err:
        safe_torch_load(path)
    assert type(err.value) is ConversionError  # not UnsafeCheckpointError: nothing in it would run code
    assert f"cannot read {name}: not a PyTorch checkpoint, or corrupted (" in str(err.value)
    assert "\n" not in str(err.value)


def test_legacy_pickle_of_plain_tensors_is_not_called_unsafe(tmp_path):
    """Protocol 4 in torch's legacy format: the weights-only unpickler stops at an opcode, not at a global."""
    path = tmp_path / "legacy4.pt"
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    with pytest.raises(ConversionError, match="cannot read legacy4.pt with torch.load\\(weights_only=True\\)") as err:
        safe_torch_load(path)
    assert type(err.value) is ConversionError and "re-save" in str(err.value)


def test_default_entry_is_target_encoder(original_pt, tiny_encoder):
    read = read_original_encoder(original_pt)
    assert read.checkpoint_key == "target_encoder"
    ref = tiny_encoder.state_dict()
    assert sorted(read.state_dict) == sorted(ref)
    assert torch.equal(read.state_dict["norm.weight"], ref["norm.weight"] + 0.25)
    assert "encoder" in read.unused_entries and "predictor" in read.unused_entries
    assert len(read.file["sha256"]) == 64


def test_explicit_entry_and_missing_entry(original_pt, tiny_encoder):
    read = read_original_encoder(original_pt, "encoder")
    assert torch.equal(read.state_dict["norm.weight"], tiny_encoder.state_dict()["norm.weight"])
    with pytest.raises(ConversionError, match="no 'ema' entry.*encoder.*target_encoder"):
        read_original_encoder(original_pt, "ema")


def test_fallback_to_encoder_and_bare_state_dict(tmp_path, tiny_encoder):
    only_encoder = tmp_path / "only-encoder.pt"
    torch.save({"encoder": {"module." + k: v for k, v in tiny_encoder.state_dict().items()}}, only_encoder)
    read = read_original_encoder(only_encoder)
    assert read.checkpoint_key == "encoder" and read.notes
    bare = tmp_path / "bare.pt"
    torch.save(tiny_encoder.state_dict(), bare)
    read = read_original_encoder(bare)
    assert read.checkpoint_key is None and "norm.weight" in read.state_dict


def test_probe_file_passed_as_encoder_is_explained(probe_pt):
    with pytest.raises(ConversionError, match="--probe"):
        read_original_encoder(probe_pt)


def test_probe_reading(probe_pt):
    probe = read_original_probe(probe_pt)
    assert probe.frames_hint == 4 and probe.num_classifiers == 1
    assert all(k.startswith("module.") for k in probe.state_dict)
    with pytest.raises(ConversionError, match="out of range"):
        read_original_probe(probe_pt, index=3)
