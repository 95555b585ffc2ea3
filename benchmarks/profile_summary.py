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


def summarize(trace_dir: str, steps: int = 1, top: int = 20) -> str:
  """Device time per op name and per kernel name, per step.

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
  for kind, line in _op_lines(space):
    for event in line.events:
      totals[kind][event.name] += event.duration_ns
  lines = []
  for kind in ("op", "kernel"):
    counter = totals[kind]
    whole = sum(counter.values())
    if not whole:
      continue
    lines.append(f"{kind:<60}{'ms/step':>10}{'share':>8}   (all: {whole / 1e6 / steps:.2f} "
                 f"ms/step)")
    for name, ns in counter.most_common(top):
      lines.append(f"{name[:60]:<60}{ns / 1e6 / steps:>10.3f}{ns / whole:>8.1%}")
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
