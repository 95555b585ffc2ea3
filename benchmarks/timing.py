"""Shared by the benchmarks: median wall times, and engines timed in alternation."""
import statistics
import time
from typing import Callable, Mapping


def median_seconds(fn, repeats: int) -> float:
  """Median over `repeats` calls of `fn()` (medians: the machines are shared)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def alternating(calls: Mapping[str, Callable[[], object]], repeats: int,
                rounds: int) -> dict[str, list[float]]:
  """Each call's median over `repeats` calls, in `rounds` rounds that take the
  calls in turn (all of a's, then all of b's, then a's again, ...).

  On a shared machine the speed drifts by 10-20% within minutes; timing one
  engine after the other puts all of that drift into their ratio, while
  alternating rounds expose both engines to it alike, and the spread of the
  per-round ratios (`round_ratios`) shows how far a single figure can be
  trusted.

  Returns:
    {name: [median seconds of each round]}, in the order of `calls`.
  """
  if rounds < 1 or repeats < 1:
    raise ValueError(f"rounds and repeats must be >= 1, got {rounds} and {repeats}")
  out = {name: [] for name in calls}
  for _ in range(rounds):
    for name, fn in calls.items():
      out[name].append(median_seconds(fn, repeats))
  return out


def round_ratios(ours: list[float], peer: list[float]) -> list[float]:
  """Per round, how many times faster ours ran than the peer (peer s / ours s)."""
  if len(ours) != len(peer):
    raise ValueError(f"{len(ours)} rounds of ours against {len(peer)} of the peer")
  return [p / o for o, p in zip(ours, peer)]


def ratio_line(unit: str, ours: list[float], peer: list[float]) -> str:
  """'ratio optical_jax / PyTorch (<unit>): 1.15x' with, over several rounds,
  the median of the per-round ratios and each round's."""
  ratios = round_ratios(ours, peer)
  line = f"ratio optical_jax / PyTorch ({unit}): {statistics.median(ratios):.2f}x"
  if len(ratios) > 1:
    line += (f" (median of {len(ratios)} alternating rounds: "
             + ", ".join(f"{r:.2f}x" for r in ratios) + ")")
  return line
