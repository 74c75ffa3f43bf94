#!/usr/bin/env bash
# What session 15's call (scripts/gpu/medical_and_dmer.sh) left without a test figure, in one device call (~8 min):
# NestedMorph at the paper's size (experiment=nestedmorph_paper, 64^3) beside dmer's PDMER (module.maml=true,
# first order), each trained for what its BUDGET leaves and then tested. Carry .whl, _device, data/dmer_device.tar.
#   source _device/scripts/prelude.sh; OUT=$OUT bash scripts/gpu/paper_and_pdmer.sh
# Everything is packed into $OUT/results.tgz (a call brings back at most 8 files); summaries are printed.
set -u
: "${OUT:?set OUT}"
BACK=$OUT
OUT=$(mktemp -d /tmp/results.XXXXXX)
export OUT
PAPER_ONLY=1 BUDGET=470 TEST_PAD=150 WORKERS=6 timeout -k 5 540 bash scripts/gpu/nestedmorph.sh > "$OUT/nestedmorph.log" 2>&1 &
MAML_ONLY=1 BUDGET=400 timeout -k 5 540 bash scripts/gpu/dmer.sh > "$OUT/dmer.log" 2>&1 &
wait
cat "$OUT"/*.log
tar -C "$OUT" -czf "$BACK/results.tgz" .
