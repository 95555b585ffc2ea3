#!/usr/bin/env bash
# Per-host bootstrap, run on every TPU worker by tpu.sh: multi-host JAX, then the job.
#   bash launch/run_tpu.sh --config=configs/demo.py --workdir=/mnt/gcs/runs/demo
set -euo pipefail
cd "$(dirname "$0")/.."
# Every worker calls jax.distributed.initialize() (no arguments on Cloud TPU):
# each host then reads its own slice of every batch, and process 0 logs.
export OPTICAL_JAX_DISTRIBUTED=1
export TOKENIZERS_PARALLELISM=false
# --workdir: storage every worker shares and that outlives the VM (a gcsfuse-mounted bucket).
exec python3 -m optical_jax.main "$@"
