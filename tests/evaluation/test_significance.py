"""Significance tests (evaluation/significance.py): against scipy and exact enumeration,
and the comparison table."""
import itertools
import json
import math
import warnings

import numpy as np
import pytest

from optical_jax.evaluation import metrics as metrics_lib
from optical_jax.evaluation import significance


def _rank_runs(n_queries=30, seed=0):
  """One relevant doc per query; 'better' ranks it first, 'base' at 2..6."""
  rng = np.random.default_rng(seed)
  qrels = {f"q{i}": {"rel": 1} for i in range(n_queries)}
  docs = ["rel"] + [f"n{j}" for j in range(9)]

  def run(positions):
    out = {}
    for i, pos in enumerate(positions):
      order = [d for d in docs if d != "rel"]
      order.insert(pos, "rel")
      out[f"q{i}"] = {d: 10.0 - j for j, d in enumerate(order)}
    return out

  return qrels, {"base": run(rng.integers(1, 6, n_queries)), "better": run([0] * n_queries)}


def test_compare_better_run_is_significant():
  qrels, runs = _rank_runs()
  runs["same"] = runs["base"]
  result = significance.compare(qrels, runs, "base", ["MRR@10", "nDCG@10"], n_permutations=2000)
  better = result.comparisons["better"]["MRR@10"]
  assert better.delta > 0.3 and better.p_ttest < 1e-6
  # All differences are positive: only the all-plus and all-minus sign patterns
  # (probability 2 / 2**30) reach the observed mean, so no permutation hits.
  assert better.p_randomization == 1 / 2001
  table = significance.markdown_table(result)
  better_row = next(l for l in table.splitlines() if l.startswith("| better"))
  same_row = next(l for l in table.splitlines() if l.startswith("| same"))
  assert better_row.count(significance.SIGNIFICANT_MARK) == 2 and significance.SIGNIFICANT_MARK not in same_row
  assert "| base (baseline) |" in table and "both a paired t-test" in table


def test_compare_identical_runs_give_p_one_without_nan(tmp_path):
  qrels, runs = _rank_runs()
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a leaked RuntimeWarning (0/0) fails here
    result = significance.compare(qrels, {"a": runs["base"], "b": runs["base"]}, "a",
                        ["MRR@10", "P@10"], n_permutations=500)
  for comparison in result.comparisons["b"].values():
    assert (comparison.delta, comparison.p_ttest, comparison.p_randomization) == (0, 1, 1)
  json.loads(metrics_lib.write_metrics(tmp_path / "cmp.json", result).read_text())
  with pytest.raises(ValueError, match="baseline"):
    significance.compare(qrels, runs, "nope")


def test_paired_tests_against_scipy_and_exact_enumeration():
  rng = np.random.default_rng(1)
  a, b = rng.normal(0.5, 0.2, 10), rng.normal(0.45, 0.2, 10)
  from scipy import stats
  assert significance.paired_t_test(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
  assert significance.paired_t_test(a + 0.1, a) == 0.0  # constant shift: t = inf
  diff = a - b
  flips = np.array(list(itertools.product([-1, 1], repeat=diff.size)))
  exact = np.mean(np.abs(flips @ diff) >= abs(diff.sum()) - 1e-12)
  p = significance.randomization_test(a, b, n_permutations=20_000, seed=3)
  assert abs(p - exact) < 5 * math.sqrt(exact * (1 - exact) / 20_000)
  assert p == significance.randomization_test(a, b, n_permutations=20_000, seed=3)
  assert p != significance.randomization_test(a, b, n_permutations=20_000, seed=4)

