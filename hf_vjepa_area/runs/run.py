"""A run of an example script: accelerator, logging, trackers, output folder, resume, checkpoints,
the final results, and the one-line exit for bad input.

    settings = MySettings.parse(argv, __doc__)
    run = runs.Run(settings, script="my_script", outputs=(...), prefix="step_", state_file="state.json")
    ... read every input (a typo fails here, before the folder is touched) ...
    run.check_output_dir()            # the checkpoint to resume, or None; refuses other scripts' folders
    run.start_output_dir()
    state = run.resume() or fresh     # loads the accelerate state; the wall time carries over
    run.init_trackers()
    ... the loop: run.log(...), run.save_checkpoint(step, state) ...
    run.finish(results)               # results.json, atomically

    if __name__ == "__main__":
        raise SystemExit(runs.main(main))
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import folders
from .folders import UsageError, read_checkpoint_state, write_json
from .settings import RunSettings

logger = logging.getLogger(__name__)


def default_num_workers() -> int:
    """DataLoader workers: the CPUs this process may use, shared by the processes on this machine, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, cpus // local_processes))


def resolve_num_workers(value: int | None) -> int:
    """`--num-workers`: the value given (a preset's too), else `default_num_workers()`."""
    return default_num_workers() if value is None else value


def resolve_mixed_precision(value: str | None) -> str:
    """`--mixed-precision` for accelerate: "auto" (or None) is bf16 on a GPU that has it, else "no"."""
    if value in (None, "auto"):
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return value


