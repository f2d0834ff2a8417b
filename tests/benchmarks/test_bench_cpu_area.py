"""The CPU area benchmark runs end to end with --tiny and reports what it claims to (no timing checks)."""

import json
from pathlib import Path

import pytest
import torch

from tests.numerics import FLOAT32_RTOL

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_cpu_area
    import bench_encoder

    return bench_cpu_area, bench_encoder


def test_tiny_run_reports_every_case_kernel_and_flop_ratio(bench, tmp_path, capsys):
    bench_cpu_area, bench_encoder = bench
    threads = torch.get_num_threads()
    result = bench_cpu_area.main(["--tiny", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads  # restored after the run

    rows = {r["case"]: r for r in result["encoder"]}
    assert set(rows) == {c.tiny().name for c in bench_cpu_area.CASES}
    args = bench_cpu_area.parse_args(["--tiny"])
    for case in bench_cpu_area.select_cases(args):
        row = rows[case.name]
        # The columns ran the kernels they are labelled with: auto -> segment on masked CPU inputs.
        assert row["kernels"] == {"full": "global", "area": "segment" if case.train else "dense", "area-mask": "mask"}
        assert all(len(times) == args.iters and min(times) > 0 for times in row["times_ms"].values())
        # The FLOP-ideal column is bench_encoder's analytic count on the same masks.
        _, flops_full, flops_area = bench_encoder.case_flops(args, case)
        assert row["flops_over_full"] == flops_area / flops_full

    attention = result["attention"]
    assert [r["case"] for r in attention] == [c.tiny().name for c in bench_cpu_area.CASES if c.train]
    for row in attention:
        assert set(row["ms"]) == set(bench_cpu_area.ATTENTION_KERNELS)
        # segment and padded compute the mask kernel's result (float32, relative to its norm)
        assert max(row["rel_err_vs_mask"].values()) <= FLOAT32_RTOL

    saved = json.loads((tmp_path / "bench_cpu_area_tiny.json").read_text())
    assert saved["meta"]["threads"] == 1 and saved["meta"]["variant"] == "tiny"
    markdown = (tmp_path / "bench_cpu_area_tiny.md").read_text()
    assert "| case | visible / sample | ours full ms | ours area ms (kernel) |" in markdown
    assert capsys.readouterr().out.rstrip().endswith(markdown.rstrip().splitlines()[-1])  # table printed last


def test_encoder_only_and_unknown_cases(bench, tmp_path):
    bench_cpu_area, _ = bench
    result = bench_cpu_area.main(["--tiny", "--cases", "infer", "--no-attention", "--out", str(tmp_path)])
    assert [r["train"] for r in result["encoder"]] == [False, False] and result["attention"] == []
    with pytest.raises(SystemExit, match="unknown --cases"):
        bench_cpu_area.main(["--tiny", "--cases", "train-1px", "--out", str(tmp_path)])
