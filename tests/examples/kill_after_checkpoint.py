"""Run examples/k400_probe.py and SIGKILL this process right after the checkpoint of epoch N is written,
as a preempted job dies: no cleanup at all. Usage: kill_after_checkpoint.py N ARGS..."""

import importlib.util
import os
import signal
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("k400_probe", Path(__file__).resolve().parents[2] / "examples" / "k400_probe.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
kill_after, save = int(sys.argv[1]), script.save_checkpoint


def save_then_die(accelerator, root, epoch, state, keep=1):
    path = save(accelerator, root, epoch, state, keep)
    if epoch == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return path


script.save_checkpoint = save_then_die
raise SystemExit(script.main(sys.argv[2:]))
