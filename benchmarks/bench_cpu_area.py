"""CPU timings of area attention: ViT-S, fp32, our full attention vs our area attention.

Why: masked inputs off the CUDA varlen path (every CPU user, the self-supervised demo) would cost the
FLOPs of full attention on the `mask` kernel; the `segment` kernel attends per (sample, area)
segment. The encoder table compares, with the same weights and masks, full attention, area attention
as `auto` runs it, and area attention forced onto the `mask` kernel, beside the FLOP-ideal area / full
ratio; masked forward + backward at 25% visible, and full-token inference. The attention table shows
why `segment` loops over segments rather than padding them into one batch. The alternatives of a row
run interleaved, one call each per repetition, in one process; medians are reported, so a machine
shared with other work biases every column alike.

    python benchmarks/bench_cpu_area.py            # the tables in docs/benchmarks.md (~6 min quiet, 2 threads)
    python benchmarks/bench_cpu_area.py --tiny     # smoke run of every path, seconds

On a machine shared with other work, prefix OMP_WAIT_POLICY=PASSIVE: spinning OpenMP threads of an
oversubscribed pool made 2-thread steps 10-20x slower there. Process CPU time is recorded beside wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the GPU scripts' helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench_attention import pad_mask_attention  # noqa: E402
from bench_encoder import (  # noqa: E402
    AREA_SPLITS, TINY_DIMS, VISIBLE_FRACTION, Case, add_run_args, build_model, case_flops, environment, fmt,
    layers_text, make_step, markdown_table, our_config, resolve_run_args, resolved_kernel, run_benchmark,
)
from bench_encoder import select_cases as select_encoder_cases  # noqa: E402
from hf_vjepa_area import VARIANTS, VJEPA2AreaModel  # noqa: E402
from hf_vjepa_area.modeling.area import AreaPlan, area_attention, global_attention  # noqa: E402
from hf_vjepa_area.modeling.rope import token_positions  # noqa: E402

CASES = [
    Case("train-256px-16f-b1", True, 256, 16, 1),
    Case("train-256px-64f-b1", True, 256, 64, 1),
    Case("infer-256px-16f-b1", False, 256, 16, 1),
    Case("infer-256px-64f-b1", False, 256, 64, 1),
]
# Encoder columns: (our model, area kernel it is built with).
ENCODERS = {"full": ("ours-full", "auto"), "area": ("ours-area", "auto"), "area-mask": ("ours-area", "mask")}
# Attention-only columns, one ViT layer's q, k, v in area-major order.
ATTENTION_KERNELS = ("global", "mask", "segment", "padded")


def select_cases(args) -> list[Case]:
    return select_encoder_cases(args, CASES)


def interleaved(steps: dict, warmup: int, iters: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process CPU ms per call of each step, taking turns: `warmup` untimed rounds, then `iters` timed
    rounds. CPU time leaves out the time other processes held the cores (see docs/benchmarks.md)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    wall, cpu = {name: [] for name in steps}, {name: [] for name in steps}
    for _ in range(iters):
        for name, step in steps.items():
            begin, begin_cpu = time.perf_counter(), time.process_time()
            step()
            cpu[name].append((time.process_time() - begin_cpu) * 1e3)
            wall[name].append((time.perf_counter() - begin) * 1e3)
    return wall, cpu


def encoder_rows(args, state: dict) -> list[dict]:
    rows = []
    for case in select_cases(args):
        ids, flops_full, flops_area = case_flops(args, case)
        masks = ids if case.train else None
        pixels = torch.randn(case.batch, case.frames, 3, case.img, case.img,
                             generator=torch.Generator().manual_seed(args.seed))
        steps, kernels = {}, {}
        for column, (name, kernel) in ENCODERS.items():
            column_args = argparse.Namespace(**{**vars(args), "area_kernel": kernel})
            model = build_model(name, column_args, case, state, torch.device("cpu"))
            config = our_config(column_args, case, area=name == "ours-area")
            kernels[column] = resolved_kernel(config, ids, case.train, "cpu", torch.float32)
            steps[column] = make_step(model, name, "eager", case, pixels, masks, column_args, torch.device("cpu"))
        times, cpu_times = interleaved(steps, args.warmup, args.iters)
        ms = {column: statistics.median(t) for column, t in times.items()}
        cpu_ms = {column: statistics.median(t) for column, t in cpu_times.items()}
        rows.append(dict(case=case.name, train=case.train, batch=case.batch, visible_per_sample=ids.shape[1],
                         kernels=kernels, ms=ms, cpu_ms=cpu_ms, times_ms=times, cpu_times_ms=cpu_times,
                         area_over_full=ms["area"] / ms["full"], mask_over_full=ms["area-mask"] / ms["full"],
                         area_over_full_cpu=cpu_ms["area"] / cpu_ms["full"], flops_over_full=flops_area / flops_full))
        print(f"{case.name:20s} " + "  ".join(f"{c} {v:.1f} ms" for c, v in ms.items()), flush=True)
    return rows


def attention_rows(args) -> list[dict]:
    """One area layer alone (fwd + bwd) on the masked cases' own token ids: heads x head_dim of the variant."""
    dims = TINY_DIMS if args.tiny else VARIANTS[args.variant]
    heads = dims["num_heads"]
    head_dim = dims["embed_dim"] // heads
    rows = []
    for case in (c for c in select_cases(args) if c.train):
        config = our_config(args, case, area=True)
        ids, _, _ = case_flops(args, case)
        positions = token_positions(ids, config.grid_size)
        plans = {kernel: AreaPlan.build(positions, config.grid_size, config.area_splits, kernel=kernel, masked=True)
                 for kernel in ("mask", "segment")}
        # The padded batch sized from the real longest segment (the plan's own bound is K under masking).
        longest = max(plans["segment"].segment_lengths())
        padded = replace(plans["segment"], max_area_len=longest, _cache={})
        generator = torch.Generator().manual_seed(args.seed)
        qkv = torch.randn(case.batch, ids.shape[1], 3, heads, head_dim, generator=generator).requires_grad_()
        grad = torch.randn(case.batch, ids.shape[1], heads, head_dim, generator=generator)
        attend = {
            "global": lambda q, k, v: global_attention(q, k, v),
            "mask": lambda q, k, v: area_attention(q, k, v, plans["mask"]),
            "segment": lambda q, k, v: area_attention(q, k, v, plans["segment"]),
            "padded": lambda q, k, v: pad_mask_attention(q, k, v, padded),
        }

        def step_of(fn):
            def step():
                qkv.grad = None
                fn(*qkv.unbind(2)).backward(grad)
            return step

        with torch.no_grad():
            reference = attend["mask"](*qkv.unbind(2))
            errors = {k: ((fn(*qkv.unbind(2)) - reference).norm() / reference.norm()).item()
                      for k, fn in attend.items() if k != "global"}
        times, cpu_times = interleaved({k: step_of(fn) for k, fn in attend.items()}, args.warmup, args.iters)
        ms = {k: statistics.median(t) for k, t in times.items()}
        cpu_ms = {k: statistics.median(t) for k, t in cpu_times.items()}
        rows.append(dict(case=case.name, batch=case.batch, visible_per_sample=ids.shape[1], heads=heads,
                         head_dim=head_dim, longest_segment=longest, ms=ms, cpu_ms=cpu_ms, times_ms=times,
                         cpu_times_ms=cpu_times, rel_err_vs_mask=errors))
        print(f"{case.name:20s} attention " + "  ".join(f"{k} {v:.2f} ms" for k, v in ms.items()), flush=True)
    return rows


