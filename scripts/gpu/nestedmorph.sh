#!/usr/bin/env bash
# nestedmorph on one GPU (issue 21), <= 340 s of device time. Run from the repo root (branch h-nestedmorph merged):
#   bash scripts/gpu/nestedmorph.sh            ($OUT must be set)
# Nothing to carry: the 32^3 and 64^3 brain cubes are built on the device (a few seconds each) from the nilearn
# wheel's MNI152 and /usr/share/mricron/templates (Colin27, the macaque), which the prelude copies there.
# Phases (each under its own timeout), all under trainer=gpu's bf16-mixed (the warp and LNCC now run in fp32
# inside it; set PREC=32 to force fp32 everywhere):
#   1. the default config, NestedMorph, training capped at T seconds (+trainer.max_time), 200 fresh pairs an epoch,
#      and beside it, as a second process on the same GPU, MONAI's VoxelMorph (model.arch=voxelmorph): equal training
#      time, same data, loss and metrics; every run also logs the identity (no registration) as *_identity;
#   2. with the seconds left (at least 40): experiment=nestedmorph_paper (64^3, dims 48..384), capped likewise.
# Back: $OUT/nestedmorph/summary.json (compact, also printed: test Dice / SSIM / HD95 / SDlogJ / folding, synthetic
# and real pairs, identity, pairs/s, steps) and each run's metrics.json.
# CPU check: TINY=1 OUT=/tmp/x PY=.venv/bin/python bash scripts/gpu/nestedmorph.sh
set -u
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
: "${OUT:?set OUT}"
W=$(mktemp -d /tmp/nestedmorph.XXXXXX)
R=$OUT/nestedmorph
mkdir -p "$R"
COMMON=(app=nestedmorph "paths.data_dir=$W/data" callbacks.progress_bar=null max_epochs=100)
PAPER=(experiment=nestedmorph_paper)
if [ "${TINY:-0}" = 1 ]; then
  COMMON+=(trainer=cpu data.train_pairs=4 data.val_pairs=1 data.test_pairs=1 model.dims=[8,16,32,64]
           model.decoder_depth=1)
  PAPER+=(data.batch_size=1)
  BUDGET=1800; T=20; PAD=600  # a loaded CPU: start-up, the cube build and the test pairs take minutes
else
  COMMON+=(trainer=gpu data.num_workers=${WORKERS:-4} data.train_pairs=200)
  [ "${PREC:-}" = 32 ] && COMMON+=(trainer.precision=32)
  BUDGET=${BUDGET:-330}; T=${T:-55}; PAD=${PAD:-120}  # start-up, cube build and test pairs under load
fi
nvidia-smi --query-gpu=name --format=csv,noheader > "$R/gpu.txt" 2>/dev/null
hms() { printf '00:00:%02d:%02d' $(($1 / 60)) $(($1 % 60)); }

RUNS=("nestedmorph model.arch=nestedmorph" "voxelmorph model.arch=voxelmorph")
# FP32=1: a third process, NestedMorph in fp32 (trainer.precision=32), to tell bf16's share of the GPU's lead per step
[ "${FP32:-0}" = 1 ] && RUNS+=("nestedmorph_fp32 model.arch=nestedmorph ++trainer.precision=32")
[ "${PAPER_ONLY:-0}" = 1 ] && RUNS=()  # phase 2 alone (scripts/gpu/paper_and_pdmer.sh)
for run in "${RUNS[@]}"; do
  read -r name overrides <<< "$run"
  timeout -k 10 $((T + PAD)) "$PY" -m common.pipeline.train "${COMMON[@]}" $overrides "+trainer.max_time=$(hms $T)" "paths.runs_dir=$W/runs/$name" \
    > "$R/train_$name.log" 2>&1 &
done
wait
echo "phase 1 (default, ${#RUNS[@]} runs side by side, ${T}s of training each): done after ${SECONDS}s"
TEST_PAD=${TEST_PAD:-120}  # start-up and the 64^3 test pairs (~60-90 s alone)
LEFT=$((BUDGET - SECONDS - TEST_PAD))
if [ "$LEFT" -ge 40 ]; then
  timeout -k 10 $((LEFT + TEST_PAD)) "$PY" -m common.pipeline.train "${COMMON[@]}" "${PAPER[@]}" "+trainer.max_time=$(hms $LEFT)" "paths.runs_dir=$W/runs/paper" \
    > "$R/train_paper.log" 2>&1
  echo "phase paper (64^3, ${LEFT}s of training): rc $? after ${SECONDS}s"
fi

"$PY" - "$W/runs" "$R" <<'PY'
import json, shutil, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
summary = {}
keys = ("dice", "ssim", "hd95", "sdlogj", "folding")
for curve in runs.rglob("metrics.csv"):  # val Dice by epoch, also of a run killed before its test
    shutil.copy(curve, out / f"curve_{curve.relative_to(runs).parts[0]}.csv")
for path in sorted(runs.rglob("metrics.json")):
    m = json.loads(path.read_text())
    name = path.relative_to(runs).parts[0]  # nestedmorph | voxelmorph | nestedmorph_fp32 (32^3) | paper (64^3)
    keep = {k: m.get(k) for k in ("device", "epochs", "steps", "train_seconds", "train_samples_per_s", "monitor")}
    test = m.get("test") or {}
    for suffix in ("", "_real"):
        keep["test" + suffix] = {k: round(test[k + suffix], 4) for k in keys if k + suffix in test}
        keep["identity" + suffix] = {
            k: round(test[f"{k}_identity{suffix}"], 4) for k in keys if f"{k}_identity{suffix}" in test
        }
    summary[name] = keep
    shutil.copy(path, out / f"metrics_{name}.json")
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
PY
echo "done after ${SECONDS}s"
