"""XLA flags this package sets by default, where the user has not set them.

XLA reads `XLA_FLAGS` once, when JAX first initialises a backend, so `apply()`
must run before the first computation (`main.py` calls it first thing; the
benchmarks too, so they time what a user runs).

`--xla_gpu_enable_triton_gemm=false`: XLA may emit a matrix product (and what
it fuses around it) as a Triton kernel instead of calling cuBLAS. On an H100
(jax 0.11.2, CUDA 13), for our encoder's shapes, cuBLAS's kernels were faster:
the bf16 encoder forward 13.8k -> 15.1k texts/s (e5-base, 512 x 128) and 31.1k
-> 35.3k (e5-small); the bf16 distillation step (e5-base, 128 x 128) 39.7 ->
37.1 ms. The flag is a GPU option; CPU and TPU backends ignore it.

A user's own setting of a flag always wins: a flag named in `XLA_FLAGS`
already is left as it is (set `--xla_gpu_enable_triton_gemm=true` to undo it).
"""
import os

DEFAULTS = {"xla_gpu_enable_triton_gemm": "false"}


def with_defaults(flags: str) -> str:
  """`flags` (an XLA_FLAGS string) plus each of DEFAULTS whose name it lacks."""
  named = {f.lstrip("-").split("=", 1)[0] for f in flags.split()}
  extra = [f"--{name}={value}" for name, value in DEFAULTS.items() if name not in named]
  return " ".join([flags.strip(), *extra]).strip()


def apply() -> str:
  """Sets `XLA_FLAGS` in this process's environment to include the defaults;
  returns the new value."""
  os.environ["XLA_FLAGS"] = with_defaults(os.environ.get("XLA_FLAGS", ""))
  return os.environ["XLA_FLAGS"]
