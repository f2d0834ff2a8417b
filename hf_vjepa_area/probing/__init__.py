"""Frozen attentive probing, V-JEPA 2 style: the reusable parts of `examples/k400_probe.py`.

The protocol (V-JEPA 2, `evals/video_classification_frozen`): a frozen encoder turns each of a video's
`S` temporal segments x `V` spatial views into tokens; per view, the `S` segments' tokens are
concatenated along the token axis (`[V, S*N, D]`); attentive classifiers (`AttentiveClassifier`,
4 blocks, 16 heads) are trained on those tokens, several in parallel over a grid of learning rates x
weight decays (AdamW, cosine schedule), and the best head is reported. At evaluation the softmax is
averaged over the `V` views.

One module per job (the encoder to probe comes from `hf_vjepa_area.sources`):

- `tokens`: the frozen forward and the token layout (`encode_clips`, `group_views`, `probe_tokens`).
- `heads`: the probe (`MultiHeadProbe`, `hparam_grid`), its memory estimate, losses, optimizer, schedule.
- `loop`: `train_one_epoch` (one head at a time, one gradient reduction per step) and `evaluate`.
- `metrics`: per-sample records, exact for any number of processes.
- `features`: encoded datasets and the feature cache.
- `report`: the global batch against the protocol, the CPU epoch estimate, results.json's content.
- `publish`: probe weights, accuracy plots, the classifier repo folder and its model card.
"""

from .features import (
    FeatureDataset,
    cached_features,
    cached_split,
    collate_features,
    data_signature,
    extract_features,
)
from .heads import (
    CHECKPOINTING_THRESHOLD_BYTES,
    HEAD_GRAPH_BYTES,
    HeadSpec,
    MultiHeadProbe,
    WarmupCosine,
    build_optimizer,
    build_scheduler,
    head_activation_bytes,
    hparam_grid,
    per_sample_loss,
    view_averaged_probs,
)
from .loop import (
    SeededSamples,
    _check_per_head_ddp,  # noqa: F401  (tested directly)
    backward_per_head,
    evaluate,
    train_one_epoch,
)
from .metrics import (
    add_records,
    dedupe_records,
    gather_records,
    new_records,
    stack_records,
    summarize_records,
)
from .publish import (
    CLASSIFIER_RESULTS,
    accuracy_svg,
    build_classifier,
    check_classifier_folder,
    classifier_model_card,
    head_metadata,
    probe_input,
    save_all_heads,
    save_probe_weights,
    write_accuracy_png,
    write_probe_outputs,
)
from .report import (
    HEAVY_TOKENS,
    add_epoch,
    batching_line,
    build_results,
    describe_encoder,
    epoch_scalars,
    estimate_epoch,
    resolve_batching,
)
from .tokens import (
    ENCODER_CHUNK,
    OUT_LAYERS_HELP,
    batch_tokens,
    encode_clips,
    encoder_fingerprint,
    group_views,
    probe_tokens,
    resolve_out_layers,
    tokens_per_clip,
)

__all__ = [
    "CLASSIFIER_RESULTS",
    "CHECKPOINTING_THRESHOLD_BYTES",
    "ENCODER_CHUNK",
    "HEAD_GRAPH_BYTES",
    "HEAVY_TOKENS",
    "OUT_LAYERS_HELP",
    "FeatureDataset",
    "HeadSpec",
    "MultiHeadProbe",
    "SeededSamples",
    "WarmupCosine",
    "accuracy_svg",
    "add_epoch",
    "add_records",
    "backward_per_head",
    "batch_tokens",
    "batching_line",
    "build_classifier",
    "check_classifier_folder",
    "build_optimizer",
    "build_results",
    "build_scheduler",
    "cached_features",
    "cached_split",
    "classifier_model_card",
    "collate_features",
    "data_signature",
    "dedupe_records",
    "describe_encoder",
    "encode_clips",
    "encoder_fingerprint",
    "epoch_scalars",
    "estimate_epoch",
    "evaluate",
    "extract_features",
    "gather_records",
    "group_views",
    "head_activation_bytes",
    "head_metadata",
    "hparam_grid",
    "new_records",
    "per_sample_loss",
    "probe_input",
    "probe_tokens",
    "resolve_batching",
    "resolve_out_layers",
    "save_all_heads",
    "save_probe_weights",
    "stack_records",
    "summarize_records",
    "tokens_per_clip",
    "train_one_epoch",
    "view_averaged_probs",
    "write_accuracy_png",
    "write_probe_outputs",
]
