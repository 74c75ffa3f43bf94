#!/usr/bin/env bash
# Judge what scripts/gpu/lina.sh brought back, here on the CPU (pocketsphinx, the codec, the corpus):
#   bash scripts/gpu/lina_judge.sh <files_at folder> [out dir]
# Run from a repo root whose data/lina_speech holds the embedded corpus and codec (codec-92b9d215, its corpus).
# Prints: the GPU training metrics (vs the unigram baseline), the throughput table, and the judge's table
# (WER of generated held-out sentences vs the original and codec-resynthesis ceilings; IST similarity untuned vs
# tuned on the held-out voice). Writes judge.json, throughput.md beside the unpacked results in [out dir].
# Takes ~5-15 min on 2 busy cores (~400 pocketsphinx transcriptions, Griffin-Lim decoding).
set -eu
IN=${1:?usage: lina_judge.sh <files_at folder> [out dir]}
DEST=${2:-/tmp/lina_judge}
PY=${PY:-.venv/bin/python}
CODEC=${LINA_CODEC:-data/lina_speech/codec-92b9d215}
TAR=$(find "$IN" -name lina.tar.gz | head -1)
[ -n "$TAR" ] || { echo "no lina.tar.gz under $IN"; exit 1; }
mkdir -p "$DEST"
tar -xzf "$TAR" -C "$DEST"
"$PY" - "$DEST/res" <<'EOF'
import json, sys
from pathlib import Path
res = Path(sys.argv[1])
print("GPU:", (res / "gpu.txt").read_text().strip() if (res / "gpu.txt").is_file() else "?")
for m in sorted(res.glob("metrics_*.json")):
    d = json.loads(m.read_text())
    print(f"\n{m.stem}: {d['epochs']} epochs, {d['steps']} steps, {d['train_seconds']:.0f} s; best val/loss"
          f" {d['monitor']['best']:.4f}")
    for split in ("val", "test"):
        s = d[split]
        if s:
            print(f"  {split}: loss {s['loss']:.4f} (unigram {s['unigram_loss']:.4f})  acc {s['acc']:.4f}"
                  f" (unigram {s['unigram_acc']:.4f})  top10 {s['top10']:.4f}")
log = res / "throughput.log"
rows = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")] if log.is_file() else []
if rows:
    lines = ["| frames | arch | tokens/s | carried MB | peak CUDA MB |", "| ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        peak = r.get("peak_cuda_bytes", 0) / 1e6
        lines.append(f"| {r['frames']} | {r['arch']} | {r['tokens_per_s']:.0f} | {r['carried_bytes'] / 1e6:.2f} | {peak:.0f} |")
    (res / "throughput.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
EOF
if [ -f "$DEST/res/speech/speech.json" ]; then
  "$PY" -m apps.lina_speech.judge --speech "$DEST/res/speech" --codec "$CODEC" --out "$DEST/res/judge.json" \
    2>&1 | grep -v '^{'
fi
echo "results: $DEST/res"
