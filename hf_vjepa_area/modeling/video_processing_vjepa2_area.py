"""V-JEPA 2's video processor, decoding video files with PyAV.

transformers' video processors decode paths and URLs with torchcodec (torchvision's decoder is gone), which
this project does not depend on; PyAV is a dependency. Preprocessing is `VJEPA2VideoProcessor`'s unchanged.
Self-contained (transformers only) so that `save_pretrained` can copy it into a Hub folder as remote code.
"""

from __future__ import annotations

from transformers import VJEPA2VideoProcessor
from transformers.video_utils import load_video


class VJEPA2AreaVideoProcessor(VJEPA2VideoProcessor):
    """`VJEPA2VideoProcessor` whose paths and URLs are decoded by PyAV (frames sampled as transformers does),
    so `pipeline("video-classification", ...)` runs on a file with only this project's dependencies."""

    def fetch_videos(self, video_url_or_urls, sample_indices_fn=None):
        if isinstance(video_url_or_urls, list):
            return list(zip(*[self.fetch_videos(x, sample_indices_fn=sample_indices_fn) for x in video_url_or_urls]))
        return load_video(video_url_or_urls, backend="pyav", sample_indices_fn=sample_indices_fn)


# `save_pretrained` copies this file beside video_preprocessor_config.json and records it in `auto_map`.
VJEPA2AreaVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = ["VJEPA2AreaVideoProcessor"]
