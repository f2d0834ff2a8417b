#!/usr/bin/env bash
# One GPU session's worth of issue-3 evidence, each part under the device tool's 10-minute call limit:
#   bash benchmarks/gpu_session.sh checks     # CUDA kernel tests + attention-only table (~minutes)
#   bash benchmarks/gpu_session.sh eager      # ViT-L encoder table, eager
#   bash benchmarks/gpu_session.sh compiled-train | compiled-infer
#   bash benchmarks/gpu_session.sh ssl        # issue 12: SSL step full vs area (ViT-L, 4 configs) + a bf16 demo anneal
# Results go to $OUT when set (the device tool's folder), else benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
case "${1:-checks}" in
  checks)
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$DEST/gpu.txt"
    $PY -c "import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__)" | tee -a "$DEST/gpu.txt"
    $PY -m pytest -q -p no:cacheprovider tests/modeling/test_area_gpu.py tests/modeling/test_area.py 2>&1 | tee "$DEST/gpu_tests.log"
    $PY benchmarks/bench_attention.py --out "$DEST" ;;
  eager)
    $PY benchmarks/bench_encoder.py --no-compile --out "$DEST" --name encoder_eager ;;
  compiled-train)
    $PY benchmarks/bench_encoder.py --cases train --modes compile,compile-fullgraph --out "$DEST" --name encoder_train_compiled ;;
  compiled-infer)
    $PY benchmarks/bench_encoder.py --cases infer --modes compile,compile-fullgraph --out "$DEST" --name encoder_infer_compiled ;;
  ssl)
    $PY benchmarks/bench_ssl.py --out "$DEST"
    # The example's GPU path (bf16 autocast, pinned memory, workers) on the demo data, 100 steps; it needs PyAV.
    if $PY -c "import av" 2>/dev/null; then
      $PY examples/ssl_anneal.py --steps 100 --num-workers 4 --no-progress --report-to none \
        --demo-data-root "$DEST/demo_data" --output-dir "$DEST/demo_ssl" --overwrite 2>&1 | tail -n 3 | tee "$DEST/ssl_demo.txt"
    else
      echo "no PyAV on this machine: the demo anneal (video generation and decoding) is skipped" | tee "$DEST/ssl_demo.txt"
    fi ;;
  *) echo "usage: $0 {checks|eager|compiled-train|compiled-infer|ssl}" >&2; exit 2 ;;
esac
