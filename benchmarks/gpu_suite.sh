#!/usr/bin/env bash
# Everything that needs a GPU, in one command for a lent machine (see the README's GPU section).
# On the device: bash benchmarks/gpu_suite.sh   -- results land in benchmarks/results/ and, when
# $OUT is set (the device tool), are copied there too. Each step continues past a failure of another.
set -u
cd "$(dirname "$0")/.."
pip install --quiet --no-deps -e . || exit 1
status=0
run() { echo "=== $*"; "$@" || { echo "FAILED: $*"; status=1; }; }
# the device image has torch, triton, timm and lightning but not the music stack: GPU tests live in core_attention
run python -m pytest -q -m gpu tests/core_attention
run python benchmarks/relative_attention.py
run python benchmarks/ripo_attention.py --device cuda
run python benchmarks/vision_classification.py --device cuda --batch-size 64 --train-batch-size 32 --iters 20 --amp
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp benchmarks/results/*.md "$OUT"/; fi
exit $status
