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
#              (benchmarks/profile_summary.py), with the rest of the output, and
#              writes our compiled programs' optimised HLO under OUT_DIR/hlo/.
# F32=0        skips the float32 rows (a shorter run of the bf16 goals).
# ABLATIONS=1  also measures the earlier changes one by one (XLA's attention instead
#              of cuDNN's; XLA's Triton GEMMs back on).
# PARTS=1      also times our e5-base bf16 step with each part replaced by a stand-in
#              (benchmarks/step_parts.py: attention's core, GELU, LayerNorm, losses,
#              AdamW), into OUT_DIR/parts.jsonl; about 6 compilations more.
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

# One engine per process, so no rounds to alternate: one round of ten timed calls (one: QUICK).
timed=(--rounds=1 --repeats=10)
size=()
if [[ "${QUICK:-0}" == "1" ]]; then
  timed=(--rounds=1 --repeats=1)
  size=(--batch=4 --length=16)
fi

if [[ "${TESTS:-0}" == "1" ]]; then
  JAX_PLATFORMS="" XLA_FLAGS="" "$py" -m pytest -q -p no:cacheprovider \
    tests/models/test_attention.py tests/training/test_step_lowering.py 2>&1 | tail -25 \
    || echo "== GPU tests failed (above); the benchmarks run anyway"
fi

report() { "$py" benchmarks/report.py "$results" > "$out/report.md"; }
mkdir -p "$out/hlo"

step() {   # step PRESET [extra flags...]
  local preset="$1"; shift
  for engine in jax torch; do
    local extra=()
    if [[ "$engine" == "jax" && "${PROFILE:-0}" == "1" && "$preset" == *bf16* ]]; then
      extra=(--profile="$(mktemp -d)" --dump_hlo="$out/hlo/step-$preset.txt")
    fi
    echo "== $(date +%T) step $preset $engine $*"
    "$py" benchmarks/distill_step.py --preset="$preset" --engine="$engine" \
      "${timed[@]}" "${size[@]}" --json="$results" "${extra[@]}" "$@"
  done
  report
}

encode() {   # encode MODEL DTYPE BATCH
  for engine in jax torch; do
    local extra=()
    if [[ "$engine" == "jax" && "${PROFILE:-0}" == "1" ]]; then
      extra=(--dump_hlo="$out/hlo/encode-${1#random:}-$2.txt")
    fi
    echo "== $(date +%T) encode $1 $2 $3 $engine"
    "$py" benchmarks/encode.py --model="$1" --dtype="$2" --batch="$3" --length=128 \
      --engine="$engine" "${timed[@]}" "${size[@]}" --json="$results" "${extra[@]}"
  done
  report
}

ours() {   # ours BENCHMARK VARIANT [flags...]: one of our runs under a non-default setting
  local bench="$1" variant="$2"; shift 2
  echo "== $(date +%T) $bench jax, $variant: $*"
  "$py" "benchmarks/$bench.py" --engine=jax "${timed[@]}" --variant="$variant" \
    --json="$results" "$@" "${size[@]}"
}

step base-bf16
encode random:e5-base bfloat16 512
step small-bf16
encode random:e5-small bfloat16 512
# What the erf GELU (optical_jax/models/activations.py) buys: jax.nn.gelu's erfc instead.
ours encode "jax.nn.gelu" --model=random:e5-base --dtype=bfloat16 --batch=512 --length=128 \
  --jax_nn_gelu
ours distill_step "jax.nn.gelu" --preset=base-bf16 --jax_nn_gelu
report
if [[ "${F32:-1}" == "1" ]]; then
  step small-f32
  encode random:e5-small float32 512
fi
if [[ "${ABLATIONS:-0}" == "1" ]]; then
  # What the fused attention buys: our bf16 steps on XLA's attention.
  for preset in small-bf16 base-bf16; do
    ours distill_step "attention xla" --preset="$preset" --attention=xla
  done
  # What the default XLA flags (optical_jax/core/xla_flags.py) buy: Triton GEMMs back on.
  for model in random:e5-base random:e5-small; do
    XLA_FLAGS="--xla_gpu_enable_triton_gemm=true" ours encode "Triton GEMMs on" \
      --model="$model" --dtype=bfloat16 --batch=512 --length=128
  done
fi
report
if [[ "${PARTS:-0}" == "1" ]]; then
  echo "== $(date +%T) step parts base-bf16"
  # Every copy of the step lives in one process here, alternating round by round.
  parts=(--rounds=3 --repeats=5)
  if [[ "${QUICK:-0}" == "1" ]]; then parts=(--rounds=1 --repeats=1); fi
  "$py" benchmarks/step_parts.py --preset=base-bf16 "${parts[@]}" "${size[@]}" \
    --json="$out/parts.jsonl"
fi
cat "$out/report.md"
