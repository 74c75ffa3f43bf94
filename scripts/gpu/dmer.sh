#!/usr/bin/env bash
# dmer on one GPU (issue 23), <= 200 s of device time. Run from the repo root (branch h-dmer merged):
#   bash scripts/gpu/dmer.sh            ($OUT must be set)
# Carry: data/dmer_device.tar (~7 MB): the embedded music21_rendered set WITHOUT its audio (labels.npz,
# pieces.json, annotators.json) and the log-mel and chroma caches the default config trains on; no fluidsynth or
# audio is needed there.
# Make it here (the set built by `make train app=dmer`):
#   bash scripts/gpu/dmer.sh pack
# Phases (each under its own timeout):
#   1. the default config (20 epochs), DSAML and the plain BiLSTM side by side in one multirun; each test scores
#      per-piece and pooled CCC, the per-step mean predictor and one-piece personalisation of the 6 held-out
#      annotators (general vs adapted RMSE/CCC and their spread);
#   2. with the seconds left (at least 40): PDMER, module.maml=true first_order=true, capped by trainer.max_time.
# Back: $OUT/dmer/summary.json (compact, also printed) and each run's metrics.json + metrics.csv.
# CPU check: TINY=1 OUT=/tmp/x PY=.venv/bin/python bash scripts/gpu/dmer.sh
set -u
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
PACK=data/dmer_device.tar
MELS=mel128-fft4096-hop0.2-sr22050  # the default config's log-mel and chroma caches
CHROMA=chroma-hop0.2-sr22050
if [ "${1:-}" = pack ]; then
  corpus=$(cd data && ls -d dmer/music21_rendered-v1-p150-* | head -1)
  tar -C data -cf "$PACK" "$corpus"/{.complete,labels.npz,pieces.json,annotators.json} "$corpus/$MELS" "$corpus/$CHROMA"
  ls -l "$PACK"; exit 0
fi
: "${OUT:?set OUT}"
W=$(mktemp -d /tmp/dmer.XXXXXX)
R=$OUT/dmer
mkdir -p "$R" "$W/data"
tar -C "$W/data" -xf "$PACK" || { echo "no $PACK: carry it (see the header)"; exit 1; }
COMMON=(app=dmer "paths.data_dir=$W/data" "paths.runs_dir=$W/runs" callbacks.progress_bar=null data.num_workers=4)
if [ "${TINY:-0}" = 1 ]; then
  COMMON+=(trainer=cpu max_epochs=1 +trainer.limit_train_batches=2 +trainer.limit_val_batches=1 model.dim=16
           model.ffn_dim=16 module.personal_supports=1 module.adapt_steps=2 data.num_workers=0)
  P1=1200; BUDGET=1500  # a loaded CPU
else
  COMMON+=(trainer=gpu)
  P1=${P1:-150}; BUDGET=${BUDGET:-190}  # P1=240 BUDGET=480 beside medical.sh (scripts/gpu/medical_and_dmer.sh)
fi
nvidia-smi --query-gpu=name --format=csv,noheader > "$R/gpu.txt" 2>/dev/null

if [ "${MAML_ONLY:-0}" != 1 ]; then  # MAML_ONLY=1: phase 2 alone (scripts/gpu/paper_and_pdmer.sh)
  timeout -k 10 $P1 "$PY" -m common.pipeline.train -m "${COMMON[@]}" model.arch=dsaml,bilstm > "$R/train_dmer.log" 2>&1
  echo "phase 1 (dsaml, bilstm): rc $? after ${SECONDS}s"
fi
TEST_PAD=${TEST_PAD:-90}  # start-up, the test and its personalisation (~80 s a run in session 15)
LEFT=$((BUDGET - SECONDS - TEST_PAD))
if [ "$LEFT" -ge 40 ]; then
  hms=$(printf '00:00:%02d:%02d' $((LEFT / 60)) $((LEFT % 60)))
  timeout -k 10 $((LEFT + TEST_PAD)) "$PY" -m common.pipeline.train "${COMMON[@]}" module.maml=true module.first_order=true \
    "+trainer.max_time=$hms" > "$R/train_maml.log" 2>&1
  echo "phase 2 (maml, ${LEFT}s): rc $? after ${SECONDS}s"
fi

"$PY" - "$W/runs" "$R" <<'PY'
import json, shutil, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
keys = ["arousal_ccc_pooled", "valence_ccc_pooled", "arousal_ccc", "valence_ccc", "mean_arousal_ccc",
        "mean_valence_ccc", "score", "mean_score", "personal_rmse_general", "personal_rmse_adapted",
        "personal_rmse_gain_std", "personal_ccc_general", "personal_ccc_adapted", "personal_ccc_gain_std",
        "personal_annotators_improved"]
summary = {}
for path in sorted(runs.rglob("metrics.json")):
    m = json.loads(path.read_text())
    cfg = (path.parent / "config.yaml").read_text()
    name = "maml" if "maml: true" in cfg else ("bilstm" if "arch: bilstm" in cfg else "dsaml")
    summary[name] = {"epochs": m["epochs"], "train_seconds": m["train_seconds"], "device": m["device"],
                     "samples_per_s": m["train_samples_per_s"], "val_best_score": m["monitor"]["best"],
                     "test": {k: round(m["test"][k], 4) for k in keys if k in m["test"]}}
    for f in ("metrics.json", "config.yaml", "logs/csv/metrics.csv"):
        if (path.parent / f).is_file():
            shutil.copy(path.parent / f, out / f"{name}_{Path(f).name}")
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PY
