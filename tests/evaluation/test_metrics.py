"""Retrieval metrics (evaluation/metrics.py) against textbook formulas and pytrec_eval.

Expected metric values are computed here from the textbook formulas (trec_eval's
definitions: linear gain, log2(rank + 1) discount, relevant = grade > 0) and, for
a second opinion, by pytrec_eval called directly; none are copied from our output.
"""
import json
import logging
import math
import os
import subprocess
import sys
import textwrap

import ir_measures
import numpy as np
import pytest
import pytrec_eval

from optical_jax.evaluation import metrics as metrics_lib


# q1: relevant docs at ranks 2, 4, 11 and d9 (grade 3) never retrieved.
# q2: only 3 documents retrieved (P@10 still divides by 10).
# q3: its one relevant document at rank 11 (RR@10 = 0, but recip_rank = 1/11).
# q4: judged, absent from the run (scores 0). q5: in the run, not judged.
QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1, "d9": 3},
    "q2": {"d1": 1, "d5": 2, "d6": 0},
    "q3": {"d7": 1, "d8": 0},
    "q4": {"d1": 1},
}


_ORDERS = {
    "q1": ["d3", "d1", "n1", "d2", "n2", "n3", "n4", "n5", "n6", "n7", "d4", "n8"],
    "q2": ["d5", "d6", "d1"],
    "q3": ["d8"] + [f"m{i}" for i in range(9)] + ["d7", "m9"],
    "q5": ["d1", "d2"],
}


# Distinct scores, best first, so there are no ties to break.
RUN = {q: {d: 20.0 - 1.5 * i for i, d in enumerate(docs)} for q, docs in _ORDERS.items()}


METRICS = ("nDCG@10", "nDCG@20", "MRR@10", "MAP", "P@10", "R@5", "Recall@100")


# ------------------------------------------------------ independent formulas


def _ranked(qid):
  return _ORDERS.get(qid, [])


def _n_relevant(qid):
  return sum(g > 0 for g in QRELS[qid].values())


def _dcg(gains):
  return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, 1))


def _ndcg(qid, k):
  gains = [QRELS[qid].get(d, 0) for d in _ranked(qid)[:k]]
  ideal = _dcg(sorted(QRELS[qid].values(), reverse=True)[:k])
  return _dcg(gains) / ideal if ideal > 0 else 0.0


def _rr(qid, k):
  for rank, d in enumerate(_ranked(qid)[:k], 1):
    if QRELS[qid].get(d, 0) > 0:
      return 1.0 / rank
  return 0.0


def _ap(qid):
  hits, total = 0, 0.0
  for rank, d in enumerate(_ranked(qid), 1):
    if QRELS[qid].get(d, 0) > 0:
      hits += 1
      total += hits / rank
  return total / _n_relevant(qid)


def _hits(qid, k):
  return sum(QRELS[qid].get(d, 0) > 0 for d in _ranked(qid)[:k])


FORMULAS = {
    "nDCG@10": lambda q: _ndcg(q, 10), "nDCG@20": lambda q: _ndcg(q, 20),
    "MRR@10": lambda q: _rr(q, 10), "MAP": _ap,
    "P@10": lambda q: _hits(q, 10) / 10,
    "R@5": lambda q: _hits(q, 5) / _n_relevant(q),
    "Recall@100": lambda q: _hits(q, 100) / _n_relevant(q),
}

PYTREC = {"nDCG@10": "ndcg_cut_10", "nDCG@20": "ndcg_cut_20", "MAP": "map",
          "P@10": "P_10", "R@5": "recall_5", "Recall@100": "recall_100"}


def test_formulas_are_not_trivial():
  # Guards the fixture: the cases above must exercise what they claim to.
  assert _rr("q3", 10) == 0.0 and _rr("q3", 100) == 1 / 11
  assert _hits("q1", 10) == 2 and _n_relevant("q1") == 4
  assert 0 < _ndcg("q1", 10) < _ndcg("q1", 20) < 1


def test_evaluate_matches_formulas_and_pytrec_eval():
  result = metrics_lib.evaluate(QRELS, RUN, METRICS)
  judged = sorted(QRELS)
  # pytrec_eval scores only queries both judged and retrieved: q4 (absent) and
  # q5 (unjudged) are missing, so trec_eval -c averaging needs q4 added as 0.
  direct = pytrec_eval.RelevanceEvaluator(QRELS, set(PYTREC.values())).evaluate(RUN)
  assert sorted(direct) == ["q1", "q2", "q3"]
  # trec_eval's recip_rank has no cutoff; on a run cut to 10 it is RR@10.
  top10 = {q: dict(list(docs.items())[:10]) for q, docs in RUN.items()}
  rr = pytrec_eval.RelevanceEvaluator(QRELS, {"recip_rank"}).evaluate(top10)
  for metric in METRICS:
    for q in judged:
      expected = FORMULAS[metric](q)
      if metric == "MRR@10":
        pytrec_value = rr[q]["recip_rank"] if q in rr else 0.0
      else:
        pytrec_value = direct[q][PYTREC[metric]] if q in direct else 0.0
      assert result.per_query[metric][q] == pytest.approx(expected, abs=1e-9), (metric, q)
      assert pytrec_value == pytest.approx(expected, abs=1e-9), (metric, q)
    mean = sum(FORMULAS[metric](q) for q in judged) / len(judged)
    assert result.aggregate[metric] == pytest.approx(mean, abs=1e-9), metric
  assert result.measures["MRR@10"] == "RR@10" and result.measures["MAP"] == "AP"
  assert result.measures["Recall@100"] == "R@100"
  assert result.n_queries == 4


