"""TensorBoard logging of the probe: one scalar per head and epoch, as the run printed them."""

from __future__ import annotations

import sys

import pytest

from tests.examples.test_k400_probe import SCRIPT, results, run, tiny_args, tiny_set  # noqa: F401 (fixture)

pytest.importorskip("tensorboard")


def test_tensorboard_events_hold_each_heads_accuracy(tiny_set, tmp_path):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = tmp_path / "run"
    run([sys.executable, str(SCRIPT), *tiny_args(tiny_set, output, 4, "--report-to", "tensorboard")], cwd=tmp_path)
    scalar_runs = []  # accelerate also writes the hparams into a sub-folder of their own
    for event_file in output.rglob("events.out.tfevents.*"):
        events = EventAccumulator(str(event_file)).Reload()
        if events.Tags()["scalars"]:
            scalar_runs.append(events)
    assert len(scalar_runs) == 1, f"expected one TensorBoard run with scalars under {output}"
    events = scalar_runs[0]
    result = results(output)
    for head in result["heads"]:
        logged = [(e.step, e.value) for e in events.Scalars(f"val_top1/{head['name']}")]
        assert [step for step, _ in logged] == list(range(1, len(head["val_top1"]) + 1))
        assert [value for _, value in logged] == pytest.approx(head["val_top1"])
