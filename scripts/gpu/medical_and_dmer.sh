#!/usr/bin/env bash
# One device call for issues 21 and 23 (when device starts are scarce): scripts/gpu/medical.sh (transdae +
# nestedmorph) beside scripts/gpu/dmer.sh on one GPU. Up to six training processes share the GPU and 16 host cores,
# so every throughput in it is a lower bound of the app alone. Carry .whl, _device, data/dmer_device.tar.
#   source _device/scripts/prelude.sh; OUT=$OUT bash scripts/gpu/medical_and_dmer.sh
set -u
: "${OUT:?set OUT}"
BUDGET=500 bash scripts/gpu/medical.sh > "$OUT/medical.log" 2>&1 &
P1=240 BUDGET=480 bash scripts/gpu/dmer.sh > "$OUT/dmer.log" 2>&1 &
wait
cat "$OUT"/*.log
