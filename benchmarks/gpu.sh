#!/usr/bin/env bash
# The GPU benchmark set in one command: the distillation step and the encoder, ours
# against PyTorch, each engine in its own process (a GPU's memory belongs to one), on
# random weights in the shapes of multilingual-e5-small and -base (no model files).
#
#   benchmarks/gpu.sh [OUT_DIR]     # results.jsonl and report.md in OUT_DIR
#
# WHEELS=dir   installs missing packages from a wheel directory first, into a private
#              folder on PYTHONPATH (machines with no network: ott-jax, ml-collections,
#              jaxopt, ir-measures, tensorboardX as cp312 wheels).
# PROFILE=1    also traces our bf16 steps and prints where the device time goes
#              (benchmarks/profile_summary.py), with the rest of the output.
# TESTS=1      first runs the tests that only mean something on a GPU (cuDNN attention
#              against XLA's; no bf16 scatter in the lowered step).
# PYTHON=...  the interpreter (default python3).
# QUICK=1      runs each problem small and once (a smoke check of the script on a CPU).
#
# The problems run most important first, and report.md is rewritten after each, so a
# run cut short still reports what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/optical_jax_bench}}"
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"   # the interpreter that has jax and torch

if [[ -n "${WHEELS:-}" ]]; then
  site="$(mktemp -d)"
  "$py" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" \
    "$WHEELS"/*.whl
  export PYTHONPATH="$PYTHONPATH:$site"
fi
"$py" - <<'EOF'
import jax, torch
print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__}")
EOF

repeats=10
size=()
if [[ "${QUICK:-0}" == "1" ]]; then
  repeats=1
  size=(--batch=4 --length=16)
fi

if [[ "${TESTS:-0}" == "1" ]]; then
  JAX_PLATFORMS="" XLA_FLAGS="" "$py" -m pytest -q -p no:cacheprovider \
    tests/models/test_attention.py tests/training/test_step_lowering.py 2>&1 | tail -25 \
    || echo "== GPU tests failed (above); the benchmarks run anyway"
fi

report() { "$py" benchmarks/report.py "$results" > "$out/report.md"; }

step() {   # step PRESET [extra flags...]
  local preset="$1"; shift
  for engine in jax torch; do
    local extra=()
    if [[ "$engine" == "jax" && "${PROFILE:-0}" == "1" && "$preset" == *bf16* ]]; then
      extra=(--profile="$(mktemp -d)")
    fi
    echo "== $(date +%T) step $preset $engine $*"
    "$py" benchmarks/distill_step.py --preset="$preset" --engine="$engine" \
      --repeats="$repeats" "${size[@]}" --json="$results" "${extra[@]}" "$@"
  done
  report
}

encode() {   # encode MODEL DTYPE BATCH
  for engine in jax torch; do
    echo "== $(date +%T) encode $1 $2 $3 $engine"
    "$py" benchmarks/encode.py --model="$1" --dtype="$2" --batch="$3" --length=128 \
      --engine="$engine" --repeats="$repeats" "${size[@]}" --json="$results"
  done
  report
}

step small-bf16
step base-bf16
encode random:e5-small bfloat16 512
encode random:e5-base bfloat16 512
step small-f32
encode random:e5-small float32 512
# What the fused attention buys: our bf16 steps on XLA's attention.
for preset in small-bf16 base-bf16; do
  echo "== $(date +%T) step $preset jax, attention xla"
  "$py" benchmarks/distill_step.py --preset="$preset" --engine=jax --attention=xla \
    --repeats="$repeats" "${size[@]}" --json="$results"
done
# What the default XLA flags (optical_jax/core/xla_flags.py) buy: XLA's Triton GEMMs back on.
for model in random:e5-base random:e5-small; do
  echo "== $(date +%T) encode $model bfloat16 jax, Triton GEMMs on"
  XLA_FLAGS="--xla_gpu_enable_triton_gemm=true" "$py" benchmarks/encode.py --model="$model" \
    --dtype=bfloat16 --batch=512 --length=128 --engine=jax --repeats="$repeats" "${size[@]}" \
    --variant="Triton GEMMs on" --json="$results"
done
report
cat "$out/report.md"
