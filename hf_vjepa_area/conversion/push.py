"""Publishing a converted folder with huggingface_hub: `create_repo` then `upload_folder`.

Idempotent: `create_repo(exist_ok=True)`, and `upload_folder` skips files whose content the revision
already has (re-running after a success makes no commit). Resumable: an interrupted run can simply be
run again; files the Hub already stores are not sent twice. The token is never taken on the command
line: huggingface_hub reads `HF_TOKEN` or the login saved by `hf auth login`.
"""

from __future__ import annotations

import os
from pathlib import Path

IGNORE_PATTERNS = [".cache/**", ".*", "**/.*"]


def planned_files(folder: str | Path) -> list[dict]:
    """The files `upload_folder` would send (path in repo and size), for dry runs and logs."""
    folder = Path(folder)
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append({"path_in_repo": rel.as_posix(), "size": path.stat().st_size})
    return files


def check_repo_id(repo_id: str) -> None:
    """ORG/NAME as the Hub accepts it (huggingface_hub's own rules), checked before any work is done."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("it must name an organisation or user and a repo")
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--push-to-hub needs ORG/NAME, got {repo_id!r}: {error}") from None


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    api=None,
) -> dict:
    """Create `repo_id` if needed (and the `revision` branch), then upload `folder` in one commit.

    `api` defaults to `huggingface_hub.HfApi()`; tests pass a recorder. `private` applies when the repo
    is created; an existing repo keeps its visibility.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a converted model folder (no config.json)")
    check_repo_id(repo_id)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        commit_message=commit_message or f"Upload {folder.name} converted with vjepa2-area-convert",
        ignore_patterns=IGNORE_PATTERNS,
    )
    return {
        "repo_id": repo_id,
        "url": str(getattr(url, "url", url)),
        "revision": revision or "main",
        "commit": getattr(info, "oid", None),
        "commit_url": getattr(info, "commit_url", None),
        "files": planned_files(folder),
        "token_from_environment": bool(os.environ.get("HF_TOKEN")),
    }


__all__ = ["check_repo_id", "push_folder", "planned_files", "IGNORE_PATTERNS"]
