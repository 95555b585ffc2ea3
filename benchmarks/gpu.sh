#!/usr/bin/env bash
# The GPU benchmark set in one command: the distillation step and the encoder, ours
# against PyTorch, each engine in its own process (a GPU's memory belongs to one), on
# random weights in the shapes of multilingual-e5-small and -base (no model files).
#
#   benchmarks/gpu.sh [OUT_DIR]            # results.jsonl and report.md in OUT_DIR
#
# WHEELS=dir installs missing packages from a wheel directory first (machines with no
# network: ott-jax, ml-collections, ir-measures, tensorboardX, jaxopt as cp312 wheels).
# QUICK=1 runs each problem small and once (a smoke check of the script on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/optical_jax_bench}}"
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"

if [[ -n "${WHEELS:-}" ]]; then
  python -m pip install --quiet --no-index --find-links "$WHEELS" ott-jax ml-collections \
    ir-measures tensorboardX jaxopt
fi
python -m pip install --quiet --no-deps --no-build-isolation -e . >/dev/null

repeats=5
step_presets=(small-f32 small-bf16 base-bf16)
encode_problems=("random:e5-small bfloat16 512" "random:e5-base bfloat16 512"
                 "random:e5-small float32 512")
size=()
if [[ "${QUICK:-0}" == "1" ]]; then
  repeats=1
  size=(--batch=4 --length=16)
fi

for preset in "${step_presets[@]}"; do
  for engine in jax torch; do
    XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/distill_step.py \
      --preset="$preset" --engine="$engine" --repeats="$repeats" "${size[@]}" \
      --json="$results"
  done
done
for problem in "${encode_problems[@]}"; do
  read -r model dtype batch <<< "$problem"
  for engine in jax torch; do
    XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/encode.py --model="$model" \
      --dtype="$dtype" --batch="$batch" --length=128 --engine="$engine" \
      --repeats="$repeats" "${size[@]}" --json="$results"
  done
done
python benchmarks/report.py "$results" | tee "$out/report.md"
