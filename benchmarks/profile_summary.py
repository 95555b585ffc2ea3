"""Where a traced JAX program spends device time: a short table from a profile.

`jax.profiler.trace(dir)` writes an XSpace protobuf (`*.xplane.pb`); this reads
it with `jax.profiler.ProfileData` (no TensorBoard needed) and sums, per name,
the time of the events on the device's op lines ("XLA Ops": one event per HLO
op) and kernel lines (one per CUDA stream). On a CPU there is no device plane;
the host's XLA thunk lines stand in, so the script runs everywhere.

  python benchmarks/profile_summary.py TRACE_DIR [--steps=N] [--top=K]
"""
import argparse
import collections
import glob
import os

from jax.profiler import ProfileData


def _op_lines(space):
  """[(kind, line)] of the device planes; the host's XLA lines without one."""
  planes = list(space.planes)
  device = [p for p in planes if p.name.startswith("/device:")]
  out = []
  for plane in device:
    for line in plane.lines:
      if line.name == "XLA Ops":
        out.append(("op", line))
      elif line.name.startswith("Stream"):
        out.append(("kernel", line))
  if not device:
    for plane in planes:
      if plane.name == "/host:CPU":
        out += [("op", line) for line in plane.lines if line.name.startswith("tf_XLA")]
  return out


# Kernel families by name, first match wins: cuBLAS/cuBLASLt GEMMs ('nvjet',
# 'gemm', 'cutlass'), cuDNN's fused attention, XLA's own fusions (named after
# their HLO: 'loop_...', 'input_...' reductions, 'wrapped_...' single ops).
FAMILIES = (("attention", ("sdpa", "fmha", "flash", "cudnn")),
            ("gemm", ("nvjet", "gemm", "cutlass", "cublas", "xmma", "sm90_", "sm80_")),
            ("reduction fusion", ("input_",)),
            ("elementwise fusion", ("loop_",)),
            ("copy / concat / slice", ("wrapped_", "copy", "concatenate", "slice",
                                        "transpose", "memcpy", "memset")))


def family(name: str) -> str:
  """The family of a kernel name (FAMILIES), 'other' if none matches."""
  low = name.lower()
  for fam, keys in FAMILIES:
    if any(k in low for k in keys):
      return fam
  return "other"


def summarize(trace_dir: str, steps: int = 1, top: int = 20) -> str:
  """Device time per op name and per kernel name, per step, with calls per
  step (XLA reuses one kernel for identical fusions, e.g. every layer's GELU,
  so a kernel name can stand for many ops), and per kernel family.

  Args:
    trace_dir: the directory given to `jax.profiler.trace`.
    steps: how many steps the trace covers (times are divided by it).
    top: rows per table.
  """
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  if not paths:
    raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}")
  space = ProfileData.from_file(paths[-1])
  totals = {"op": collections.Counter(), "kernel": collections.Counter()}
  calls = {"op": collections.Counter(), "kernel": collections.Counter()}
  for kind, line in _op_lines(space):
    for event in line.events:
      totals[kind][event.name] += event.duration_ns
      calls[kind][event.name] += 1
  families = collections.Counter()
  for name, ns in totals["kernel"].items():
    families[family(name)] += ns
  lines = []
  for kind, counter in (("op", totals["op"]), ("kernel", totals["kernel"]),
                        ("kernel family", families)):
    whole = sum(counter.values())
    if not whole:
      continue
    lines.append(f"{kind:<60}{'ms/step':>10}{'share':>8}{'calls':>7}   (all: "
                 f"{whole / 1e6 / steps:.2f} ms/step)")
    for name, ns in counter.most_common(top):
      n = calls.get(kind, {}).get(name)
      per = f"{n / steps:>7.0f}" if n else f"{'':>7}"
      lines.append(f"{name[:60]:<60}{ns / 1e6 / steps:>10.3f}{ns / whole:>8.1%}{per}")
    lines.append("")
  return "\n".join(lines) if lines else "the trace holds no XLA op events"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("trace_dir")
  parser.add_argument("--steps", type=int, default=1)
  parser.add_argument("--top", type=int, default=20)
  args = parser.parse_args()
  print(summarize(args.trace_dir, args.steps, args.top))


if __name__ == "__main__":
  main()
