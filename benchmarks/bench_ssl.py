"""The ST-A² report's experiment: V-JEPA 2's full self-supervised step, full vs area attention.

One step is what `examples/ssl_anneal.py` runs: target encoder on all tokens (no grad) -> encoder on the
context ids and predictor at the target ids, per mask config -> L1 loss -> backward -> AdamW -> EMA update,
with V-JEPA 2's real multi-block masks (a new draw every step) at the report's four configs. Full and area
attention (splits (2, 2, 1) in the first 75% of blocks, blocks 0-17 of ViT-L; the predictor unchanged)
start from the same random weights and see the same clips and masks, so the loss columns compare how
the two train, and the time and memory columns what area attention saves.

    python benchmarks/bench_ssl.py                          # ViT-L, bf16 autocast, CUDA
    python benchmarks/bench_ssl.py --tiny --device cpu      # smoke run of every code path, seconds

Each (case, attention) runs in isolation (one set of models on the device at a time, peak memory reset
per run); an OOM is recorded and the run goes on. Columns: docs/ssl.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

try:
    import av  # noqa: F401
except ImportError:  # The GPU image has no PyAV; hf_vjepa_area.data imports it for decoding, which the masks never use.
    sys.modules["av"] = types.ModuleType("av")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_encoder's helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from bench_encoder import (
    add_run_args,
    environment,
    failure_status,
    fmt,
    free_memory,
    layers_text,
    markdown_table,
    measure,
    resolve_run_args,
    run_benchmark,
    set_backend_defaults,
)

from hf_vjepa_area import VARIANTS, VJEPA2AreaConfig, VJEPA2AreaModel, sources, ssl
from hf_vjepa_area.data import RELEASED_MASK_CONFIGS, MultiBlockMaskCollator
from hf_vjepa_area.modeling.released import DEFAULT_AREA_SPLITS

AREA_SPLITS = DEFAULT_AREA_SPLITS
ATTENTION = ("full", "area")
# Small enough for a CPU smoke run; the predictor keeps a few blocks so every path runs.
TINY_DIMS = dict(embed_dim=64, depth=4, num_heads=2, predictor_embed_dim=32, predictor_depth=2, predictor_num_heads=2)
# The anneal's optimizer and EMA (examples/ssl_anneal.py defaults).
LR, WEIGHT_DECAY, EMA = 5.25e-4, 0.04, 0.99925


@dataclass(frozen=True)
class Case:
    name: str
    img: int
    frames: int
    batch: int

    def tiny(self) -> "Case":
        """The same case on few tokens: 256 px -> 128 (8 x 8 patches), 384 -> 192 (12 x 12); frames / 4."""
        return replace(self, img=self.img // 2, frames=self.frames // 4)


# The ST-A² report's four configs (per GPU).
CASES = [
    Case("256px-16f-b4", 256, 16, 4),
    Case("384px-16f-b2", 384, 16, 2),
    Case("256px-64f-b1", 256, 64, 1),
    Case("384px-64f-b1", 384, 64, 1),
]


def config_for(args, case: Case, area: bool) -> VJEPA2AreaConfig:
    dims = TINY_DIMS if args.tiny else VARIANTS[args.variant]
    return VJEPA2AreaConfig(**dims, img_size=case.img, num_frames=case.frames,
                            area_splits=AREA_SPLITS if area else None, area_kernel=args.area_kernel)  # fmt: skip


def build_models(args, config: VJEPA2AreaConfig, device: torch.device):
    """(JEPA module, target encoder, optimizer), the same random weights for full and area (seeded init)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        with torch.device(device):
            models = sources.load_ssl_models(VJEPA2AreaModel(config), init_predictor="random")
    jepa = ssl.JEPA(models.encoder, models.predictor).to(device)
    if args.activation_checkpointing:
        jepa.set_grad_checkpointing(True)
    return jepa, models.target_encoder.to(device), ssl.make_optimizer(jepa, LR, WEIGHT_DECAY)