def test_unjudged_run_queries_are_counted_and_left_out(caplog):
  with caplog.at_level(logging.WARNING, logger="optical_jax.evaluation.metrics"):
    result = metrics_lib.evaluate(QRELS, RUN, ["nDCG@10", "P@10"])
  assert result.n_unjudged_run_queries == 1  # q5
  assert result.n_judged_missing_from_run == 1  # q4, scored 0
  assert set(result.per_query["nDCG@10"]) == set(QRELS)
  assert result.per_query["P@10"]["q4"] == 0.0
  assert "left out of the averages" in caplog.text
  more = dict(RUN, q6={"d1": 1.0}, q7={"d2": 2.0})
  assert metrics_lib.evaluate(QRELS, more, ["nDCG@10"]).aggregate == metrics_lib.evaluate(
      QRELS, RUN, ["nDCG@10"]).aggregate


def test_ties_follow_trec_eval_for_every_metric():
  qrels = {"q": {"a": 1, "b": 0, "c": 0}}
  run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}
  # trec_eval breaks ties by docid descending: c, b, a -> a at rank 3.
  reference = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)
  assert reference["q"]["recip_rank"] == pytest.approx(1 / 3)
  # The trap: ir-measures' RR@10 (MS MARCO script) breaks them ascending.
  assert ir_measures.calc_aggregate([ir_measures.RR @ 10], qrels, run)[ir_measures.RR @ 10] == 1.0
  result = metrics_lib.evaluate(qrels, run, ["MRR@10", "nDCG@10"])
  assert result.aggregate["MRR@10"] == pytest.approx(1 / 3)
  assert result.aggregate["nDCG@10"] == pytest.approx(1 / math.log2(4))
  assert result.n_queries_with_ties == 1


def test_evaluate_refuses_wrong_inputs():
  with pytest.raises(ValueError, match="shares no query id"):
    metrics_lib.evaluate(QRELS, {"x1": {"d1": 1.0}})
  with pytest.raises(ValueError, match="unknown metric"):
    metrics_lib.evaluate(QRELS, RUN, ["nDCG@10", "bogus@3"])
  with pytest.raises(ValueError, match="same measure"):
    metrics_lib.evaluate(QRELS, RUN, ["MAP", "AP"])
  with pytest.raises(ValueError, match="not an integer"):
    metrics_lib.evaluate({"q1": {"d1": 0.5}}, RUN)
  with pytest.raises(ValueError, match="non-finite"):
    metrics_lib.evaluate(QRELS, {"q1": {"d1": float("nan"), "d2": 1.0}})
  with pytest.raises(TypeError):
    metrics_lib.evaluate({1: {"d1": 1}}, {1: {"d1": 1.0}})


def test_write_metrics_round_trip_and_refuses_nan(tmp_path):
  result = metrics_lib.evaluate(QRELS, RUN, ["nDCG@10"])
  loaded = json.loads(metrics_lib.write_metrics(tmp_path / "m.json", result).read_text())
  assert loaded["aggregate"] == result.aggregate and loaded["n_unjudged_run_queries"] == 1
  with pytest.raises(ValueError, match="non-finite"):
    metrics_lib.write_metrics(tmp_path / "bad.json", {"ece": float("nan")})
  assert json.loads(metrics_lib.write_metrics(tmp_path / "np.json", {"x": np.float32(0.5)})
                    .read_text()) == {"x": 0.5}


def test_the_mean_has_the_same_bits_in_every_process():
  # Set and dict orders of string ids change with the process's hash seed; the mean
  # must not (a resumed run reports exactly what an uninterrupted one does).
  script = textwrap.dedent("""
      import numpy as np
      from optical_jax.evaluation import metrics as metrics_lib
      rng = np.random.default_rng(0)
      qids = [f"q{i}" for i in range(300)]
      qrels = {q: {f"d{j}": 1 for j in rng.choice(50, 2, replace=False)} for q in qids}
      run = {q: {f"d{j}": float(rng.normal()) for j in range(50)} for q in reversed(qids)}
      print(repr(metrics_lib.evaluate(qrels, run, ["nDCG@10", "RR@10"]).aggregate))
  """)
  outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONHASHSEED=str(seed)),
                         check=True).stdout for seed in (1, 2, 3)}
  assert len(outs) == 1, outs
