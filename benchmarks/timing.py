"""Shared by the benchmarks: median wall time of a call."""
import statistics
import time


def median_seconds(fn, repeats: int) -> float:
  """Median over `repeats` calls of `fn()` (medians: the machines are shared)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)
