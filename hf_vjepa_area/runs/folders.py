"""A run's files: its output dir's rules, atomic accelerate checkpoints, strict JSON.

The example scripts (a checkpoint per epoch, or every N steps) resume from these; each names its own
checkpoints (`prefix`, `state_file`) and run folder (`script`, `outputs`).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

from .._files import move_into_place, write_text_atomically


class UsageError(SystemExit):
    """Bad input from the command line or the files it names, said in one line: `runs.main` prints it as
    `error: ...` and exits with status 2. A `SystemExit`, so that even uncaught it ends in that line,
    without a traceback, and `except Exception` in a loop never swallows it."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")
        self.message = message


def save_checkpoint(accelerator, root: Path, index: int, state: dict, keep: int = 1, *,
                    prefix: str, state_file: str, digits: int = 3) -> Path:  # fmt: skip
    """`accelerator.save_state` into a temporary folder, then an atomic rename to `root/{prefix}{index}`.

    All processes call it (each saves its RNG state). `state_file` (epoch or step, history, ...) is written
    last, before the rename, so a folder named `{prefix}*` is always complete; a killed save leaves only a
    hidden temporary folder, which the next save removes. Keeps the newest `keep` checkpoints.
    """
    root = Path(root)
    final = root / f"{prefix}{index:0{digits}d}"
    temp = root / f".tmp-{prefix}{index:0{digits}d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temp / state_file).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        move_into_place(temp, final)  # a re-saved checkpoint keeps its old folder until the new one is in place
        # Count complete checkpoints only: a stray `{prefix}*` folder without `state_file` (a copy, a
        # hand-made folder) must not push the one just written out of the newest `keep`.
        complete = sorted(p for p in root.glob(f"{prefix}*") if (p / state_file).is_file())
        for old in complete[:-keep] if keep > 0 else []:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(f".tmp-{prefix}*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def find_checkpoint(root: Path, resume: str, *, prefix: str, state_file: str) -> Path | None:
    """`resume="auto"`: the newest complete `root/{prefix}*` (None if there is none); else that folder."""
    if resume != "auto":
        path = Path(resume)
        if not (path / state_file).is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no {state_file})")
        return path
    complete = [p for p in Path(root).glob(f"{prefix}*") if (p / state_file).is_file()]
    return max(complete, key=lambda p: p.name) if complete else None


def read_checkpoint_state(path: Path, state_file: str) -> dict:
    return json.loads((Path(path) / state_file).read_text(encoding="utf-8"))


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def to_json(data: Any) -> str:
    """Strict JSON: NaN / inf (a diverged loss) become null, which every JSON reader accepts;
    `json.dumps`' default writes bare `NaN`, which is not JSON."""
    return json.dumps(_finite_or_none(data), indent=1, allow_nan=False) + "\n"


def write_json(path: Path, data: dict) -> None:
    """Results and configs: strict JSON (`to_json`), written atomically, so an interrupted run never leaves half a file."""
    write_text_atomically(Path(path), to_json(data), overwrite=True)


# The file that makes a folder a run folder: which script made it and with which settings.
RUN_FILE = "run_config.json"


def _made_by(out: Path) -> str | None:
    try:
        return json.loads((out / RUN_FILE).read_text(encoding="utf-8")).get("script")
    except (OSError, ValueError, AttributeError):
        return None


def check_output_dir(out: Path, *, script: str, outputs: Sequence[str], resume: str | None, overwrite: bool,
                     config: dict, compared_keys, prefix: str, state_file: str) -> Path | None:  # fmt: skip
    """Refuse to mix runs, before anything slow or destructive (it only reads). Returns the checkpoint to
    resume from (None: start fresh). Bad input raises `UsageError`.

    A run folder is one whose `RUN_FILE` names `script` and that holds nothing but `outputs` (the names
    the script writes at its top level). `resume` and `overwrite` take only such a folder; one without a
    checkpoint or results (a run that failed before its first checkpoint) is reused without either flag.
    """
    out = Path(out)
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not present:
        return None
    made_by = _made_by(out)
    if made_by != script:
        what = f"made by {made_by}" if made_by else f"no {script} run folder (no {RUN_FILE} naming it)"
        raise UsageError(f"{out} is {what}: {script} writes, resumes and overwrites only its own run folders; "
                         "choose another --output-dir")  # fmt: skip
    foreign = [name for name in present if name not in (RUN_FILE, *outputs)]
    if foreign:
        raise UsageError(f"{out} holds files that {script} did not write ({', '.join(foreign[:5])}): move them "
                         "or choose another --output-dir")  # fmt: skip
    if resume:
        try:
            checkpoint = find_checkpoint(out / "checkpoints", resume, prefix=prefix, state_file=state_file)
        except FileNotFoundError as error:
            raise UsageError(f"--resume: {error}") from None
        if checkpoint is not None:
            saved = read_checkpoint_state(checkpoint, state_file)["config"]
            changed = {k: (saved.get(k), config[k]) for k in compared_keys if saved.get(k) != config[k]}
            if changed:
                raise UsageError(f"--resume with other settings than the checkpoint's: {changed}")
        return checkpoint
    started = find_checkpoint(out / "checkpoints", "auto", prefix=prefix, state_file=state_file) or (out / "results.json").exists()
    if started and not overwrite:
        raise UsageError(f"{out} is not empty (an earlier run?); pass --resume to continue it or "
                         "--overwrite to start over")  # fmt: skip
    return None


def start_output_dir(out: Path, accelerator, *, script: str, outputs: Sequence[str], overwrite: bool, config: dict) -> None:
    """After every input has been read: with `overwrite`, remove what an earlier run of `script` wrote there
    (`outputs` only: `check_output_dir` has refused anything else); then record this run."""
    out = Path(out)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for path in (out / name for name in outputs if overwrite):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / RUN_FILE, {"script": script, "config": config})
    accelerator.wait_for_everyone()


__all__ = [
    "UsageError",
    "RUN_FILE",
    "save_checkpoint",
    "find_checkpoint",
    "read_checkpoint_state",
    "to_json",
    "write_json",
    "check_output_dir",
    "start_output_dir",
]
