#!/usr/bin/env bash
# Cloud TPU VM lifecycle for optical_jax: create, install, run on every worker, logs, delete.
#
#   launch/tpu.sh create                     # TPU VM (or QUEUED=1: a queued resource)
#   launch/tpu.sh install                    # copy this checkout, pip install on all workers
#   launch/tpu.sh run --config=configs/demo.py --workdir=/mnt/gcs/runs/demo
#   launch/tpu.sh logs                       # follow worker 0
#   launch/tpu.sh delete
#   launch/tpu.sh --dry-run all --config=... # print every gcloud command, run nothing
#
# Settings (environment): TPU_NAME, ZONE, ACCELERATOR_TYPE (v5litepod-8, v4-32, ...),
# RUNTIME_VERSION, PROJECT (optional), QUEUED=1 for a queued resource. The workdir must be
# shared by all workers and outlive the VM: e.g. a bucket mounted with gcsfuse at /mnt/gcs.
set -euo pipefail

TPU_NAME=${TPU_NAME:-optical-jax}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
DRY_RUN=${DRY_RUN:-0}
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
CMD=${1:-}; shift || true

gc() {  # a gcloud command, or its text with --dry-run
  local args=("$@")
  [[ -n "${PROJECT:-}" ]] && args+=("--project=${PROJECT}")
  if [[ "$DRY_RUN" == 1 ]]; then
    printf 'gcloud'; printf ' %q' "${args[@]}"; printf '\n'
  else
    gcloud "${args[@]}"
  fi
}
ssh_all() { gc compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"; }

create() {
  if [[ "${QUEUED:-0}" == 1 ]]; then
    gc compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION"
  else
    gc compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION"
  fi
}
install() {
  local here; here=$(cd "$(dirname "$0")/.." && pwd)
  gc compute tpus tpu-vm scp --recurse "$here" "$TPU_NAME":~/optical_jax --zone="$ZONE" --worker=all
  ssh_all "pip install -U 'jax[tpu]' && pip install -e ~/optical_jax'[demo]'"
}
run() {  # the same command on every worker; each bootstraps through run_tpu.sh
  local args; args=$(printf ' %q' "$@")
  ssh_all "cd ~/optical_jax && nohup bash launch/run_tpu.sh${args} > ~/optical_jax.log 2>&1 &"
}
logs() { gc compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 --command="tail -f ~/optical_jax.log"; }
delete() {
  if [[ "${QUEUED:-0}" == 1 ]]; then
    gc compute tpus queued-resources delete "$TPU_NAME" --zone="$ZONE" --force --quiet
  else
    gc compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
  fi
}

case "$CMD" in
  create|install|logs|delete) "$CMD" ;;
  run) run "$@" ;;
  all) create; install; run "$@"; logs ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
