#!/usr/bin/env bash
# Issue 21 in one device call: scripts/gpu/transdae.sh and scripts/gpu/nestedmorph.sh side by side on one GPU,
# each with BUDGET seconds (default 520), so that both paper-size phases get minutes, not seconds (FP32=1 adds an
# fp32 NestedMorph). Up to five training processes share the GPU and 16 host cores at once: throughputs are lower
# than either app alone.
#   source _device/scripts/prelude.sh; OUT=$OUT bash scripts/gpu/medical.sh
set -u
: "${OUT:?set OUT}"
export BUDGET=${BUDGET:-520} WORKERS=${WORKERS:-3} FP32=${FP32:-0}
T=${T:-140} bash scripts/gpu/nestedmorph.sh > "$OUT/nestedmorph.log" 2>&1 &
bash scripts/gpu/transdae.sh > "$OUT/transdae.log" 2>&1 &
wait
tail -n 3 "$OUT"/*.log
