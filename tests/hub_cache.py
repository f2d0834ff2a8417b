"""A repo folder placed in a Hugging Face Hub cache, so that offline loads of its repo id find it (tests only)."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import uuid

from hf_vjepa_area._files import move_into_place, write_text_atomically


def add_folder_to_hub_cache(folder: str | os.PathLike, repo_id: str, cache_dir: str | os.PathLike | None = None,
                            commit_hash: str | None = None) -> pathlib.Path:  # fmt: skip
    """Copy a repo folder into a Hugging Face Hub cache as `repo_id`'s `main` revision (returns the snapshot).

    With `HF_HUB_OFFLINE=1`, `from_pretrained(repo_id)` and `timm.create_model("hf-hub:" + repo_id)` then
    load it without a network (tests, air-gapped machines).
    """
    from huggingface_hub import constants

    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    cache = pathlib.Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    commit_hash = commit_hash or uuid.uuid4().hex + uuid.uuid4().hex[:8]
    if len(commit_hash) != 40 or any(c not in "0123456789abcdef" for c in commit_hash):
        raise ValueError(f"commit_hash must be 40 lowercase hex digits, got {commit_hash!r}")
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit_hash
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    # Copied beside the snapshot and swapped in, and the ref replaced by rename: a failed copy leaves the
    # cache as it was, never a ref pointing at half a snapshot.
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{commit_hash}.tmp-", dir=snapshot.parent))
    try:
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        move_into_place(staging, snapshot)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_text_atomically(repo_dir / "refs" / "main", commit_hash, overwrite=True)
    return snapshot
