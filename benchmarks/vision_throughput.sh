#!/usr/bin/env bash
# Training throughput of the vision apps' defaults: `trainer=gpu` on one GPU against the same run on 2 CPU cores.
# Usage: bash benchmarks/vision_throughput.sh FASHION_MNIST_DIR OUT_DIR [CPU_IMAGES]
# The GPU runs are the full defaults (bivit: the full-precision teacher); the CPU runs train the same model on
# the first CPU_IMAGES training images (default 8192) pinned to cores 0-1, at the same time as the GPU runs, which
# are pinned to cores 8-15. Both read `train_samples_per_s` from metrics.json (training batches only).
set -euo pipefail
root=$1 out=$2 cpu_images=${3:-8192}
work=${WORK:-$out/work}  # run folders (many files); logs and the summary go to OUT
PY=${PY:-python3}
mkdir -p "$out"
common=(callbacks.progress_bar=null "data.root=$root" "paths.root_dir=$work" seed=42)
for app in biformer fmvit bivit; do
  OMP_NUM_THREADS=2 timeout 300 taskset -c 0-1 $PY -m common.pipeline.train app=$app trainer=cpu "${common[@]}" \
    "hydra.run.dir=$work/runs/$app/cpu" max_epochs=1 data.limit_train=$cpu_images >"$out/$app-cpu.log" 2>&1 &
  timeout 300 taskset -c 8-15 $PY -m common.pipeline.train app=$app trainer=gpu "${common[@]}" data.num_workers=6 \
    "hydra.run.dir=$work/runs/$app/gpu" >"$out/$app-gpu.log" 2>&1 || true
  wait || true
done
$PY - "$out" "$work" <<'PY'
import json, sys
from pathlib import Path
out, work = Path(sys.argv[1]), Path(sys.argv[2])
rows = {}
for app in ("biformer", "fmvit", "bivit"):
    m = {k: json.loads((work / f"runs/{app}/{k}/metrics.json").read_text()) for k in ("cpu", "gpu")}
    rows[app] = {k: {f: m[k][f] for f in ("train_samples_per_s", "train_seconds", "epochs", "device")} | {"test_acc": m[k]["test"]["acc"]} for k in m}
    c, g = m["cpu"]["train_samples_per_s"], m["gpu"]["train_samples_per_s"]
    print(f"{app:9s} cpu(2 cores) {c:9.1f} img/s   gpu {g:9.1f} img/s   x{g / c:6.1f}   gpu test acc {m['gpu']['test']['acc']:.4f}"
          f"  gpu train_seconds {m['gpu']['train_seconds']:.1f}")
(out / "vision_throughput.json").write_text(json.dumps(rows, indent=2) + "\n")
PY
