"""A released-format multi-level probe (Meta's Diving48 layout) converts into the classifier that reproduces it."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_vjepa_area import AttentiveClassifier, VJEPA2AreaConfig, VJEPA2AreaForVideoClassification
from hf_vjepa_area.conversion import ConversionError
from hf_vjepa_area.conversion.cli import main
from hf_vjepa_area.conversion.load import RELEASED_PROBES, probe_out_layers

from tests.conftest import TINY_PT_FLAGS
from tests.numerics import assert_differs, assert_matches
from .conftest import write_released_probe


@pytest.fixture(scope="module")
def multilevel_probe(tmp_path_factory):
    """A probe in Meta's released layout, under a Diving48 probe's kind of name."""
    path = tmp_path_factory.mktemp("probe") / "diving48-vit-tiny-32x4x3.pt"
    return path, write_released_probe(path, 1, 7)


def _reference_logits(release_model, head: AttentiveClassifier, video: torch.Tensor, layers) -> torch.Tensor:
    """transformers' VJEPA2Model (the source) read block by block through forward hooks, each chosen block's
    output through its final `layernorm`, concatenated along the tokens in block order, then the probe."""
    encoder = release_model.encoder
    outputs = {}
    hooks = [encoder.layer[i].register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out[0])) for i in layers]
    try:
        release_model(video)
    finally:
        for hook in hooks:
            hook.remove()
    return head(torch.cat([encoder.layernorm(outputs[i]) for i in layers], dim=1))


def test_released_format_multilevel_probe_converts_and_classifies_like_the_reference(tmp_path, tiny_release, multilevel_probe, capsys):
    import copy

    probe, head = multilevel_probe
    out = tmp_path / "diving48"
    argv = [str(tiny_release.pt), str(out), *TINY_PT_FLAGS, "--probe", str(probe), "--probe-out-layers", "0,1", "--verify"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "verify logits" in capsys.readouterr().out  # checked against transformers' modules, block by block
    assert "reading blocks [0, 1] (each through the final norm" in (out / "README.md").read_text()

    video = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        reference = _reference_logits(copy.deepcopy(tiny_release.model).double(), copy.deepcopy(head).double(), video, [0, 1])
        last_only = copy.deepcopy(head).double()(copy.deepcopy(tiny_release.model).double()(video).last_hidden_state)
        model = VJEPA2AreaForVideoClassification.from_pretrained(out).eval()
        assert model.config.probe_out_layers == [0, 1]
        logits = model.double()(video).logits
        assert_matches(logits, reference)
        assert_differs(logits, last_only)  # the reference tells the two inputs apart

    # The folder's own code (trust_remote_code, hf_vjepa_area not importable) gives the package's logits.
    from tests.test_transformers_integration import _REMOTE_SCRIPT, _subprocess_env

    model = model.float()
    with torch.no_grad():
        data = dict(video=video.float(), tokens=model.encoder(video.float()).last_hidden_state, logits=model(video.float()).logits)
    torch.save(data, tmp_path / "data.pt")
    (tmp_path / "remote.py").write_text(_REMOTE_SCRIPT)
    env = _subprocess_env(HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, str(tmp_path / "remote.py"), str(out), str(out), str(tmp_path / "data.pt"),
                             str(tmp_path / "resaved"), str(tmp_path / "outputs.pt")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout[-2000:] + result.stderr[-4000:]
    outputs = torch.load(tmp_path / "outputs.pt")
    for name, expected in (("tokens", data["tokens"]), ("logits", data["logits"]), ("resaved_tokens", data["tokens"])):
        assert_matches(outputs[name], expected, msg=name)


def test_the_blocks_of_a_probe_are_never_guessed(tmp_path, tiny_release, multilevel_probe, capsys):
    probe, _ = multilevel_probe
    base = [str(tiny_release.pt), str(tmp_path / "out"), *TINY_PT_FLAGS, "--probe", str(probe)]
    assert main(base) == 2
    assert "do not say which encoder blocks" in capsys.readouterr().err and not (tmp_path / "out").exists()
    released_name = tmp_path / "diving48-vitl-256.pt"  # a released Diving48 probe's name on a size it was not made for
    released_name.write_bytes(probe.read_bytes())
    assert main([*base[:-1], str(released_name)]) == 2
    assert "released sizes only" in capsys.readouterr().err
    assert main([str(tiny_release.pt), str(tmp_path / "out"), *TINY_PT_FLAGS, "--probe-out-layers", "0,1"]) == 2
    assert "only with --probe" in capsys.readouterr().err


def test_released_probes_read_their_known_blocks():
    large, giant = VJEPA2AreaConfig.from_variant("large"), VJEPA2AreaConfig.from_variant("giant")
    assert probe_out_layers(Path("diving48-vitl-256.pt"), None, large) == [17, 19, 21, 23]
    assert probe_out_layers(Path("diving48-vitg-384-32x4x3.pt"), None, giant) == [24, 29, 34, 39]
    assert probe_out_layers(Path("ssv2-vitl-16x2x3.pt"), None, large) is None
    assert probe_out_layers(Path("diving48-vitl-256.pt"), "last", large) is None  # the user's word wins
    assert probe_out_layers(Path("mine.pt"), "20,22", large) == [20, 22]
    assert set(RELEASED_PROBES.values()) == {"last", "multilevel"}
    with pytest.raises(ConversionError, match="out of range"):
        probe_out_layers(Path("mine.pt"), "24", large)


def test_a_transformers_classifier_reads_the_blocks_it_is_told(hf_classifier_dir, tiny_release):
    """transformers' VJEPA2ForVideoClassification reads the last block (its Diving48 repos too); a probe
    trained on other blocks is converted with them and then reads them, through transformers' own pooler."""
    from transformers import VJEPA2ForVideoClassification

    from hf_vjepa_area import load_model
    from hf_vjepa_area.locate import SourceError

    hf = VJEPA2ForVideoClassification.from_pretrained(hf_classifier_dir).double().eval()
    video = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ours = load_model(hf_classifier_dir, read_options=dict(probe_out_layers="0,1")).double()
    assert ours.config.probe_out_layers == [0, 1]
    assert load_model(hf_classifier_dir).config.probe_out_layers is None  # transformers' own reading
    with torch.no_grad():
        encoder, outputs = hf.vjepa2.encoder, {}
        hooks = [encoder.layer[i].register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out[0])) for i in (0, 1)]
        hf(video)
        for hook in hooks:
            hook.remove()
        reference = hf.classifier(hf.pooler(torch.cat([encoder.layernorm(outputs[i]) for i in (0, 1)], dim=1)))
        assert_matches(ours(video).logits, reference)
    with pytest.raises(SourceError, match="has no probe"):
        load_model(tiny_release.folder, read_options=dict(probe_out_layers="0,1"))  # transformers' VJEPA2Model: no probe
