"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`) against our classes.

Those mixins ship in transformers' source distribution, not in its wheel. `.ci/run` downloads the sdist of
the installed version and points `TRANSFORMERS_TESTS_DIR` at its `tests/` folder; without it this module
is skipped, saying so. The sdist holds the top-level test files only: the three helpers they import from
sibling folders are supplied here. `GenerationTesterMixin` and `ExportTesterMixin` are empty bases (this
encoder does not generate; the export tests live in the missing `tests/exporters/`), and
`config_common_kwargs` is our own set of non-default values of `PreTrainedConfig`'s common arguments.

Each model test class runs on three tiny encoders: full attention, area attention on a grid its split
divides (the reshaped "dense" kernel) and on one it does not (uneven areas, the "segment" kernel on CPU).

The mixin's skips, each with its own reason, fall in two groups. Hardware or libraries CI does not have:
an accelerator (also the slow compile test, which needs one), several accelerators, MPS, Flash Attention
2/3/4, DeepSpeed, the kernels library. Features this model does not have: caches, token embeddings
(`inputs_embeds`, resizing), language-model heads, sparse experts, sub-configs and composite models, a
tensor-parallel plan, weight-conversion mappings, fp32-kept modules, sliding windows, transformers'
configurable RoPE (`rope_parameters`; V-JEPA's 3D RoPE is fixed), position-embedding tables, the
`capture_outputs` decorator. The one skip of a check that does apply (a resized classification layer
the mixin's heuristic cannot find: ours is `head.linear`) is run by `test_mismatched_head_reinitialises_only_its_linear`.
"""

from __future__ import annotations

import importlib
import math
import os
import pathlib
import sys
import tempfile
import types
import unittest
import warnings
from unittest import mock

import pytest
import torch
import transformers

from hf_vjepa_area import VJEPA2AreaConfig, VJEPA2AreaForVideoClassification, VJEPA2AreaModel

TESTS_DIR_VAR = "TRANSFORMERS_TESTS_DIR"
PACKAGE = "transformers_sdist_tests"


def _load_transformers_tests():
    folder = os.environ.get(TESTS_DIR_VAR)
    if not folder:
        pytest.skip(
            f"{TESTS_DIR_VAR} is unset: point it at the tests/ folder of transformers' source distribution "
            "(.ci/run downloads it with pip) to run transformers' common tests",
            allow_module_level=True,
        )
    folder = pathlib.Path(folder)
    if not (folder / "test_modeling_common.py").is_file():  # set but wrong: an error, never a skip
        raise FileNotFoundError(f"{TESTS_DIR_VAR}={folder} has no test_modeling_common.py: expected an sdist's tests/")
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(folder)]
        sys.modules[PACKAGE] = package
        stubs = {
            "exporters.test_export": {"ExportTesterMixin": type("ExportTesterMixin", (), {})},
            "generation.test_utils": {"GenerationTesterMixin": type("GenerationTesterMixin", (), {})},
            "utils.test_configuration_utils": {"config_common_kwargs": COMMON_CONFIG_KWARGS},
        }
        for name, attributes in stubs.items():
            parent = f"{PACKAGE}.{name.split('.')[0]}"
            sys.modules.setdefault(parent, types.ModuleType(parent)).__path__ = []
            module = types.ModuleType(f"{PACKAGE}.{name}")
            module.__dict__.update(attributes)
            sys.modules[module.__name__] = module
    with warnings.catch_warnings():  # transformers registers its marks (flash_attn_test, ...) in its own conftest
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    # The mixin finds a class's task (base model: no loss; video classifier: labels) by name in transformers'
    # own mappings, which list only the models transformers ships: its module gets copies that list ours too.
    for mapping, name in (("MODEL_MAPPING_NAMES", "VJEPA2AreaModel"),
                          ("MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES", "VJEPA2AreaForVideoClassification")):  # fmt: skip
        setattr(modeling, mapping, {**getattr(modeling, mapping), VJEPA2AreaConfig.model_type: name})
    # test_configuration_common loads transformers through the repository's empty tests/__init__.py, which the
    # sdist leaves out; the installed transformers is the module it means.
    with mock.patch("transformers.utils.direct_transformers_import", lambda *args, **kwargs: transformers):
        configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling, configuration


# Common `PreTrainedConfig` arguments, each away from its default: the constructor must keep every one.
COMMON_CONFIG_KWARGS = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["VJEPA2AreaForVideoClassification"],
    "id2label": {0: "walk", 1: "run"},
    "label2id": {"walk": 0, "run": 1},
    "problem_type": "single_label_classification",
    "tie_word_embeddings": False,
}

modeling_common, configuration_common = _load_transformers_tests()
ModelTesterMixin = modeling_common.ModelTesterMixin
ConfigTester = configuration_common.ConfigTester

# Tiny encoders: patch 4 keeps the token grids large enough for several areas at a few hundred pixels.
BASE = dict(embed_dim=24, depth=2, num_heads=2, patch_size=4, tubelet_size=2, probe_depth=2, probe_num_heads=2)
VARIANTS = {
    "full": dict(img_size=[16, 16], num_frames=4),  # grid (2, 4, 4)
    "area_even": dict(img_size=[16, 16], num_frames=4, area_splits=[2, 2, 2], area_layers=[0]),  # 8 areas of 4 tokens
    "area_uneven": dict(img_size=[20, 12], num_frames=6, area_splits=[2, 2, 1], area_layers=[1]),  # grid (3, 5, 3)
}


class VJEPA2AreaModelTester:
    """What `ModelTesterMixin` asks of a model tester: a config, inputs and the sizes it checks outputs against."""

    def __init__(self, parent, variant: str, batch_size: int = 2, num_labels: int = 3):
        self.parent = parent
        self.fields = {**BASE, **VARIANTS[variant]}
        self.batch_size = batch_size
        self.num_labels = num_labels
        self.is_training = True
        self.hidden_size = self.fields["embed_dim"]
        self.num_hidden_layers = self.fields["depth"]
        self.num_attention_heads = self.fields["num_heads"]
        self.seq_length = math.prod(self.get_config().grid_size)

    def get_config(self) -> VJEPA2AreaConfig:
        return VJEPA2AreaConfig(**self.fields, num_labels=self.num_labels)

    def prepare_config_and_inputs(self):
        config = self.get_config()
        height, width = config.img_size
        pixels = torch.randn(self.batch_size, config.num_frames, config.in_chans, height, width)
        labels = torch.randint(0, self.num_labels, (self.batch_size,))
        return config, pixels, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixels, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values_videos": pixels}


class _CommonTests(ModelTesterMixin):
    all_model_classes = (VJEPA2AreaModel, VJEPA2AreaForVideoClassification)
    variant = None
    test_resize_embeddings = False  # no token embeddings: the input is pixels
    test_torch_exportable = False  # the export mixin is not in the sdist (see the module docstring)
    test_can_init_all_missing_weights_before_2023 = True  # the mixin dates files by a copyright line; ours have none

    def setUp(self):
        self.model_tester = VJEPA2AreaModelTester(self, self.variant)
        self.config_tester = ConfigTester(self, config_class=VJEPA2AreaConfig, has_text_modality=False,
                                          **self.model_tester.fields)  # fmt: skip

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_mismatched_head_reinitialises_only_its_linear(self):
        # The mixin's `test_can_load_ignoring_mismatched_shapes` finds the resized layer among top-level linears,
        # `*ClassificationHead` or `nn.Sequential` children and skips otherwise; ours is `head.linear`.
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = VJEPA2AreaForVideoClassification(config)
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            with self.assertRaises(RuntimeError):
                VJEPA2AreaForVideoClassification.from_pretrained(folder, num_labels=42)
            resized = VJEPA2AreaForVideoClassification.from_pretrained(folder, num_labels=42, ignore_mismatched_sizes=True)
        old, new = dict(model.named_parameters()), dict(resized.named_parameters())
        self.assertEqual(set(old), set(new))
        for name, value in new.items():
            if name.startswith("head.linear."):
                self.assertEqual(value.shape[0], 42)
            else:
                self.assertTrue(torch.equal(value, old[name]), name)
        self.assertEqual(resized(**inputs).logits.shape, (self.model_tester.batch_size, 42))

    def test_model_get_set_embeddings(self):
        # The mixin's version expects token embeddings (`nn.Embedding`); a video model's input embedding is its
        # patch projection, as in transformers' own ViT-style tests, and it has no output embeddings.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), torch.nn.Conv3d)
            self.assertIsNone(model.get_output_embeddings())


class FullAttentionTest(_CommonTests, unittest.TestCase):
    variant = "full"


class EvenAreaAttentionTest(_CommonTests, unittest.TestCase):
    variant = "area_even"


class UnevenAreaAttentionTest(_CommonTests, unittest.TestCase):
    variant = "area_uneven"
