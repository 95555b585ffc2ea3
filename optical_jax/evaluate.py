"""Evaluation: TREC run/qrels files, IR metrics, significance tests.

Score calibration (ECE, Brier, reliability diagrams) is in `calibration.py`.

Conventions shared by every function here:

* A run is `{qid: {docid: score}}` and qrels are `{qid: {docid: grade}}` with
  integer grades; a grade > 0 is relevant for the binary metrics (trec_eval's
  default relevance level 1) and nDCG uses the grade itself as gain.
* Ranking order is trec_eval's: score descending, ties broken by docid
  *descending*; the rank column of a run file is ignored, as trec_eval does.
  `evaluate` replaces scores by that order before calling ir-measures, because
  ir-measures computes RR@k with the MS MARCO script, which breaks ties by docid
  *ascending*: left alone, MRR@10 and nDCG@10 would rank a tied run differently.
* Query set: metrics are averaged over the judged queries (qids in the qrels).
  A judged query the run has no documents for scores 0 on every metric, as with
  `trec_eval -c`. A run query with no judgements cannot be scored: it is left out
  of every average, counted and logged. Judged queries without any relevant
  document stay in (every system scores 0 on them); they are counted and logged.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
from typing import Any, Callable, Literal, Mapping, Sequence

import ir_measures
import numpy as np
from scipy import stats

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
OnBadLine = Literal["error", "skip"]
PathLike = str | os.PathLike
DEFAULT_METRICS = ("nDCG@10", "nDCG@20", "MRR@10", "MAP", "P@10", "R@100")
# Names people write, lower-cased, to ir-measures names (which are case-sensitive).
_METRIC_ALIASES = {"ndcg": "nDCG", "mrr": "RR", "rr": "RR", "map": "AP", "ap": "AP",
                   "p": "P", "precision": "P", "r": "R", "recall": "R",
                   "success": "Success", "rprec": "Rprec"}
# Last column of a BEIR-style TSV header line (`query-id corpus-id score`).
_QRELS_HEADER_WORDS = ("score", "rel", "relevance", "label")
# Sign-flip means are sums of the same numbers in another order; this absorbs
# the rounding so that a permutation equal to the observed mean counts as one.
_PERMUTATION_TOL = 1e-12
_PERMUTATION_BATCH_CELLS = 2**20  # sign matrix entries per batch (8 MiB float64)


# ------------------------------------------------------------------ TREC files


class _BadLine(Exception):
  """A malformed line; the message says what is wrong with it."""


def _number(text: str, cast: type, what: str) -> Any:
  try:
    return cast(text)
  except ValueError:
    kind = "an integer" if cast is int else "a number"
    raise _BadLine(f"{what} {text!r} is not {kind}") from None


def _qrels_line(lineno: int, fields: list[str]) -> tuple[str, str, int] | None:
  if len(fields) not in (3, 4):
    raise _BadLine(f"expected 4 columns 'qid iter docid grade' or 3 'qid docid grade', "
                   f"got {len(fields)}")
  qid, docid, grade = fields[0], fields[-2], fields[-1]
  if lineno == 1 and len(fields) == 3 and grade.lower() in _QRELS_HEADER_WORDS:
    return None
  return qid, docid, _number(grade, int, "relevance grade")


def _run_line(lineno: int, fields: list[str]) -> tuple[str, str, float]:
  del lineno  # runs have no header
  if len(fields) != 6:
    raise _BadLine(f"expected 6 columns 'qid Q0 docid rank score tag', got {len(fields)}")
  qid, _, docid, rank, score, _ = fields
  _number(rank, int, "rank")
  value = _number(score, float, "score")
  if not math.isfinite(value):
    raise _BadLine(f"score {score!r} is not finite")
  return qid, docid, value


def _read_table(path: PathLike, on_bad_line: OnBadLine,
                parse: Callable[[int, list[str]], tuple[str, str, Any] | None]
                ) -> dict[str, dict[str, Any]]:
  """`{qid: {docid: value}}` from the `parse`d non-blank lines of `path`.

  Lines are split on ASCII whitespace only (spaces, tabs), as trec_eval does, and
  decoded one by one so that invalid UTF-8 is reported with its line number.
  """
  if on_bad_line not in ("error", "skip"):
    raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
  table: dict[str, dict[str, Any]] = {}
  bad: list[str] = []
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      try:
        fields = [field.decode("utf-8") for field in raw.split()]
        entry = parse(lineno, fields) if fields else None
        if entry is not None and entry[1] in table.get(entry[0], {}):
          raise _BadLine(f"duplicate document {entry[1]!r} for query {entry[0]!r}")
      except (UnicodeDecodeError, _BadLine) as e:
        why = f"invalid UTF-8 ({e.reason})" if isinstance(e, UnicodeDecodeError) else e
        if on_bad_line == "error":
          raise ValueError(f"{path}:{lineno}: {why}") from None
        bad.append(f"{path}:{lineno}: {why}")
        continue
      if entry is not None:
        table.setdefault(entry[0], {})[entry[1]] = entry[2]
  if bad:
    log.warning("%s: skipped %d bad line(s); the first: %s", path, len(bad), bad[0])
  return table


def read_qrels(path: PathLike, on_bad_line: OnBadLine = "error") -> Qrels:
  """Reads TREC qrels `qid iter docid grade`, or `qid docid grade` (TSV or not).

  A first line whose grade column reads `score`, `rel`, `relevance` or `label`
  is a BEIR-style header and skipped.

  Returns:
    `{qid: {docid: grade}}`, integer grades.

  Raises:
    ValueError: `path:line: what` for a line with another number of columns, a
      non-integer grade, invalid UTF-8, or a second judgement of a (qid, docid).
      With `on_bad_line='skip'` such lines are dropped (a duplicate keeps the
      first) and their count logged.
  """
  return _read_table(path, on_bad_line, _qrels_line)


def read_run(path: PathLike, on_bad_line: OnBadLine = "error") -> Run:
  """Reads a TREC run `qid Q0 docid rank score tag` (the rank is checked, not used).

  Returns:
    `{qid: {docid: score}}`, float scores.

  Raises:
    ValueError: `path:line: what` for a line without 6 columns, a non-integer
      rank, a non-numeric or non-finite score, invalid UTF-8, or a docid listed
      twice for a query; `on_bad_line='skip'` as in `read_qrels`.
  """
  return _read_table(path, on_bad_line, _run_line)


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
  """(docid, score) pairs best first: score descending, ties by docid descending."""
  return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def _check_token(value: Any, what: str) -> None:
  if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
    raise ValueError(f"{what} {value!r} must be a non-empty string without whitespace")


def write_run(path: PathLike, run: Mapping[str, Mapping[str, float]],
              tag: str = "optical_jax") -> None:
  """Writes `run` as TREC lines, ranks 1.. in `trec_order`, scores as exact reprs.

  The file is written to `path.tmp` and renamed, so `path` is never half written.

  Raises:
    ValueError: a qid, docid or tag that is empty or holds whitespace, or a
      non-finite score.
  """
  _check_token(tag, "tag")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      for qid, docs in run.items():
        _check_token(qid, "qid")
        for rank, (docid, score) in enumerate(trec_order(docs), 1):
          _check_token(docid, f"docid (query {qid!r})")
          if not math.isfinite(score):
            raise ValueError(f"query {qid!r} document {docid!r}: non-finite score {score}")
          f.write(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n")
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


# -------------------------------------------------------------------- metrics


@dataclasses.dataclass
class EvalResult:
  """Metrics of one run.

  Attributes:
    aggregate: metric name (as the caller wrote it) -> mean over judged queries.
    per_query: metric name -> {qid: value}, every judged query.
    measures: metric name -> the ir-measures measure computing it.
    n_queries: judged queries averaged over (qids of the qrels).
    n_unjudged_run_queries: run queries without judgements, left out.
    n_judged_missing_from_run: judged queries the run has no documents for (0).
    n_judged_without_relevant: judged queries with no grade > 0 (0 for any run).
    n_queries_with_ties: evaluated queries with tied scores (see `trec_order`).
  """
  aggregate: dict[str, float]
  per_query: dict[str, dict[str, float]]
  measures: dict[str, str]
  n_queries: int
  n_unjudged_run_queries: int
  n_judged_missing_from_run: int
  n_judged_without_relevant: int
  n_queries_with_ties: int


def parse_metric(name: str) -> ir_measures.Measure:
  """`MRR@10` -> RR@10, `MAP` -> AP, `Recall@100`/`R@100` -> R@100, `ndcg@10` ...

  Raises:
    ValueError: a name neither the aliases nor ir-measures know.
  """
  base, at, cutoff = name.partition("@")
  canonical = _METRIC_ALIASES.get(base.strip().lower(), base.strip()) + at + cutoff.strip()
  try:
    return ir_measures.parse_measure(canonical)
  except (NameError, ValueError, SyntaxError, TypeError) as e:
    raise ValueError(f"unknown metric {name!r} (as ir-measures {canonical!r}): {e}") from e


def _clean_qrels(qrels: Mapping[str, Mapping[str, Any]]) -> Qrels:
  """Copy with str ids and int grades: pytrec_eval rejects anything else."""
  clean: Qrels = {}
  for qid, docs in qrels.items():
    if not isinstance(qid, str) or not all(isinstance(d, str) for d in docs):
      raise TypeError(f"qrels ids must be str (query {qid!r})")
    for docid, grade in docs.items():
      if int(grade) != grade:
        raise ValueError(f"qrels grade {grade!r} of ({qid!r}, {docid!r}) is not an integer")
    if docs:
      clean[qid] = {docid: int(grade) for docid, grade in docs.items()}
  if not clean:
    raise ValueError("the qrels hold no judgements")
  return clean


def _trec_ranks(qid: str, docs: Mapping[str, float]) -> dict[str, float]:
  """Scores replaced by n, n-1, .., 1 in `trec_order`, so all providers agree on ties.

  Raises:
    ValueError: a non-finite score (NaN would make the order arbitrary).
  """
  if not all(math.isfinite(score) for score in docs.values()):
    raise ValueError(f"run query {qid!r} has a non-finite score")
  return {docid: float(len(docs) - i) for i, (docid, _) in enumerate(trec_order(docs))}


def evaluate(qrels: Mapping[str, Mapping[str, int]],
             run: Mapping[str, Mapping[str, float]],
             metrics: Sequence[str] = DEFAULT_METRICS) -> EvalResult:
  """Scores `run` against `qrels` with ir-measures (pytrec_eval, MS MARCO RR).

  See the module docstring for the query set and tie order.

  Raises:
    ValueError: an unknown metric, two names for one measure, qrels without
      judgements or with non-integer grades, or a run sharing no query with the
      qrels (almost surely mismatched ids, so no all-zero result is returned),
      or a non-finite run score.
    TypeError: non-str query or document ids.
  """
  qrels = _clean_qrels(qrels)
  parsed = {name: parse_metric(name) for name in dict.fromkeys(metrics)}
  if len(set(parsed.values())) != len(parsed):
    raise ValueError(f"two metric names denote the same measure: {parsed}")
  if not all(isinstance(q, str) for q in run):
    raise TypeError("run query ids must be str")
  retrieved = {q for q, docs in run.items() if docs}
  scored = retrieved & qrels.keys()
  if not scored:
    raise ValueError(f"the run ({len(run)} queries) shares no query id with the qrels "
                     f"({len(qrels)} queries); e.g. run {sorted(run)[:3]}, qrels "
                     f"{sorted(qrels)[:3]}")
  unjudged = sorted(set(run) - qrels.keys())
  missing = sorted(qrels.keys() - retrieved)
  no_relevant = sorted(q for q, docs in qrels.items() if max(docs.values()) <= 0)
  for count, what, examples in (
      (len(unjudged), "run queries have no judgements: left out of the averages", unjudged),
      (len(missing), "judged queries have no documents in the run: they score 0", missing),
      (len(no_relevant), "judged queries have no relevant document: 0 for any run",
       no_relevant)):
    if count:
      log.warning("%d %s (e.g. %s)", count, what, examples[:3])
  ranked = {q: _trec_ranks(q, run[q]) for q in scored}
  values: dict[Any, dict[str, float]] = {m: {} for m in parsed.values()}
  for metric in ir_measures.iter_calc(list(parsed.values()), qrels, ranked):
    values[metric.measure][metric.query_id] = float(metric.value)
  per_query, aggregate = {}, {}
  for name, measure in parsed.items():
    if values[measure].keys() != qrels.keys():  # ir-measures fills absent queries
      raise RuntimeError(f"ir-measures returned {measure} for {len(values[measure])} "
                         f"queries, expected the {len(qrels)} judged ones")
    per_query[name] = values[measure]
    aggregator = measure.aggregator()
    for value in values[measure].values():
      aggregator.add(value)
    aggregate[name] = float(aggregator.result())
  return EvalResult(
      aggregate=aggregate, per_query=per_query,
      measures={name: str(m) for name, m in parsed.items()},
      n_queries=len(qrels), n_unjudged_run_queries=len(unjudged),
      n_judged_missing_from_run=len(missing), n_judged_without_relevant=len(no_relevant),
      n_queries_with_ties=sum(len(set(run[q].values())) < len(run[q]) for q in scored))


# ------------------------------------------------------------ significance


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


# ------------------------------------------------------------------------ JSON


def _numpy_to_builtin(value: Any) -> Any:
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_metrics(path: PathLike, result: Any) -> pathlib.Path:
  """Writes a result dataclass (or a mapping) as indented, key-sorted JSON.

  Raises:
    ValueError: a NaN or infinity anywhere (JSON has none; never written as 0).
    TypeError: a value JSON cannot hold.
  """
  payload = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)
  try:
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False,
                      ensure_ascii=False, default=_numpy_to_builtin)
  except ValueError as e:
    raise ValueError(f"{path}: refusing to write non-finite metrics: {e}") from e
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text + "\n", encoding="utf-8")
  return path