def autocast_dtype(value: str | None) -> torch.dtype | None:
    """A dtype option ("auto", "no"/"fp32", "bf16", "fp16") as the autocast dtype (None: float32), by the
    same "auto" rule as `resolve_mixed_precision`."""
    return {"no": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[resolve_mixed_precision(value)]


def resolve_report_to(value: str) -> str | None:
    """`--report-to` for accelerate: "auto" is TensorBoard when it is installed, else nothing."""
    if value == "none":
        return None
    if value == "auto":
        available = importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
        return "tensorboard" if available else None
    return value


def setup_logging(is_main_process: bool, *names: str) -> None:
    """Messages only; the main process's loggers (`names` and the library's) at INFO, the others' at
    WARNING; accelerate's per-file save logs stay quiet."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in (*names, "hf_vjepa_area"):
        logging.getLogger(name).setLevel(logging.INFO if is_main_process else logging.WARNING)


def main(fn: Callable[..., int | None], *args: Any) -> int:
    """Call a script's `main`; bad input (`UsageError`, or any `SystemExit` with a message) ends as its
    one `error: ...` line on stderr and exit status 2, without a traceback."""
    try:
        return fn(*args) or 0
    except SystemExit as exit:
        if not isinstance(exit.code, str):
            raise
        message = exit.code
        print(message if message.startswith("error: ") else f"error: {message}", file=sys.stderr)
        return 2


class SkippedFiles:
    """The files a run could not read, each named once in the log, whatever the worker and process count.

    DataLoader workers do not log (each would name the files it met, every worker again); the batches
    carry what was skipped, and the loop hands it to `add` on every process, once per batch: `add` gathers
    it across processes, and the main process names each new file with its reason. `counts` (path ->
    times skipped) goes into checkpoints and results; a resumed run passes it back, so a file is named
    once per run.
    """

    def __init__(self, accelerator=None, counts: dict[str, int] | None = None, what: str = "video"):
        self.accelerator, self.counts, self.what = accelerator, dict(counts or {}), what

    def add(self, skipped: Iterable) -> list:
        """`skipped`: paths, or items with `.path` (and `.reason`) such as `data.SkippedSample`. Call it on
        every process. Returns every process's items."""
        items = list(skipped)
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            items = gather_object(items)
        main = self.accelerator is None or self.accelerator.is_main_process
        for item in items:
            path, reason = (item, "") if isinstance(item, (str, os.PathLike)) else (item.path, getattr(item, "reason", ""))
            path = str(path)
            if path not in self.counts and main:
                logger.warning("skipping %s %s%s", self.what, path, f": {reason}" if reason else "")
            self.counts[path] = self.counts.get(path, 0) + 1
        return items

    def __len__(self) -> int:
        return len(self.counts)

    def summary(self) -> dict:
        """For results: how many distinct files, and which."""
        return dict(count=len(self.counts), paths=sorted(self.counts))


class Run:
    """One run of an example script (see the module's docstring for the order of the calls).

    `script` names the run folder's maker, `outputs` what it writes at the folder's top level (the
    only names `--overwrite` removes), `prefix`, `state_file` and `digits` its checkpoints' names.
    `accelerator_options` go to `Accelerator` (e.g. `kwargs_handlers`).
    """

    def __init__(self, settings: RunSettings, *, script: str, outputs: Sequence[str], prefix: str, state_file: str,
                 digits: int = 3, **accelerator_options: Any):  # fmt: skip
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        if settings.output_dir is None:
            raise UsageError("--output-dir is needed")
        self.settings, self.script, self.out = settings, script, Path(settings.output_dir)
        self.folder = dict(script=script, outputs=tuple(outputs))
        self.naming = dict(prefix=prefix, state_file=state_file)
        self.digits = digits
        self.started = time.time()
        self.report_to = resolve_report_to(settings.report_to)
        self.mixed_precision = resolve_mixed_precision(settings.mixed_precision)
        self.accelerator = Accelerator(
            mixed_precision=self.mixed_precision,
            log_with=self.report_to,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")),
            **accelerator_options,
        )
        setup_logging(self.accelerator.is_main_process, script)
        self.num_workers = resolve_num_workers(settings.num_workers)
        self.checkpoint: Path | None = None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def elapsed(self) -> float:
        """Seconds of this run, the interrupted parts before a resume included."""
        return time.time() - self.started

    def check_output_dir(self) -> Path | None:
        """Before anything slow or destructive: refuse a folder this run must not use (`UsageError`);
        returns (and keeps) the checkpoint to resume, None to start fresh."""
        s = self.settings
        self.checkpoint = folders.check_output_dir(self.out, resume=s.resume, overwrite=s.overwrite, config=s.to_config(),
                                                   compared_keys=s.result_keys(), **self.folder, **self.naming)  # fmt: skip
        return self.checkpoint

    def start_output_dir(self) -> None:
        """After every input has been read: clear an overwritten run's outputs and record this run."""
        s = self.settings
        folders.start_output_dir(self.out, self.accelerator, overwrite=s.overwrite and not s.resume, config=s.to_config(),
                                 **self.folder)  # fmt: skip

    def resume(self) -> dict | None:
        """Load the checkpoint found by `check_output_dir` (models, optimizers, RNGs, registered objects);
        returns its state (None: nothing to resume). The wall time counts the interrupted part too."""
        if self.checkpoint is None:
            return None
        self.accelerator.load_state(str(self.checkpoint))
        state = read_checkpoint_state(self.checkpoint, self.naming["state_file"])
        self.started -= state.get("elapsed_s", 0.0)
        if state.get("num_processes", self.world) != self.world:
            logger.warning("resuming a %s-process run on %d processes: float sums may differ in the last bits",
                           state.get("num_processes"), self.world)  # fmt: skip
        self.accelerator.print(f"resumed from {self.checkpoint}")
        return state

    def init_trackers(self) -> None:
        if self.report_to:
            self.accelerator.init_trackers(self.script, config=self.settings.hparams())

    def log(self, values: dict[str, float], step: int) -> None:
        if self.report_to:
            self.accelerator.log(values, step=step)

    def progress(self, total: int, initial: int = 0, desc: str | None = None):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc or self.script, dynamic_ncols=True,
                    disable=not self.is_main or self.settings.no_progress)  # fmt: skip

    def save_checkpoint(self, index: int, state: dict) -> Path:
        """Every process: an atomic checkpoint `checkpoints/{prefix}{index}` with `state` plus the config,
        the process count and the elapsed time (which `resume` and `check_output_dir` read)."""
        state.update(config=self.settings.to_config(), num_processes=self.world, elapsed_s=self.elapsed)
        return folders.save_checkpoint(self.accelerator, self.out / "checkpoints", index, state,
                                       keep=self.settings.keep_checkpoints, digits=self.digits, **self.naming)  # fmt: skip

    def finish(self, results: dict | None = None) -> None:
        """Every process, last: `results.json` (main process, atomically), then the trackers close."""
        if results is not None and self.is_main:
            write_json(self.out / "results.json", results)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


__all__ = [
    "Run",
    "SkippedFiles",
    "main",
    "setup_logging",
    "default_num_workers",
    "resolve_num_workers",
    "resolve_mixed_precision",
    "autocast_dtype",
    "resolve_report_to",
]
