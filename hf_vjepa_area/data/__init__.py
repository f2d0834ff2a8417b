"""Video data for V-JEPA 2 probes and self-supervised training: decoding, clip sampling, preprocessing,
manifests, pretraining clips, multi-block masks.

Self-contained: needs torch, numpy and PyAV (torchcodec when present), nothing from the
modeling code.
"""

from .dataset import ManifestEntry, SkippedSample, VideoClipDataset, collate_skip_none, read_manifest
from .decoding import VideoDecodeError, VideoInfo, VideoReader, open_video, read_frames, torchcodec_available
from .kinetics import (
    ManifestSummary,
    build_manifest_from_annotations,
    build_manifest_from_folder,
    read_class_list,
)
from .masks import RELEASED_MASK_CONFIGS, MaskConfig, MultiBlockMaskCollator
from .pretraining import NoUsableVideoError, PretrainingClipDataset, collate_clips, list_videos
from .sampling import GlobalBatchSampler, VideoTooShortError, clip_indices, item_seed
from .synthetic import SyntheticVideoDataset, make_synthetic_video_dataset
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, normalize, resize_short_side

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RELEASED_MASK_CONFIGS",
    "MaskConfig",
    "MultiBlockMaskCollator",
    "EvalTransform",
    "GlobalBatchSampler",
    "ManifestEntry",
    "ManifestSummary",
    "NoUsableVideoError",
    "PretrainingClipDataset",
    "SkippedSample",
    "SyntheticVideoDataset",
    "TrainTransform",
    "VideoClipDataset",
    "VideoDecodeError",
    "VideoInfo",
    "VideoReader",
    "VideoTooShortError",
    "build_manifest_from_annotations",
    "build_manifest_from_folder",
    "clip_indices",
    "collate_clips",
    "collate_skip_none",
    "item_seed",
    "list_videos",
    "make_synthetic_video_dataset",
    "normalize",
    "open_video",
    "read_class_list",
    "read_frames",
    "read_manifest",
    "resize_short_side",
    "torchcodec_available",
]
