#!/usr/bin/env bash
# One device call for issues 21 and 23 (when device starts are scarce): scripts/gpu/medical.sh (transdae +
# nestedmorph) beside scripts/gpu/dmer.sh on one GPU. Up to six training processes share the GPU and 16 host cores,
# so every throughput in it is a lower bound of the app alone. Carry .whl, _device, data/dmer_device.tar.
#   source _device/scripts/prelude.sh; OUT=$OUT bash scripts/gpu/medical_and_dmer.sh
# A call brings back at most 8 files: everything is packed into $OUT/results.tgz (summaries printed as well).
set -u
: "${OUT:?set OUT}"
BACK=$OUT
OUT=$(mktemp -d /tmp/results.XXXXXX)
export OUT
# each under a hard cap inside the call's 600 s (timeout kills the whole process group), so the packing runs
BUDGET=480 timeout -k 5 550 bash scripts/gpu/medical.sh > "$OUT/medical.log" 2>&1 &
P1=300 BUDGET=480 timeout -k 5 550 bash scripts/gpu/dmer.sh > "$OUT/dmer.log" 2>&1 &
wait
cat "$OUT"/*.log
for f in "$OUT"/*/summary.json; do echo "== $f"; cat "$f"; done
tar -C "$OUT" -czf "$BACK/results.tgz" .
