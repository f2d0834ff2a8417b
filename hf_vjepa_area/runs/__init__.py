"""What the example scripts' runs share: settings dataclasses (`settings`), the run harness (`run`), and
the run folder's files: its rules, atomic checkpoints, strict JSON (`folders`)."""

from .folders import (
    RUN_FILE,
    UsageError,
    check_output_dir,
    find_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
    start_output_dir,
    to_json,
    write_json,
)
from .run import (
    Run,
    SkippedFiles,
    autocast_dtype,
    default_num_workers,
    main,
    resolve_mixed_precision,
    resolve_num_workers,
    resolve_report_to,
    setup_logging,
)
from .settings import RunSettings, Settings, setting

__all__ = [
    "RUN_FILE",
    "UsageError",
    "check_output_dir",
    "find_checkpoint",
    "read_checkpoint_state",
    "save_checkpoint",
    "start_output_dir",
    "to_json",
    "write_json",
    "Run",
    "SkippedFiles",
    "autocast_dtype",
    "default_num_workers",
    "main",
    "resolve_mixed_precision",
    "resolve_num_workers",
    "resolve_report_to",
    "setup_logging",
    "RunSettings",
    "Settings",
    "setting",
]