def run(args) -> dict:
    torch.set_num_threads(args.threads)  # run_benchmark restores the caller's count
    torch.manual_seed(args.seed)
    state = VJEPA2AreaModel(our_config(args, select_cases(args)[0], area=False)).state_dict()
    encoder = encoder_rows(args, state) if args.encoder else []
    attention = attention_rows(args) if args.attention else []
    config = our_config(args, select_cases(args)[0], area=True)
    return dict(
        meta=dict(environment(torch.device("cpu")), threads=torch.get_num_threads(), dtype="fp32",
                  omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP default: threads spin)"),
                  variant="tiny" if args.tiny else args.variant, area_splits=AREA_SPLITS,
                  area_layers=config.area_layers, depth=config.depth, visible_fraction=VISIBLE_FRACTION,
                  warmup=args.warmup, iters=args.iters, seed=args.seed,
                  peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20),
        encoder=encoder,
        attention=attention,
    )


def report(result: dict) -> str:
    meta = result["meta"]
    lines = [f"{meta['variant']} ({meta['depth']} blocks), fp32, CPU, {meta['threads']} threads, torch {meta['torch']}; "
             f"area splits {tuple(meta['area_splits'])} in blocks {layers_text(meta['area_layers'])}; median of "
             f"{meta['iters']} interleaved repetitions after {meta['warmup']} warm-up; OMP_WAIT_POLICY "
             f"{meta['omp_wait_policy']}; peak RSS {meta['peak_rss_gib']:.1f} GiB"]
    if result["encoder"]:
        header = ["case", "visible / sample", "ours full ms", "ours area ms (kernel)", "ours area, mask kernel ms",
                  "area / full", "mask / full", "area / full, CPU time", "FLOP-ideal area / full"]
        table = [[r["case"], str(r["visible_per_sample"]), fmt(r["ms"]["full"], ".0f"),
                  f"{fmt(r['ms']['area'], '.0f')} ({r['kernels']['area']})", fmt(r["ms"]["area-mask"], ".0f"),
                  fmt(r["area_over_full"]), fmt(r["mask_over_full"]), fmt(r["area_over_full_cpu"]),
                  fmt(r["flops_over_full"])] for r in result["encoder"]]
        lines += ["", f"Encoder: train = forward + backward at {meta['visible_fraction']:.0%} visible (random ids), "
                  "infer = all tokens without grad", "", markdown_table(header, table)]
    if result["attention"]:
        header = (["case", "B x visible", "heads x dim", "longest segment"]
                  + [f"{k} ms (CPU ms)" for k in ATTENTION_KERNELS] + ["max rel. err vs mask"])
        table = [[r["case"], f"{r['batch']} x {r['visible_per_sample']}", f"{r['heads']} x {r['head_dim']}",
                  str(r["longest_segment"])]
                 + [f"{fmt(r['ms'][k], '.1f')} ({fmt(r['cpu_ms'][k], '.1f')})" for k in ATTENTION_KERNELS]
                 + [fmt(max(r["rel_err_vs_mask"].values()), ".0e")] for r in result["attention"]]
        lines += ["", "One attention layer alone, forward + backward, on the same token ids: `segment` = one SDPA "
                  "call per segment, `padded` = segments scattered into one [B*areas, longest] batch with a "
                  "key-padding mask, `mask` = all K tokens with the same-area mask", "",
                  markdown_table(header, table)]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="all", help="comma list: all, train, infer, or case names")
    parser.add_argument("--variant", default="small", choices=sorted(VARIANTS))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2; tiny 1)")
    parser.add_argument("--encoder", action=argparse.BooleanOptionalAction, default=True,
                        help="time the encoder (--no-encoder: the attention table only)")
    parser.add_argument("--attention", action=argparse.BooleanOptionalAction, default=True,
                        help="also time one attention layer alone per kernel (--no-attention: encoder only)")
    add_run_args(parser, "bench_cpu_area", "tiny config and inputs: a smoke run of every path")
    args = parser.parse_args(argv)
    # CPU defaults: a 64-frame ViT-S step takes seconds, so fewer repetitions than the GPU scripts.
    args.warmup = args.warmup if args.warmup is not None else (0 if args.tiny else 1)
    args.iters = args.iters if args.iters is not None else (1 if args.tiny else 5)
    args = resolve_run_args(args, "bench_cpu_area")
    args.threads = 1 if args.tiny else args.threads
    args.device, args.dtype, args.area_kernel = "cpu", "fp32", "auto"  # what bench_encoder's helpers read
    return args


def main(argv=None) -> dict:
    return run_benchmark(parse_args(argv), run, report)


if __name__ == "__main__":
    main()
