#!/usr/bin/env bash
# Lina-Speech on one GPU (issue 24), within one 10-minute device call. Run from the repo root (branch h-lina merged):
#   bash scripts/gpu/lina.sh            ($OUT must be set)
# Carry: data/lina_speech/tokens-7eeed77e (~25 MB: the large embedded corpus, 4,000 sentences x 6 training voices
# + the held-out voices' 300, encoded by the default codec codec-92b9d215; built here by
# `python -m apps.lina_speech.embedded n_sentences=4000 n_heldout_sentences=300`). No audio stack is needed there:
# the GPU trains on the token table, generates codes and tunes a voice; the codes come back and
# scripts/gpu/lina_judge.sh decodes and judges them here.
# Phases, under one deadline (LINA_TOTAL_S, default 570 s, so that packing always happens inside the call):
#   1. train GLA, experiment=lina_speech_gpu (d512, 4 heads, 4+4 GLA blocks, 40M params, bf16, Triton gla; cosine
#      over 1,800 steps, the guided-attention loss on), capped by trainer.max_time (LINA_TRAIN_S, default 360 s)
#      -> metrics.json (val/test loss, acc, unigram), the curve (train/guide: is the alignment learnt?)
#   2. speak (~130 s on an H100): 30 held-out test sentences with the length window and without it (the official
#      stop rule), IST on flite:rms (LINA_IST_STEPS=200), its 30 ist_test sentences untuned/tuned
#      -> speech.json + speech.npz + voice.safetensors
#   3. optional (LINA_THROUGHPUT_S > 0, measured in session 12): throughput GLA recurrent vs softmax KV cache
#   4. optional (LINA_TRANSFORMER_S > 0): the softmax baseline trained for that many seconds, same recipe
# LINA_ARGS: more overrides for phase 1, e.g. "data.text_units=chars". The default phonemes come from the table
# folder's phonemes.json (made here by one `setup` of the data module with text_units=phonemes; the device has no
# espeak-ng).
# Back: $OUT/lina/summary.json (compact) and $OUT/lina/lina.tar.gz (everything small; no checkpoints): 2 files.
# CPU check: TINY=1 OUT=/tmp/x PY=.venv/bin/python bash scripts/gpu/lina.sh
set -u
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT}"
PY=${PY:-python3}
TOK=${LINA_TOKENS:-data/lina_speech/tokens-7eeed77e}
TRAIN_S=${LINA_TRAIN_S:-360}
IST_STEPS=${LINA_IST_STEPS:-200}
THROUGHPUT_S=${LINA_THROUGHPUT_S:-0}
TRANSFORMER_S=${LINA_TRANSFORMER_S:-0}
W=$(mktemp -d /tmp/lina.XXXXXX)
R=$OUT/lina
mkdir -p "$R" "$W/res"
COMMON=(app=lina_speech experiment=lina_speech_gpu data.source=tokens "data.root=$TOK" "paths.runs_dir=$W/runs"
        callbacks.progress_bar=null)
SLOW=1  # timeouts x SLOW (the CPU check runs on a shared, loaded CPU)
if [ "${TINY:-0}" = 1 ]; then
  SLOW=10; DEV=cpu; SENT=2; IST_STEPS=2; LENGTHS="20 40"; SIZES="--dim 32 --heads 2 --layers 1"
  COMMON+=(trainer=cpu max_epochs=1 model.dim=32 model.num_heads=2 model.n_layer=1 model.text_layers=1
           model.text_heads=2 model.d_blind=16 data.batch_size=4 data.num_workers=0
           +trainer.limit_train_batches=3 +trainer.limit_val_batches=2 +trainer.limit_test_batches=2)
else
  DEV=cuda; SENT=30; LENGTHS="500 1000 2000 4000 8000"; SIZES="--dim 512 --heads 4 --layers 4"
  COMMON+=(trainer=gpu)