def make_step(jepa, target_encoder, optimizer, clips, masks, device, autocast: bool, losses: list):
    """One training step per call, on the next step's masks; each step's loss (a device tensor) goes to `losses`."""
    calls = iter(range(10**9))

    def step():
        masks_context, masks_target = masks[next(calls) % len(masks)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            targets = ssl.target_tokens(target_encoder, clips)
            loss, _ = jepa(clips, masks_context, masks_target, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ssl.ema_update(target_encoder, jepa.encoder, EMA)
        losses.append(loss.detach())

    return step


def run(args) -> dict:
    device = torch.device(args.device)
    backends = set_backend_defaults()
    cases = select_cases(args)
    rows = []
    for case in cases:
        grid = config_for(args, case, False).grid_size
        num_tokens = math.prod(grid)
        clips = torch.randn(case.batch, 3, case.frames, case.img, case.img, generator=torch.Generator().manual_seed(args.seed))
        clips = clips.to(device)
        collator = MultiBlockMaskCollator(grid, RELEASED_MASK_CONFIGS, seed=args.seed)
        steps = 1 + args.warmup + args.iters
        masks = [tuple([m.to(device) for m in ms] for ms in collator.masks(i, case.batch)) for i in range(steps)]
        visible = [sum(m[0][i].shape[1] for m in masks) / steps / num_tokens for i in range(len(RELEASED_MASK_CONFIGS))]
        for attention in args.attention:
            config = config_for(args, case, attention == "area")
            row = dict(case=case.name, img=case.img, frames=case.frames, batch=case.batch, attention=attention,
                       tokens_per_sample=num_tokens, visible_fraction=visible, steps=steps,
                       area_layers=config.area_layers)  # fmt: skip
            losses = []
            try:
                jepa, target_encoder, optimizer = build_models(args, config, device)
                step = make_step(jepa, target_encoder, optimizer, clips, masks, device, args.dtype == "bf16-autocast", losses)
                timing = measure(step, device, args.warmup, args.iters)
                values = torch.stack(losses).float().cpu().tolist()
                row.update(asdict(timing), status="ok", loss_first=values[0], loss_last=values[-1])
            except Exception as error:  # noqa: BLE001 - OOM: record, go on
                row.update(status=failure_status(error), error=str(error)[:4000])
            jepa = target_encoder = optimizer = step = None
            free_memory(device)
            rows.append(row)
            print(f"{case.name:14s} {attention:5s} {fmt(row.get('ms'))} ms  {fmt(row.get('peak_gib'))} GiB  "
                  f"loss {fmt(row.get('loss_first'), '.4f')} -> {fmt(row.get('loss_last'), '.4f')}  {row['status']}",
                  flush=True)  # fmt: skip
    add_ratios(rows)
    return dict(
        meta=dict(environment(device), backends=backends, dtype=args.dtype, variant="tiny" if args.tiny else args.variant,
                  area_splits=AREA_SPLITS, area_kernel=args.area_kernel, warmup=args.warmup, iters=args.iters,
                  activation_checkpointing=args.activation_checkpointing, lr=LR, weight_decay=WEIGHT_DECAY, ema=EMA),
        rows=rows,
    )  # fmt: skip


def add_ratios(rows: list[dict]) -> None:
    """Area over full of the same case: step time and peak memory."""
    full = {r["case"]: r for r in rows if r["attention"] == "full" and r["status"] == "ok"}
    for row in rows:
        reference = full.get(row["case"])
        if row["attention"] == "area" and row["status"] == "ok" and reference is not None:
            row["time_over_full"] = row["ms"] / reference["ms"]
            if row["peak_gib"] is not None:
                row["memory_over_full"] = row["peak_gib"] / reference["peak_gib"]


def select_cases(args) -> list[Case]:
    wanted = [w.strip() for w in args.cases.split(",") if w.strip()]
    unknown = [w for w in wanted if w != "all" and w not in {c.name for c in CASES}]
    if unknown:
        raise SystemExit(f"unknown --cases {unknown}; choose from all, {[c.name for c in CASES]}")
    chosen = [c for c in CASES if "all" in wanted or c.name in wanted]
    return [c.tiny() for c in chosen] if args.tiny else chosen


def report(result: dict) -> str:
    header = ["case", "tokens/sample", "visible A / B", "attention", "step ms", "peak GiB", "time ÷ full",
              "memory ÷ full", "loss first → last", "status"]  # fmt: skip
    table = [
        [r["case"], str(r["tokens_per_sample"]), " / ".join(f"{v:.1%}" for v in r["visible_fraction"]), r["attention"],
         fmt(r.get("ms"), ".1f"), fmt(r.get("peak_gib")), fmt(r.get("time_over_full")), fmt(r.get("memory_over_full")),
         f"{fmt(r.get('loss_first'), '.4f')} → {fmt(r.get('loss_last'), '.4f')}", r["status"]]
        for r in result["rows"]
    ]  # fmt: skip
    meta = result["meta"]
    area_layers = next((r["area_layers"] for r in result["rows"] if r["attention"] == "area"), [])
    lines = [
        f"SSL step (target encoder + encoder + predictor + L1 loss + AdamW + EMA), encoder {meta['variant']}, "
        f"{meta['dtype']}, area splits {tuple(meta['area_splits'])} in layers {layers_text(area_layers) if area_layers else '–'}, "
        f"V-JEPA 2's masks (a new draw per step), {meta.get('gpu', meta['device'])}, torch {meta['torch']}, median of "
        f"{meta['iters']} steps after {meta['warmup']} warm-up; loss of the first and the last of the "
        f"{meta['warmup'] + meta['iters'] + 1} steps (same clips)",
        "",
    ]
    return "\n".join(lines + [markdown_table(header, table)])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="all", help=f"comma list: all or {', '.join(c.name for c in CASES)}")
    parser.add_argument("--attention", default=",".join(ATTENTION), type=lambda s: s.split(","), help="full,area")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bf16-autocast", choices=("bf16-autocast", "fp32"),
                        help="bf16-autocast: fp32 weights under bf16 autocast, as V-JEPA 2 trains")  # fmt: skip
    parser.add_argument("--variant", default="large", choices=sorted(VARIANTS))
    parser.add_argument("--area-kernel", default="auto", choices=("auto", "dense", "varlen", "mask"))
    parser.add_argument("--activation-checkpointing", action="store_true", help="recompute blocks in backward")
    add_run_args(parser, "bench_ssl", "tiny model and inputs: a CPU smoke run of every path")
    args = resolve_run_args(parser.parse_args(argv), "bench_ssl")
    bad = [a for a in args.attention if a not in ATTENTION]
    if bad:
        parser.error(f"unknown --attention {bad}; choose from {ATTENTION}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available: use --tiny --device cpu for a smoke run")
    if not args.tiny and not args.device.startswith("cuda"):
        print("warning: a full-size run on CPU takes very long; did you mean --tiny?", file=sys.stderr)
    return args


def main(argv=None) -> dict:
    return run_benchmark(parse_args(argv), run, report)


if __name__ == "__main__":
    main()
