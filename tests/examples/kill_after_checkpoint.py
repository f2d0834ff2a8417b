"""Run an example script and SIGKILL this process right after its checkpoint number N is written, as a
preempted job dies: no cleanup at all. Usage: kill_after_checkpoint.py SCRIPT N ARGS..."""

import os
import runpy
import signal
import sys

from hf_vjepa_area import runs

script, kill_after = sys.argv[1], int(sys.argv[2])
save = runs.save_checkpoint


def save_then_die(accelerator, root, index, state, keep=1, **naming):
    path = save(accelerator, root, index, state, keep, **naming)
    if index == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return path


runs.save_checkpoint = runs.folders.save_checkpoint = save_then_die  # for `runs.Run` and direct callers
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
