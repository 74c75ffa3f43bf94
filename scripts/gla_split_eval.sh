# Dev only (branch gla-fwd-a-split): one H200 call that decides whether the split fwd_a lands on main.
# Session-6 baseline (main, d9453aa): kernel sum fwd+bwd B4-T2048-H16-D128 1.738 ms (fwd_a 0.435), fla 1.684;
# B1-T8192-H96-D128 fwd 4.365 vs fla 2.140, fwd+bwd 9.837 vs 9.414.
# Carry: .whl (fla_core wheel). Run: bash scripts/gla_split_eval.sh   (writes everything under $OUT)
set -u
mkdir -p /tmp/w
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/fla_core*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD MANYHEADS_ROOT=/tmp/w
timeout 200 python3 -m pytest -q -p no:cacheprovider -m "gpu or not gpu" -rxX tests/common/attention/kernels/test_gla_triton.py > $OUT/tests.txt 2>&1
tail -3 $OUT/tests.txt
timeout 150 python3 -m benchmarks.gla_profile --shapes B4-T2048-H16-D128 --out $OUT/profile.json > $OUT/profile.txt 2>&1
grep -E "total|fwd_a|config" $OUT/profile.txt
timeout 200 python3 -m benchmarks.gla_bench --shapes B1-T8192-H96-D128 --providers ours fla --out $OUT/bench.json > $OUT/bench.txt 2>&1
tail -8 $OUT/bench.txt
