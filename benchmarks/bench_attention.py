"""Attention-only microbenchmark: global SDPA vs our area kernels vs the prototype's "pad + mask".

Why: the encoder timings mix attention with the linears; this isolates the kernel choice. Inputs mimic
one attention layer of ViT-L at 384px / 64 frames (token grid 32 x 24 x 24 = 18,432 tokens, 16 heads x 64,
bf16): q, k, v are views of one fused qkv tensor as in the model, already in area-major order, and each
kernel gets an `AreaPlan` built once, as the encoder does once per forward for all its area layers (so
the plan's mask / offsets are built in the first, untimed call and reused).

    python benchmarks/bench_attention.py                       # on CUDA
    python benchmarks/bench_attention.py --tiny --device cpu   # smoke run (varlen skipped: no CPU kernel)
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_encoder's timing helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench_encoder import (  # noqa: E402
    add_run_args, environment, failure_status, fmt, free_memory, markdown_table, measure, resolve_run_args,
    run_benchmark, set_backend_defaults,
)
from hf_vjepa_area.modeling.area import AreaPlan, area_attention, global_attention, varlen_attn  # noqa: E402
from hf_vjepa_area.modeling.rope import token_positions  # noqa: E402

KERNELS = ("global", "dense", "varlen", "segment", "mask", "pad+mask")


@dataclass(frozen=True)
class Case:
    name: str
    backward: bool
    batch: int
    visible: int | None  # tokens kept per sample (random per sample); None: all tokens
    splits: tuple[int, int, int]


GRID = (32, 24, 24)  # 384px, 64 frames, tubelet 2, patch 16
CASES = [
    Case("fwd-all-18432-4areas", False, 1, None, (2, 2, 1)),
    Case("fwd-all-18432-16areas", False, 1, None, (4, 2, 2)),
    Case("fwdbwd-masked-b1-15296-4areas", True, 1, 15296, (2, 2, 1)),
    Case("fwdbwd-masked-b4-7264-4areas", True, 4, 7264, (2, 2, 1)),
    Case("fwdbwd-masked-b1-4608-4areas", True, 1, 4608, (2, 2, 1)),  # the encoder bench's 25% training case
]
TINY_GRID = (4, 4, 4)


def pad_mask_attention(q, k, v, plan: AreaPlan) -> torch.Tensor:
    """The seed's way: scatter each (batch, area) segment into a padded [B*A, L_max] batch, SDPA with a
    key-padding mask (which rules out flash / cuDNN), gather back. Slot indices are built once per plan.

    Padding keys are masked except slot 0 of an empty area, so no softmax row is all -inf (NaN-free)."""
    batch, tokens, heads, dim = q.shape
    areas, longest = plan.num_areas, plan.max_area_len
    if "pad_slots" not in plan._cache:
        offsets = plan.segment_offsets(batch).long()
        segment = (plan.area_ids.expand(batch, -1) + areas * torch.arange(batch, device=q.device)[:, None]).flatten()
        position = torch.arange(batch * tokens, device=q.device) - offsets[segment]
        lengths = (offsets[1:] - offsets[:-1]).clamp(min=1)
        key_valid = torch.arange(longest, device=q.device) < lengths[:, None]  # [B*A, L_max]
        plan._cache["pad_slots"] = (segment * longest + position, key_valid[:, None, None, :])
    slots, key_valid = plan._cache["pad_slots"]

    def pad(x):
        flat = x.reshape(batch * tokens, heads, dim)
        padded = flat.new_zeros(batch * areas * longest, heads, dim).index_copy(0, slots, flat)
        return padded.view(batch * areas, longest, heads, dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=key_valid)
    return out.transpose(1, 2).reshape(batch * areas * longest, heads, dim)[slots].view(batch, tokens, heads, dim)


def attention_pairs(plan: AreaPlan, batch: int) -> float:
    """Sum over (batch, area) segments of n^2: the query-key pairs area attention really needs."""
    lengths = plan.segment_offsets(batch).diff().double()
    return float(lengths.pow(2).sum())


def build_inputs(case: Case, grid, heads, head_dim, dtype, device, generator):
    num_tokens = math.prod(grid)
    if case.visible is None:
        ids = torch.arange(num_tokens)[None]
    else:
        ids = torch.rand(case.batch, num_tokens, generator=generator).argsort(-1)[:, : case.visible].sort(-1).values
    positions = token_positions(ids.to(device), grid)
    tokens = ids.shape[1]
    qkv = torch.randn(case.batch, tokens, 3, heads, head_dim, generator=generator).to(device, dtype)
    return positions, qkv.requires_grad_(case.backward)


@torch.no_grad()
def relative_error(kernel: str, plan: AreaPlan, qkv: torch.Tensor, reference: AreaPlan) -> float:
    """||out - ref|| / ||ref|| against the "mask" kernel: a fast but wrong kernel shows here."""
    q, k, v = qkv.unbind(2)
    out = pad_mask_attention(q, k, v, plan) if kernel == "pad+mask" else area_attention(q, k, v, plan)
    expected = area_attention(q, k, v, reference)
    return ((out.float() - expected.float()).norm() / expected.float().norm()).item()


def make_step(kernel: str, plan: AreaPlan | None, qkv: torch.Tensor, backward: bool):
    """One timed call: attention over q, k, v views of qkv (as the model's fused projection gives them)."""
    grad_out = torch.randn_like(qkv[:, :, 0]) if backward else None

    def attend():
        q, k, v = qkv.unbind(2)
        return global_attention(q, k, v) if kernel == "global" else (
            pad_mask_attention(q, k, v, plan) if kernel == "pad+mask" else area_attention(q, k, v, plan)
        )

    def step():
        if backward:
            qkv.grad = None
            attend().backward(grad_out)
        else:
            with torch.no_grad():
                attend()

    return step


def run(args) -> dict:
    device = torch.device(args.device)
    backends = set_backend_defaults()
    dtype = dict(bf16=torch.bfloat16, fp16=torch.float16, fp32=torch.float32)[args.dtype]
    grid = TINY_GRID if args.tiny else GRID
    scale = math.prod(grid) / math.prod(GRID)
    rows = []
    for case in select_cases(args):
        if args.tiny and case.visible is not None:
            case = Case(case.name, case.backward, case.batch, max(1, round(case.visible * scale)), case.splits)
        generator = torch.Generator().manual_seed(args.seed)
        positions, qkv = build_inputs(case, grid, args.heads, args.head_dim, dtype, device, generator)
        masked = case.visible is not None
        global_pairs = case.batch * positions.shape[1] ** 2
        for kernel in args.kernels:
            row = dict(case=case.name, kernel=kernel, backward=case.backward, batch=case.batch,
                       tokens=positions.shape[1], splits=case.splits)
            plan = None
            if kernel != "global":
                plan_kernel = kernel if kernel in ("dense", "varlen", "segment", "mask") else "mask"
                try:
                    plan = AreaPlan.build(positions, grid, case.splits, kernel=plan_kernel, masked=masked)
                except ValueError:
                    rows.append(dict(row, status="n/a: dense needs all tokens and divisible areas"))
                    continue
            if kernel == "varlen" and (device.type != "cuda" or varlen_attn is None or dtype == torch.float32):
                rows.append(dict(row, status="skipped: varlen needs CUDA and fp16/bf16 (no CPU kernel)"))
                continue
            if kernel != "global":
                reference = AreaPlan.build(positions, grid, case.splits, kernel="mask", masked=masked)
                row["rel_err_vs_mask"] = relative_error(kernel, plan, qkv, reference)
            pairs = global_pairs if kernel == "global" else attention_pairs(plan, case.batch)
            flops = 4 * pairs * args.heads * args.head_dim * (3 if case.backward else 1)
            row["gflop"] = flops / 1e9
            step = None
            try:
                step = make_step(kernel, plan, qkv, case.backward)
                timing = measure(step, device, args.warmup, args.iters)
                row.update(asdict(timing), status="ok", tflops=flops / (timing.ms * 1e-3) / 1e12)
            except Exception as error:  # noqa: BLE001 - OOM or unsupported: record, go on
                row.update(status=failure_status(error), error=str(error)[:4000])
            del step, plan
            qkv.grad = None
            free_memory(device)
            rows.append(row)
            print(f"{case.name:32s} {kernel:9s} {fmt(row.get('ms'), '.3f')} ms  {row['status']}", flush=True)
    for row in rows:
        reference = next((r for r in rows if r["case"] == row["case"] and r["kernel"] == "global" and "ms" in r), None)
        if "ms" in row and reference:
            row["speedup_vs_global"] = reference["ms"] / row["ms"]
    return dict(
        meta=dict(environment(device), backends=backends, dtype=args.dtype, heads=args.heads, head_dim=args.head_dim,
                  grid=grid, warmup=args.warmup, iters=args.iters),
        rows=rows,
    )


def select_cases(args) -> list[Case]:
    wanted = [w.strip() for w in args.cases.split(",") if w.strip()]
    chosen = [c for c in CASES if "all" in wanted or c.name in wanted]
    if not chosen or any(w != "all" and w not in {c.name for c in CASES} for w in wanted):
        raise SystemExit(f"--cases: choose from all, {[c.name for c in CASES]}")
    return chosen


def report(result: dict) -> str:
    rows, meta = result["rows"], result["meta"]
    detail = markdown_table(
        ["case", "B x tokens", "kernel", "ms", "peak GiB", "TFLOP/s (useful)", "speed-up vs global", "rel. err vs mask",
         "status"],
        [[r["case"], f"{r['batch']} x {r['tokens']}", r["kernel"], fmt(r.get("ms"), ".3f"), fmt(r.get("peak_gib")),
          fmt(r.get("tflops"), ".1f"), fmt(r.get("speedup_vs_global")), fmt(r.get("rel_err_vs_mask"), ".1e"),
          r["status"]] for r in rows],
    )
    cases = list(dict.fromkeys(r["case"] for r in rows))
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))

    def cell(case, kernel):
        row = next((r for r in rows if r["case"] == case and r["kernel"] == kernel), None)
        if row is None or row["status"] != "ok":
            return "–" if row is None or row["status"].startswith(("n/a", "skipped")) else row["status"][:20]
        return fmt(row["ms"], ".3f")

    summary = markdown_table(["case (ms)"] + kernels, [[c] + [cell(c, k) for k in kernels] for c in cases])
    title = (f"Attention only, {meta['heads']} heads x {meta['head_dim']}, {meta['dtype']}, "
             f"token grid {tuple(meta['grid'])}, {meta.get('gpu', meta['device'])}, torch {meta['torch']}, "
             f"median of {meta['iters']} after {meta['warmup']} warm-up")
    return "\n\n".join([title, detail, "Summary (one row per case, one column per kernel):", summary])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="all", help="comma list: all or case names")
    parser.add_argument("--kernels", default=",".join(KERNELS), type=lambda s: s.split(","), help=",".join(KERNELS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default 16; tiny 2)")
    parser.add_argument("--head-dim", type=int, default=None, help="channels per head (default 64; tiny 16)")
    add_run_args(parser, "bench_attention", f"token grid {TINY_GRID}, 2 heads x 16: a CPU smoke run")
    args = resolve_run_args(parser.parse_args(argv), "bench_attention")
    args.heads = args.heads if args.heads is not None else (2 if args.tiny else 16)
    args.head_dim = args.head_dim if args.head_dim is not None else (16 if args.tiny else 64)
    if [k for k in args.kernels if k not in KERNELS]:
        parser.error(f"--kernels: choose from {KERNELS}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available: use --tiny --device cpu for a smoke run")
    return args


def main(argv=None) -> dict:
    return run_benchmark(parse_args(argv), run, report)


if __name__ == "__main__":
    main()
