#!/usr/bin/env bash
# Everything that needs a GPU, in one command for a bare lent machine (README "GPU runbook",
# docs/core_attention.md): the package is installed with --no-deps (no internet), then every GPU
# test and benchmark runs under its own timeout; tables land in benchmarks/results/*_<device>.md
# and, when $OUT is set (the device tool), are copied there. A failed or timed-out step is reported
# and the next one still runs. Budgets (H100/H200) sum to < 8 min, so the suite fits twice in 15 min
# of device time; pass a step's budget in seconds as its first argument.
set -u
cd "$(dirname "$0")/.."
pip install --quiet --no-deps -e . || exit 1
export PYTHONUNBUFFERED=1
status=0
step() {  # step <timeout-s> <command...>
    local limit=$1; shift
    echo "=== [$limit s] $*"; local t0=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@"; local rc=$?
    [ $rc -eq 0 ] || { echo "FAILED (rc $rc): $*"; status=1; }
    echo "=== took $((SECONDS - t0)) s"
}
# every GPU test; the device image has torch, triton, timm and lightning but not the music stack,
# so the suites whose GPU tests need only those are named (budget: 90 s, mostly flex compiles)
step 120 python -m pytest -q -p no:cacheprovider -m gpu tests/core_attention tests/reliability/test_half_precision.py
# the relative-attention kernel: kernel vs skewing vs flex with precomputed logits vs SDPA-flash (budget: 150 s)
step 180 python benchmarks/relative_attention.py
# flex forms of every bias term vs no bias, fwd and fwd+bwd (budget: 90 s, rows past it are listed as skipped)
step 120 python benchmarks/flex_terms.py --budget-s 80
step 60 python benchmarks/ripo_attention.py --device cuda
# MatchAttention (stereo): reference gather vs the fused kernel, fwd and fwd+bwd (budget: 45 s)
step 60 python benchmarks/match_attention.py
# BoxRPB (Plain-DETR): materialized bias vs flex vs feature columns at 1800 queries, 84x50 (budget: 45 s)
step 60 python benchmarks/boxrpb_memory.py --device cuda
step 60 python benchmarks/vision_classification.py --device cuda --batch-size 64 --train-batch-size 32 --iters 20 --amp
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp benchmarks/results/*.md "$OUT"/; fi
exit $status
