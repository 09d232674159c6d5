#!/usr/bin/env bash
# A first session on a machine with one CUDA GPU, in one command of under 8 minutes: the CUDA-only tests, then the
# training, test-time and metric measurements of benchmarks/gpu_check.py. Run from anywhere after `make venv`:
#
#   scripts/gpu_check.sh --out runs/gpu-check                       # on the GPU machine
#   scripts/gpu_check.sh --out runs/gpu-check-cpu --device cpu --quick  # the same table, tiny, on a CPU
#
# Writes into --out: gpu_check.md (the one table), gpu_check.json (every figure), gpu_check.log (the measurements'
# output), cuda-tests.log and cuda-tests.xml (pytest -m cuda). PYTHON picks the interpreter (default .venv's);
# --budget-s S (default 470) is the whole command's: a row starts only if it can end within it.
set -euo pipefail

out="" device="" quick="" total=470
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --device) device="${2:?--device needs cuda or cpu}"; shift 2 ;;
    --quick) quick="--quick"; shift ;;
    --budget-s) total="${2:?--budget-s needs seconds}"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | cut -c3-; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "error: --out DIR is required (see --help)" >&2; exit 2; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"  # --out is relative to where the command was given; the rest runs from the repository
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
started=$(date +%s)

# 1. The CUDA-only tests: skipped, and counted as such, without a CUDA device. A failure goes into the table; the
#    measurements still run.
"$py" -m pytest -m cuda -q -p no:cacheprovider --junitxml="$out/cuda-tests.xml" >"$out/cuda-tests.log" 2>&1 || true

# 2. The measurements, in what is left of the budget.
budget=$((total - $(date +%s) + started))
"$py" -m benchmarks.gpu_check --out "$out" --tests-xml "$out/cuda-tests.xml" --budget-s "$budget" \
  ${device:+--device "$device"} $quick 2>&1 | tee "$out/gpu_check.log"
