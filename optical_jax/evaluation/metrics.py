"""IR metrics of a run against qrels, through ir-measures (pytrec_eval).

TREC files are read and written by `data/trec.py`; significance tests are in
`significance.py`, score calibration in `calibration.py`.

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
import pathlib
from typing import Any, Mapping, Sequence

import ir_measures
import numpy as np

from optical_jax.data.trec import PathLike
from optical_jax.data.trec import Qrels
from optical_jax.data.trec import trec_order

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("nDCG@10", "nDCG@20", "MRR@10", "MAP", "P@10", "R@100")


# Names people write, lower-cased, to ir-measures names (which are case-sensitive).
_METRIC_ALIASES = {"ndcg": "nDCG", "mrr": "RR", "rr": "RR", "map": "AP", "ap": "AP",
                   "p": "P", "precision": "P", "r": "R", "recall": "R",
                   "success": "Success", "rprec": "Rprec"}


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
  # Sorted, not set order (which differs per process with string hashing): the mean
  # is then summed in one order, and equal runs give equal bits in any process.
  ranked = {q: _trec_ranks(q, run[q]) for q in sorted(scored)}
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
    for qid in sorted(values[measure]):
      aggregator.add(values[measure][qid])
    aggregate[name] = float(aggregator.result())
  return EvalResult(
      aggregate=aggregate, per_query=per_query,
      measures={name: str(m) for name, m in parsed.items()},
      n_queries=len(qrels), n_unjudged_run_queries=len(unjudged),
      n_judged_missing_from_run=len(missing), n_judged_without_relevant=len(no_relevant),
      n_queries_with_ties=sum(len(set(run[q].values())) < len(run[q]) for q in scored))


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
