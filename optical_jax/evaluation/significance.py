"""Is one run better than another? Paired tests on per-query values, and tables.

`compare` evaluates several runs on the same qrels and tests each against a
baseline with a paired t-test and a paired randomization test (sign flips);
`markdown_table` marks a difference significant (`SIGNIFICANT_MARK`) when both
tests say p < alpha.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from optical_jax.evaluation.metrics import DEFAULT_METRICS
from optical_jax.evaluation.metrics import evaluate

# Sign-flip means are sums of the same numbers in another order; this absorbs
# the rounding so that a permutation equal to the observed mean counts as one.
_PERMUTATION_TOL = 1e-12


_PERMUTATION_BATCH_CELLS = 2**20  # sign matrix entries per batch (8 MiB float64)


def paired_t_test(a: np.ndarray, b: np.ndarray) -> float:
  """Two-sided paired t-test p-value of per-query values `a`, `b` `[Q]`.

  Where scipy gives NaN (0/0, all differences equal) this gives the limits:
  p = 1 for identical runs, p = 0 for a constant non-zero shift. Raises
  ValueError for shapes that differ or Q < 2.
  """
  diff = _paired_diff(a, b)
  if np.all(diff == diff[0]):
    return 1.0 if diff[0] == 0 else 0.0
  return float(stats.ttest_rel(a, b).pvalue)


def randomization_test(a: np.ndarray, b: np.ndarray, n_permutations: int = 10_000,
                       seed: int = 0) -> float:
  """Two-sided paired randomization (sign-flip) test p-value of `a`, `b` `[Q]`.

  Each permutation flips the sign of each per-query difference with probability
  1/2; p = (1 + #{|permuted mean| >= |observed mean|}) / (1 + n_permutations),
  never 0 and exactly 1 for identical runs. One seed gives one sign matrix,
  whatever the runs. Raises ValueError as `paired_t_test`, or n_permutations < 1.
  """
  diff = _paired_diff(a, b)
  if n_permutations < 1:
    raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
  observed = abs(diff.mean())
  rng = np.random.default_rng(seed)
  batch = max(1, _PERMUTATION_BATCH_CELLS // diff.size)
  hits = done = 0
  while done < n_permutations:
    size = min(batch, n_permutations - done)
    signs = 1.0 - 2.0 * rng.integers(0, 2, size=(size, diff.size))
    permuted = np.abs(signs @ diff) / diff.size
    hits += int(np.count_nonzero(permuted >= observed - _PERMUTATION_TOL))
    done += size
  return (hits + 1) / (n_permutations + 1)


def _paired_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or a.size < 2:
    raise ValueError(f"need two [Q] arrays with Q >= 2, got {a.shape} and {b.shape}")
  return a - b


@dataclasses.dataclass
class Comparison:
  """One run against the baseline on one metric (p-values are two-sided)."""
  mean: float
  delta: float
  p_ttest: float
  p_randomization: float


@dataclasses.dataclass
class CompareResult:
  """`compare`'s output; `comparisons[run][metric]` for every non-baseline run."""
  baseline: str
  metrics: list[str]
  means: dict[str, dict[str, float]]
  comparisons: dict[str, dict[str, Comparison]]
  n_queries: int
  n_permutations: int
  seed: int
  alpha: float


def compare(qrels: Mapping[str, Mapping[str, int]],
            runs: Mapping[str, Mapping[str, Mapping[str, float]]], baseline: str,
            metrics: Sequence[str] = DEFAULT_METRICS, n_permutations: int = 10_000,
            seed: int = 0, alpha: float = 0.05) -> CompareResult:
  """Evaluates `runs` and tests each against `runs[baseline]`, query by query.

  All runs are paired on the same judged query set (see the module docstring).
  No correction for multiple comparisons is applied.

  Raises:
    ValueError: `baseline` not in `runs`, and whatever `evaluate` raises.
  """
  if baseline not in runs:
    raise ValueError(f"baseline {baseline!r} is not one of the runs {list(runs)}")
  metrics = list(dict.fromkeys(metrics))
  results = {name: evaluate(qrels, run, metrics) for name, run in runs.items()}
  qids = sorted(results[baseline].per_query[metrics[0]])
  vectors = {name: {m: np.array([r.per_query[m][q] for q in qids]) for m in metrics}
             for name, r in results.items()}
  comparisons: dict[str, dict[str, Comparison]] = {}
  for name in (n for n in runs if n != baseline):
    comparisons[name] = {}
    for m in metrics:
      ours, base = vectors[name][m], vectors[baseline][m]
      comparisons[name][m] = Comparison(
          mean=results[name].aggregate[m],
          delta=results[name].aggregate[m] - results[baseline].aggregate[m],
          p_ttest=paired_t_test(ours, base),
          p_randomization=randomization_test(ours, base, n_permutations, seed))
  return CompareResult(
      baseline=baseline, metrics=metrics,
      means={name: dict(r.aggregate) for name, r in results.items()},
      comparisons=comparisons, n_queries=len(qids), n_permutations=n_permutations,
      seed=seed, alpha=alpha)


SIGNIFICANT_MARK = "†"


def markdown_table(result: CompareResult, digits: int = 4) -> str:
  """Runs as rows, metrics as columns: `mean (delta)`, then `†` when significant.

  `†` marks p < alpha against the baseline under *both* the paired t-test and
  the randomization test; a footnote under the table says so.
  """
  def cell(value: float, comparison: Comparison | None) -> str:
    if comparison is None:
      return f"{value:.{digits}f}"
    significant = max(comparison.p_ttest, comparison.p_randomization) < result.alpha
    mark = SIGNIFICANT_MARK if significant else ""
    return f"{value:.{digits}f} ({comparison.delta:+.{digits}f}){mark}"

  def row(name: str) -> str:
    label = name.replace("|", "\\|") + (" (baseline)" if name == result.baseline else "")
    cells = [cell(result.means[name][m], result.comparisons.get(name, {}).get(m))
             for m in result.metrics]
    return "| " + " | ".join([label] + cells) + " |"

  lines = ["| run | " + " | ".join(result.metrics) + " |",
           "|" + "---|" * (len(result.metrics) + 1), row(result.baseline)]
  lines += [row(name) for name in result.comparisons]
  lines.append(f"\n{SIGNIFICANT_MARK} p < {result.alpha} against {result.baseline} under "
               f"both a paired t-test and a paired randomization test "
               f"({result.n_permutations} sign flips, seed {result.seed}); "
               f"{result.n_queries} queries; no multiple-comparison correction.")
  return "\n".join(lines) + "\n"
