"""Encoder timings: ViT-L with full attention, with ST-A² area attention, and transformers' VJEPA2Model.

Why this shape: the claim to check is that area attention turns its FLOP savings into wall-clock savings
in the two regimes that matter, a V-JEPA masked training step (25% of tokens visible, forward + backward)
and full-token inference, and that our full-attention path is no slower than transformers' port. All
three models carry the same random weights (ours -> transformers key mapping below), so only the
implementations differ. Every (case, model, mode) runs in isolation: one model on the device at a time,
peak memory reset per run, OOM or compile failures recorded and skipped.

    python benchmarks/bench_encoder.py                         # everything, on CUDA
    python benchmarks/bench_encoder.py --tiny --device cpu     # smoke run of every code path, seconds
    python benchmarks/bench_encoder.py --flops-only            # FLOP-ideal speed-ups only, any machine

See docs/benchmarks.md for the columns and the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from transformers import VJEPA2Config, VJEPA2Model

from hf_vjepa_area import VARIANTS, VJEPA2AreaConfig, VJEPA2AreaModel
from hf_vjepa_area.checkpoint_keys import ENCODER_KEYS, to_transformers
from hf_vjepa_area.modeling.area import AreaPlan, area_ids_from_positions
from hf_vjepa_area.modeling.configuration_vjepa2_area import AREA_KERNELS
from hf_vjepa_area.modeling.released import DEFAULT_AREA_SPLITS
from hf_vjepa_area.modeling.rope import token_positions

AREA_SPLITS = DEFAULT_AREA_SPLITS
VISIBLE_FRACTION = 0.25
TINY_DIMS = dict(embed_dim=64, depth=4, num_heads=2, mlp_ratio=4.0)  # area layers [0, 3)
MODELS = ("ours-full", "ours-area", "transformers")
MODES = ("eager", "compile", "compile-fullgraph")


@dataclass(frozen=True)
class Case:
    name: str
    train: bool  # masked fwd+bwd training step; else full-token no_grad inference
    img: int
    frames: int
    batch: int

    def tiny(self) -> "Case":
        """Same case on a few tokens: 256px -> 32px (grid 2), 384px -> 48px (grid 3: uneven areas)."""
        return replace(self, img=self.img // 8, frames=self.frames // 4)


CASES = [
    Case("train-256px-16f-b4", True, 256, 16, 4),
    Case("train-384px-16f-b2", True, 384, 16, 2),
    Case("train-256px-64f-b1", True, 256, 64, 1),
    Case("train-384px-64f-b1", True, 384, 64, 1),
    Case("infer-256px-16f-b1", False, 256, 16, 1),
    Case("infer-256px-64f-b1", False, 256, 64, 1),
    Case("infer-384px-64f-b1", False, 384, 64, 1),
]


# ----------------------------------------------------------------------------------------------
# Timing and reporting helpers (also used by bench_attention.py)
# ----------------------------------------------------------------------------------------------


def set_backend_defaults() -> dict:
    """Pin the numerics knobs that change timings, and return them for the report."""
    torch.backends.cuda.matmul.allow_tf32 = True  # only affects fp32 matmuls (the fp32 --dtype)
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # patch-embed Conv3d picks its fastest algorithm in warm-up
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    return {
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "cuda.matmul.allow_bf16_reduced_precision_reduction": True,
        "sdp backends": "all enabled (flash, cuDNN, mem-efficient, math); torch picks",
    }


def environment(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "argv": " ".join(sys.argv),
    }
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


@dataclass
class Timing:
    ms: float  # median over the timed iterations
    ms_min: float
    peak_gib: float | None  # torch.cuda.max_memory_allocated in the timed iterations; None on CPU
    first_call_s: float  # the first call, compilation included


def measure(step, device: torch.device, warmup: int, iters: int) -> Timing:
    """Median of per-iteration timings (CUDA events on GPU) after `warmup` calls; peak memory of the timed part."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    step()
    sync()
    first_call_s = time.perf_counter() - start
    for _ in range(warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            step()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            begin = time.perf_counter()
            step()
            times.append((time.perf_counter() - begin) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    return Timing(statistics.median(times), min(times), peak, first_call_s)


def failure_status(error: BaseException) -> str:
    """'OOM' for out-of-memory (also when wrapped by the compiler), else the error's type and first line."""
    text = str(error)
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in text.lower():
        return "OOM"
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return f"error: {type(error).__name__}: {first_line[:160]}"


def free_memory(device: torch.device) -> None:
    """Between runs on CUDA: compiled wrappers hold reference cycles, so collect before emptying the cache.
    (Skipped on CPU, where gc over transformers' object graph would dominate a smoke run.)"""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def fmt(value, spec: str = ".2f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def layers_text(layers) -> str:
    """[0, 1, ..., 17] -> '[0, 18)'; other lists as they are."""
    layers = list(layers)
    contiguous = layers and layers == list(range(layers[0], layers[-1] + 1))
    return f"[{layers[0]}, {layers[-1] + 1})" if contiguous else str(layers)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(out_dir: Path, name: str, payload: dict, markdown: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown + "\n")
    return [json_path, md_path]


def compile_fn(fn, mode: str, args):
    if mode == "eager":
        return fn
    torch._dynamo.reset()  # each compiled run starts clean: no recompiles or cache limits across cases
    return torch.compile(
        fn, fullgraph=mode == "compile-fullgraph", dynamic=False, mode=args.compile_mode, backend=args.compile_backend
    )


# ----------------------------------------------------------------------------------------------
# Models, inputs, FLOPs
# ----------------------------------------------------------------------------------------------


def our_config(args, case: Case, area: bool) -> VJEPA2AreaConfig:
    dims = TINY_DIMS if args.tiny else VARIANTS[args.variant]
    return VJEPA2AreaConfig(
        **dims, img_size=case.img, num_frames=case.frames, area_splits=AREA_SPLITS if area else None,
        area_kernel=args.area_kernel,
    )


def transformers_config(config: VJEPA2AreaConfig) -> VJEPA2Config:
    """transformers derives RoPE's grid from crop_size / frames_per_clip, so one config per input size. The
    predictor (never run here) is kept to one small layer."""
    hf_config = config.to_transformers_config()
    hf_config.pred_hidden_size, hf_config.pred_num_attention_heads, hf_config.pred_num_hidden_layers = 64, 2, 1
    hf_config._attn_implementation = "sdpa"
    return hf_config


def ours_to_transformers(state: dict) -> dict:
    """Our (original V-JEPA 2) encoder keys -> VJEPA2Model keys, by the conversion package's key table."""
    return to_transformers(state, ENCODER_KEYS, "encoder.")


def build_model(name: str, args, case: Case, state: dict, device: torch.device) -> torch.nn.Module:
    """Built directly on the device (fast init), then loaded with the shared weights."""
    config = our_config(args, case, area=name == "ours-area")
    with torch.device(device):
        if name == "transformers":
            model = VJEPA2Model(transformers_config(config))
            missing, unexpected = model.load_state_dict(ours_to_transformers(state), strict=False)
            if unexpected or any(not key.startswith("predictor.") for key in missing):
                raise RuntimeError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")
        else:
            model = VJEPA2AreaModel(config)
            model.load_state_dict(state)
    if args.dtype == "bf16":
        model.to(torch.bfloat16)
    return model.train(case.train)



def visible_ids(batch: int, num_tokens: int, generator: torch.Generator) -> torch.Tensor:
    """Random per-sample V-JEPA style masks: LongTensor [B, K] of sorted visible token ids."""
    keep = max(1, round(num_tokens * VISIBLE_FRACTION))
    return torch.rand(batch, num_tokens, generator=generator).argsort(-1)[:, :keep].sort(-1).values


def case_ids(case: Case, num_tokens: int, seed: int) -> torch.Tensor:
    """The case's token ids, [B, K] masks for training or [1, N] all tokens; own generator, so that the
    FLOP-only table and the timed run count the same masks."""
    if not case.train:
        return torch.arange(num_tokens)[None]
    return visible_ids(case.batch, num_tokens, torch.Generator().manual_seed(seed + 1))


def encoder_flops(config: VJEPA2AreaConfig, ids: torch.Tensor, training: bool) -> float:
    """Analytic FLOPs of the blocks (patch embed and norms left out).

    Per block: 2*N*(3D^2 + D^2 + 2*D*H_mlp) for the linears, plus attention 4*D*sum(Lq*Lk): N^2 per sample
    for global layers, the sum of squared area sizes (from the actual masks) for area layers; x3 for fwd+bwd.
    """
    dim, hidden = config.embed_dim, int(config.embed_dim * config.mlp_ratio)
    batch, tokens = ids.shape
    linear = 2 * batch * tokens * (4 * dim * dim + 2 * dim * hidden)
    global_pairs = batch * tokens**2
    area_pairs = global_pairs
    if config.area_splits is not None:
        areas = area_ids_from_positions(token_positions(ids, config.grid_size), config.grid_size, config.area_splits)
        counts = torch.zeros(batch, math.prod(config.area_splits), dtype=torch.float64)
        counts.scatter_add_(1, areas, torch.ones_like(areas, dtype=torch.float64))
        area_pairs = float(counts.pow(2).sum())
    total = 0.0
    for layer in range(config.depth):
        pairs = area_pairs if layer in config.area_layers else global_pairs
        total += linear + 4 * dim * pairs
    return total * (3 if training else 1)


def resolved_kernel(config: VJEPA2AreaConfig, ids: torch.Tensor, masked: bool, device, compute_dtype) -> str:
    """The area kernel the model will run ('auto' resolved with the model's own rule)."""
    if config.area_splits is None:
        return "global"
    plan = AreaPlan.build(token_positions(ids, config.grid_size), config.grid_size, config.area_splits,
                          kernel=config.area_kernel, masked=masked)
    return plan.choose_kernel(torch.empty(0, device=device, dtype=compute_dtype))


# ----------------------------------------------------------------------------------------------
# The runs
# ----------------------------------------------------------------------------------------------


def make_step(model, name: str, mode: str, case: Case, pixels, masks, args, device):
    """One timed unit: a training step (zero grads, forward, loss, backward) or a no_grad forward."""
    fn = compile_fn(model, mode, args)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16-autocast" else contextlib.nullcontext()
    )

    def forward():
        with autocast:
            if name == "transformers":
                return fn(pixel_values_videos=pixels, skip_predictor=True).last_hidden_state
            return fn(pixel_values_videos=pixels, masks=masks).last_hidden_state

    def train_step():
        model.zero_grad(set_to_none=True)
        loss = forward().float().pow(2).mean()
        loss.backward()
        return loss

    @torch.no_grad()
    def infer_step():
        return forward()

    return train_step if case.train else infer_step


def run(args) -> dict:
    device = torch.device(args.device)
    backends = set_backend_defaults()
    compute_dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    cases = select_cases(args)
    modes = [m for m in args.modes if args.compile or m == "eager"]

    torch.manual_seed(args.seed)
    with torch.device(device):
        state = {k: v.cpu() for k, v in VJEPA2AreaModel(our_config(args, cases[0], area=False)).state_dict().items()}
    free_memory(device)

    rows = []
    for case in cases:
        generator = torch.Generator().manual_seed(args.seed)
        config_full, config_area = our_config(args, case, False), our_config(args, case, True)
        grid = config_full.grid_size
        num_tokens = math.prod(grid)
        pixel_dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        pixels = torch.randn(case.batch, case.frames, 3, case.img, case.img, generator=generator)
        pixels = pixels.to(device, pixel_dtype)
        ids, flops_full, flops_area = case_flops(args, case)
        masks = ids.to(device) if case.train else None
        reference_output = None
        for name in args.models:
            base = dict(case=case.name, train=case.train, img=case.img, frames=case.frames, batch=case.batch,
                        tokens_per_sample=num_tokens, visible_per_sample=ids.shape[1], model=name)
            config, flops = (config_area, flops_area) if name == "ours-area" else (config_full, flops_full)
            if name == "transformers" and case.train:
                rows.append(dict(base, mode="–", kernel="–", status="n/a: VJEPA2Model's encoder takes no masks"))
                continue
            kernel = resolved_kernel(config, ids, case.train, device, compute_dtype)
            try:
                model = build_model(name, args, case, state, device)
            except Exception as error:  # noqa: BLE001 - recorded, the run goes on
                rows.append(dict(base, mode="–", kernel=kernel, status=failure_status(error)))
                free_memory(device)
                continue
            for mode in modes:
                if mode == "compile-fullgraph" and name == "transformers":
                    continue
                row = dict(base, mode=mode, kernel=kernel, gflop=flops / 1e9, flops_over_full=flops / flops_full)
                step = None
                try:
                    step = make_step(model, name, mode, case, pixels, masks, args, device)
                    timing = measure(step, device, args.warmup, args.iters)
                    row.update(asdict(timing), status="ok", tflops=flops / (timing.ms * 1e-3) / 1e12)
                except Exception as error:  # noqa: BLE001 - OOM or a compile failure: record, go on
                    row.update(status=failure_status(error), error=str(error)[:4000])
                del step
                model.zero_grad(set_to_none=True)
                free_memory(device)
                rows.append(row)
                print(f"{case.name:20s} {name:12s} {mode:18s} {kernel:7s} {fmt(row.get('ms'))} ms  {row['status']}",
                      flush=True)
            if not case.train and name in ("ours-full", "transformers"):
                reference_output = check_parity(model, name, case.name, pixels, args, device, reference_output, rows)
            del model
            free_memory(device)
    add_ratios(rows)
    return dict(
        meta=dict(environment(device), backends=backends, dtype=args.dtype,
                  variant="tiny" if args.tiny else args.variant,
                  area_splits=AREA_SPLITS, area_layers=our_config(args, cases[0], True).area_layers,
                  area_kernel=args.area_kernel, visible_fraction=VISIBLE_FRACTION, warmup=args.warmup,
                  iters=args.iters, compile_mode=args.compile_mode, compile_backend=args.compile_backend),
        rows=rows,
        targets=[] if args.tiny or args.variant != "large" else check_targets(rows),
    )


def case_flops(args, case: Case) -> tuple[torch.Tensor, float, float]:
    """The case's token ids (see `case_ids`), and the analytic FLOPs of full and of area attention on them."""
    config_full, config_area = our_config(args, case, False), our_config(args, case, True)
    ids = case_ids(case, math.prod(config_full.grid_size), args.seed)
    batch_ids = ids.expand(case.batch, -1)
    return ids, encoder_flops(config_full, batch_ids, case.train), encoder_flops(config_area, batch_ids, case.train)


def run_flops_only(args) -> dict:
    """Analytic FLOPs of each case, no model and no timing: the FLOP-ideal speed-up the targets refer to."""
    cases, rows = select_cases(args), []
    for case in cases:
        ids, flops_full, flops_area = case_flops(args, case)
        rows.append(dict(case=case.name, train=case.train, batch=case.batch,
                         tokens_per_sample=math.prod(our_config(args, case, False).grid_size),
                         visible_per_sample=ids.shape[1], gflop_full=flops_full / 1e9, gflop_area=flops_area / 1e9,
                         flops_over_full=flops_area / flops_full))
    return dict(meta=dict(variant="tiny" if args.tiny else args.variant, area_splits=AREA_SPLITS,
                          area_layers=our_config(args, cases[0], True).area_layers,
                          visible_fraction=VISIBLE_FRACTION, seed=args.seed, argv=" ".join(sys.argv)),
                rows=rows)


def report_flops_only(result: dict) -> str:
    header = ["case", "tokens (visible)/sample", "batch", "GFLOP full", "GFLOP area", "FLOPs ÷ full",
              "FLOP-ideal speed-up", "90% of ideal"]
    table = [[r["case"], f"{r['tokens_per_sample']} ({r['visible_per_sample']})", str(r["batch"]),
              fmt(r["gflop_full"], ".0f"), fmt(r["gflop_area"], ".0f"), fmt(r["flops_over_full"]),
              fmt(1 / r["flops_over_full"]) + "x", fmt(0.9 / r["flops_over_full"]) + "x"] for r in result["rows"]]
    meta = result["meta"]
    title = (f"Analytic FLOPs, encoder {meta['variant']}, area splits {tuple(meta['area_splits'])} in layers "
             f"{layers_text(meta['area_layers'])}; training rows are forward + backward at {meta['visible_fraction']:.0%} visible")
    return "\n".join([title, "", markdown_table(header, table)])


def check_parity(model, name, case_name, pixels, args, device, reference, rows):
    """Same weights, same input: transformers' output must match ours-full (this proves the key mapping)."""
    try:
        step = make_step(model, name, "eager", Case("parity", False, 0, 0, 0), pixels, None, args, device)
        output = step().float().cpu()
    except Exception:  # noqa: BLE001 - e.g. OOM: parity is a bonus, the timings stand
        return reference
    if reference is not None:
        error = ((output - reference).norm() / reference.norm()).item()
        for row in rows:
            if row["model"] == name and row["case"] == case_name:
                row["rel_err_vs_ours_full"] = error
    return output


def add_ratios(rows: list[dict]) -> None:
    """time / ours-full time for the same case and mode (FLOPs ratio already set)."""
    full = {(r["case"], r["mode"]): r["ms"] for r in rows if r["model"] == "ours-full" and "ms" in r}
    for row in rows:
        if "ms" in row and (row["case"], row["mode"]) in full:
            row["time_over_full"] = row["ms"] / full[(row["case"], row["mode"])]


def best(rows, case, model):
    """The fastest successful mode of a model on a case (targets compare what a user would run)."""
    runs = [r for r in rows if r["case"] == case and r["model"] == model and r.get("status") == "ok"]
    return min(runs, key=lambda r: r["ms"]) if runs else None


def check_targets(rows: list[dict]) -> list[dict]:
    """Issue 3's targets, each PASS / FAIL / not measured, on the fastest mode of each model."""
    targets = []

    def add(text, ok, detail):
        targets.append(dict(target=text, result="not measured" if ok is None else ("PASS" if ok else "FAIL"),
                            detail=detail))

    for case in (c for c in CASES if c.train):
        area, full = best(rows, case.name, "ours-area"), best(rows, case.name, "ours-full")
        if not (area and full):
            add(f"{case.name}: area no slower than full", None, "")
            continue
        add(f"{case.name}: area no slower than full", area["ms"] <= full["ms"],
            f"area {area['ms']:.1f} ms ({area['mode']}) vs full {full['ms']:.1f} ms ({full['mode']})")
        if area["visible_per_sample"] >= 2048:
            speedup, ideal = full["ms"] / area["ms"], 1 / area["flops_over_full"]
            add(f"{case.name}: speed-up within 10% of FLOP-ideal", speedup >= 0.9 * ideal,
                f"speed-up {speedup:.2f}x vs ideal {ideal:.2f}x")
    for case, limit in (("train-384px-64f-b1", 35), ("infer-384px-64f-b1", 50)):
        area = best(rows, case, "ours-area")
        detail = area and f"{area['ms']:.1f} ms ({area['mode']})"
        add(f"{case}: area <= {limit} ms", area and area["ms"] <= limit, detail)
    full, theirs = best(rows, "infer-384px-64f-b1", "ours-full"), best(rows, "infer-384px-64f-b1", "transformers")
    add("infer-384px-64f-b1: ours-full <= transformers", full and theirs and full["ms"] <= theirs["ms"],
        full and theirs and f"{full['ms']:.1f} ms ({full['mode']}) vs {theirs['ms']:.1f} ms ({theirs['mode']})")
    for row in rows:
        if row["model"] != "ours-area" or row.get("status") != "ok" or row.get("peak_gib") is None:
            continue
        full = next((r for r in rows if r["model"] == "ours-full" and r["case"] == row["case"]
                     and r["mode"] == row["mode"] and r.get("status") == "ok"), None)
        if full:
            add(f"{row['case']} {row['mode']}: area peak memory <= full", row["peak_gib"] <= full["peak_gib"] + 1e-3,
                f"{row['peak_gib']:.2f} vs {full['peak_gib']:.2f} GiB")
    return targets


def select_cases(args, cases: list[Case] = CASES) -> list[Case]:
    wanted = [w.strip() for w in args.cases.split(",") if w.strip()]
    chosen = [c for c in cases if "all" in wanted or c.name in wanted or ("train" if c.train else "infer") in wanted]
    unknown = [w for w in wanted if w not in ("all", "train", "infer") and w not in {c.name for c in cases}]
    if unknown or not chosen:
        raise SystemExit(f"unknown --cases {unknown}; choose from all, train, infer, {[c.name for c in cases]}")
    return [c.tiny() for c in chosen] if args.tiny else chosen


def report(result: dict) -> str:
    header = ["case", "tokens (visible)/sample", "model", "mode", "kernel", "ms", "peak GiB", "TFLOP/s",
              "time ÷ full", "FLOPs ÷ full", "status"]
    table = [
        [r["case"], f"{r['tokens_per_sample']} ({r['visible_per_sample']})", r["model"], r["mode"], r["kernel"],
         fmt(r.get("ms")), fmt(r.get("peak_gib")), fmt(r.get("tflops"), ".1f"), fmt(r.get("time_over_full")),
         fmt(r.get("flops_over_full")), r["status"] + (f"; rel. err vs ours-full {r['rel_err_vs_ours_full']:.1e}"
                                                        if "rel_err_vs_ours_full" in r else "")]
        for r in result["rows"]
    ]
    meta = result["meta"]
    lines = [f"Encoder {meta['variant']}, dtype {meta['dtype']}, area splits {tuple(meta['area_splits'])} in layers "
             f"{layers_text(meta['area_layers'])}, {meta.get('gpu', meta['device'])}, torch {meta['torch']}, "
             f"median of {meta['iters']} after {meta['warmup']} warm-up", ""]
    if result["targets"]:
        lines += ["Issue 3 targets:", ""]
        lines += [f"- {t['result']}: {t['target']}" + (f" ({t['detail']})" if t["detail"] else "")
                  for t in result["targets"]]
        lines.append("")
    return "\n".join(lines + [markdown_table(header, table)])


def add_run_args(parser: argparse.ArgumentParser, stem: str, tiny_help: str) -> None:
    """Arguments every benchmark script shares: repetitions, the tiny smoke mode, seed, outputs."""
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls after the first (default 5; tiny 1)")
    parser.add_argument("--iters", type=int, default=None, help="timed calls (default 20; tiny 2)")
    parser.add_argument("--tiny", action="store_true", help=tiny_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=None, help=f"output file stem (default {stem}[_tiny])")


def resolve_run_args(args: argparse.Namespace, stem: str) -> argparse.Namespace:
    """Defaults that depend on --tiny; values given explicitly are kept."""
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    args.iters = args.iters if args.iters is not None else (2 if args.tiny else 20)
    args.name = args.name or (f"{stem}_tiny" if args.tiny else stem)
    return args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="all", help="comma list: all, train, infer, or case names")
    parser.add_argument("--models", default=",".join(MODELS), type=lambda s: s.split(","), help=",".join(MODELS))
    parser.add_argument("--modes", default=",".join(MODES), type=lambda s: s.split(","), help=",".join(MODES))
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="run the compile modes (--no-compile: eager only)")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (inductor; --tiny: eager)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bf16-autocast", choices=("bf16-autocast", "bf16", "fp32"),
                        help="bf16-autocast: fp32 weights under bf16 autocast (training recipe); bf16: bf16 weights")
    parser.add_argument("--variant", default="large", choices=sorted(VARIANTS))
    parser.add_argument("--area-kernel", default="auto", choices=AREA_KERNELS)
    parser.add_argument("--flops-only", action="store_true",
                        help="print each case's analytic FLOPs and FLOP-ideal speed-up; no model, no timing (any machine)")
    add_run_args(parser, "bench_encoder", "tiny config and inputs: a CPU smoke run of every path")
    args = parser.parse_args(argv)
    args = resolve_run_args(args, "bench_encoder_flops" if args.flops_only else "bench_encoder")
    args.compile_backend = args.compile_backend or ("eager" if args.tiny else "inductor")
    bad = [m for m in args.models if m not in MODELS] + [m for m in args.modes if m not in MODES]
    if bad:
        parser.error(f"unknown models/modes {bad}")
    if args.flops_only:
        return args
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available: use --tiny --device cpu for a smoke run")
    if not args.tiny and not args.device.startswith("cuda"):
        print("warning: a full-size run on CPU takes very long; did you mean --tiny?", file=sys.stderr)
    return args


def run_benchmark(args, run_fn, report_fn) -> dict:
    """Run, then write the JSON and Markdown and print the table last (the device tool returns the tail)."""
    threads = torch.get_num_threads()
    if args.tiny and args.device == "cpu":
        torch.set_num_threads(1)  # tiny ops: thread start-up and contention would dominate the smoke run
    try:
        result = run_fn(args)
    finally:
        torch.set_num_threads(threads)
    markdown = report_fn(result)
    paths = write_outputs(args.out, args.name, result, markdown)
    print(f"\nwrote {', '.join(map(str, paths))}\n\n{markdown}")
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.flops_only:
        return run_benchmark(args, run_flops_only, report_flops_only)
    return run_benchmark(args, run, report)


if __name__ == "__main__":
    main()