fi
END=$(($(date +%s) + ${LINA_TOTAL_S:-570} * SLOW))
budget() {  # seconds a phase may take: $1 wanted, $2 kept for the phases after it (at least 10 s)
  local left=$((END - $(date +%s) - $2))
  echo $(($1 < left ? $1 : (left > 10 ? left : 10)))
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$W/res/gpu.txt" 2>/dev/null

train() {  # $1 name, $2 seconds, $3 seconds kept for what follows, rest: overrides
  local name=$1 secs=$2 keep=$3; shift 3
  local hms; hms=$(printf '00:00:%02d:%02d' $((secs / 60)) $((secs % 60)))
  timeout -k 10 "$(budget $(((secs + 90) * SLOW)) $((keep * SLOW)))" "$PY" -m common.pipeline.train "${COMMON[@]}" \
    "+trainer.max_time=$hms" "$@" > "$W/res/train_$name.log" 2>&1
  echo "train $name: rc $?"
  local run; run=$(readlink -f "$W/runs/lina_speech/latest")
  cp "$run/metrics.json" "$W/res/metrics_$name.json" 2>/dev/null
  cp "$run/logs/csv/metrics.csv" "$W/res/curve_$name.csv" 2>/dev/null
  cp "$run/config.yaml" "$W/res/config_$name.yaml" 2>/dev/null
  CKPT=$run/checkpoints/best.ckpt
}

# shellcheck disable=SC2086
train gla "$TRAIN_S" 170 ${LINA_ARGS:-}  # 170 s kept: speak (113 s on the H100 in session 12, + ~12 s of test_free) and packing
timeout -k 10 "$(budget $((160 * SLOW)) $((10 * SLOW)))" "$PY" -m apps.lina_speech.speak --ckpt "$CKPT" --tokens "$TOK" \
  --out "$W/res/speech" --device $DEV --sentences $SENT --ist-steps "$IST_STEPS" --voice "${LINA_VOICE:-flite:rms}" \
  > "$W/res/speak.log" 2>&1
echo "speak: rc $?"
if [ "$THROUGHPUT_S" -gt 0 ]; then
  # shellcheck disable=SC2086
  timeout -k 10 "$(budget $((THROUGHPUT_S * SLOW)) $((10 * SLOW)))" "$PY" -m apps.lina_speech.throughput --device $DEV \
    $SIZES --lengths $LENGTHS --out "$W/res/throughput.json" > "$W/res/throughput.log" 2>&1
  echo "throughput: rc $?"
fi
if [ "$TRANSFORMER_S" -gt 0 ]; then train transformer "$TRANSFORMER_S" 10 model.arch=transformer; fi

"$PY" - "$W/res" "$R/summary.json" <<'EOF'
import json, sys
from pathlib import Path
res, out = Path(sys.argv[1]), Path(sys.argv[2])
summary = {"gpu": (res / "gpu.txt").read_text().strip() if (res / "gpu.txt").is_file() else None}
for m in sorted(res.glob("metrics_*.json")):
    d = json.loads(m.read_text())
    keep = ("loss", "acc", "top10", "unigram_loss", "unigram_acc")
    summary[m.stem] = {"epochs": d["epochs"], "steps": d["steps"], "train_seconds": d["train_seconds"],
                       "val": {k: round(d["val"].get(k, float("nan")), 4) for k in keep},
                       "test": {k: round(d["test"].get(k, float("nan")), 4) for k in keep}}
if (res / "speech" / "speech.json").is_file():
    info = json.loads((res / "speech" / "speech.json").read_text())
    summary["speak"] = {k: v for k, v in info.items() if k != "sets"}
rows = [json.loads(line) for line in (res / "throughput.log").read_text().splitlines() if line.startswith("{")] \
    if (res / "throughput.log").is_file() else []
summary["throughput"] = [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
out.write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary, indent=1))
EOF
tar -czf "$R/lina.tar.gz" -C "$W" res
ls -l "$R"
