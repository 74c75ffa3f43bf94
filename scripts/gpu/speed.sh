#!/usr/bin/env bash
# Issue 25's app-level rows on one GPU, ~600 s of device time: Lightning training steps of the apps' own configs,
# eager against compile=true, by benchmarks.app_steps (rows appended to $OUT/bench/app_steps.{json,md}).
#   0. the routing op's host time per call, kernels through the custom ops vs called directly (eager's path), and
#      biformer_tiny at 224 px batch 64: ours eager/compiled against the official code (carry _official/BiFormer)
#   1. focus_detr at the paper's size (R50, 4 scales, 900 queries, 800 px, batch 2) on embedded images,
#      eager and compiled, and the dense-encoder detector eager
#   2. nestedmorph at the paper's 64^3 (experiment=nestedmorph_paper), eager and compiled
# Needs the device wheels (hydra, omegaconf, lightning, monai, nibabel, nilearn, pycocotools) on the path and the
# mricron templates (nestedmorph's embedded brains). CPU check: TINY=1 OUT=/tmp/x PY=.venv/bin/python bash ...
set -u
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT}"
PY=${PY:-python3}
R=$OUT/bench
mkdir -p "$R"
FD=(experiment=focus_detr_r50_coco data.source=embedded data.root=null data.image_size=800 data.num_train=48
    data.num_val=4 data.num_test=4 data.min_object_size=60 data.max_object_size=320 "data.scales=[800]"
    data.max_size=1333 data.crop_scales=null data.eval_size=800 data.batch_size=2 data.num_workers=4
    "paths.runs_dir=$R/runs")
NM=(experiment=nestedmorph_paper "paths.runs_dir=$R/runs")
STEPS=(--steps 30 --warmup 10)
if [ "${TINY:-0}" = 1 ]; then
  STEPS=(--steps 1 --warmup 1 --trainer cpu)
  FD+=(data.image_size=128 "data.scales=[128]" data.max_size=160 data.eval_size=128 data.min_object_size=16
       data.max_object_size=64 model.num_queries=30 model.num_dn_queries=10 model.num_attn_tokens=20 data.num_workers=0)
  NM+=(data.num_workers=0)
fi
step() { local secs=$1; shift; timeout -k 10 "$secs" "$PY" -m benchmarks.app_steps "${STEPS[@]}" --out "$R" "$@" 2>&1 | tail -3; }
if [ "${TINY:-0}" != 1 ]; then  # the target first: BiFormer-T at batch 64 against the official code
  timeout 45 "$PY" -m benchmarks.routing_host 2>&1 | tail -2
  timeout 200 "$PY" -m benchmarks.app_throughput --batches 64 --models biformer --official _official/BiFormer \
    --out "$R" 2>&1 | tail -8
fi
step 200 --app focus_detr --overrides "${FD[@]}"
step 90 --app focus_detr --compile no --overrides "${FD[@]}" model.dense_encoder=true
step 120 --app nestedmorph --overrides "${NM[@]}"
cat "$R/app_steps.md"
