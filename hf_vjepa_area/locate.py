"""Where a model source lives: a local path, or a Hub repo's snapshot in the Hugging Face cache.

A source that looks like a path never touches the network; a Hub id is asked of the Hub once, without
retries, and read from the cache alone when the Hub does not answer or `HF_HUB_OFFLINE=1`. Every failure
is one `SourceError` line.
"""

from __future__ import annotations

import pathlib

# A file, never a Hub repo id: a source with one of these suffixes is never looked up on the Hub.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".safetensors", ".ckpt")


class SourceError(ValueError):
    """A model source that cannot be read: the one-line message says what was wrong and how to fix it."""


def looks_like_path(source: str) -> bool:
    """An existing path, an absolute or relative one (`.`, `~`), or a checkpoint file name."""
    path = pathlib.Path(source).expanduser()
    return path.exists() or path.is_absolute() or source.startswith((".", "~")) or path.suffix in CHECKPOINT_SUFFIXES


def looks_local(source: str) -> bool:
    """Not a Hub id: path-like (`looks_like_path`) or anything but ORG/NAME. Never looked up on the Hub."""
    return looks_like_path(source) or source.count("/") != 1


def resolve_folder(source: str, revision: str | None = None, allow_patterns=("*.json", "*.safetensors")) -> pathlib.Path:
    """A local folder as it is, or a Hub repo's snapshot in the Hugging Face cache (downloaded when the Hub
    is reachable). Offline (`HF_HUB_OFFLINE=1`, or the Hub not answering one request) the cache alone is
    read, without retries. Every failure is one `SourceError` line."""
    path = pathlib.Path(source).expanduser()
    if path.is_dir():
        if revision:
            raise SourceError(f"--revision: {source} is a local folder, which has no revisions (they are for Hub ids)")
        return path
    if looks_local(source):
        raise SourceError(f"{source}: no such local file or folder")
    from huggingface_hub import HfApi, constants, errors, snapshot_download

    offline, why = constants.HF_HUB_OFFLINE, "HF_HUB_OFFLINE is set"
    if not offline:
        try:  # one request, no retries: a missing repo or an unreachable Hub is known at once
            HfApi().model_info(source, revision=revision)
        except errors.HFValidationError as error:
            raise SourceError(f"{source}: no such local file or folder, and not a valid Hub id ({' '.join(str(error).split())})") from None
        except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as error:
            what = "revision" if isinstance(error, errors.RevisionNotFoundError) else "repo (or it is private: log in with `hf auth login`)"
            raise SourceError(f"{source}: no such local folder, and no such Hub {what}") from None
        except Exception as error:  # noqa: BLE001 - no network, DNS, proxy: fall back to the cache
            offline, why = True, f"the Hub did not answer: {type(error).__name__}"
    try:
        return pathlib.Path(snapshot_download(source, revision=revision, allow_patterns=list(allow_patterns),
                                              local_files_only=offline))  # fmt: skip
    except Exception as error:  # noqa: BLE001 - whatever the Hub client raises, in one line
        if offline:
            raise SourceError(f"{source}: not found locally, not reachable on the Hub ({why}); download it once online "
                              f"(hf download {source}) or pass a local folder") from None  # fmt: skip
        detail = " ".join(str(error).split())[:200]
        raise SourceError(f"{source}: cannot be read from the Hub ({type(error).__name__}: {detail})") from None
