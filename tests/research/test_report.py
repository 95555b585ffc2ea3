"""Experiment reports (research/report.py): tables, CSV, significance marks and plots, each
value recomputed from the cells' run files."""
import csv
import json

import numpy as np
import pytest

from optical_jax import config as config_lib
from optical_jax.data import trec
from optical_jax.evaluation import metrics as metrics_lib
from optical_jax.evaluation import significance
from optical_jax.research import cells
from optical_jax.research import grid as grid_lib
from optical_jax.research import report

from tests.research.fake_grid import GRID, METRICS, N_QUERIES, PNG, QRELS, fake_job, make_config


def test_reports(tmp_path, qrels_path):
  config = make_config(GRID, metrics=METRICS + ("query_spread_cos",), qrels=qrels_path)
  summary = grid_lib.run_grid(config, tmp_path, job=fake_job)

  # Independently: per-seed metrics of the run files the fake job wrote.
  expected = {}
  for cell in ("base", "same", "better"):
    for seed in (0, 1, 2):
      run = trec.read_run(tmp_path / "cells" / cell / f"seed{seed}" / "eval/optical.run")
      res = metrics_lib.evaluate(QRELS, run, METRICS)
      expected[(cell, seed)] = dict(res.aggregate, query_spread_cos=0.1 * seed)

  with open(tmp_path / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [(r["cell"], int(r["seed"])) for r in rows] == \
      [(c, s) for s in (0, 1, 2) for c in ("base", "same", "better")]
  assert {r["cell"]: float(r["loss.ot_weight"]) for r in rows} == \
      {"base": 0.3, "same": 0.3, "better": 1.0}
  for r in rows:
    for m in ("MRR@10", "nDCG@10"):
      assert float(r[m]) == pytest.approx(expected[(r["cell"], int(r["seed"]))][m], abs=1e-12)

  md = (tmp_path / "results.md").read_text()
  table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[3:-1]]
           for line in md.splitlines() if line.startswith("| ") and "seeds" not in line}
  mark = significance.SIGNIFICANT_MARK
  for cell, label in (("base", "base (baseline)"), ("same", "same"), ("better", "better")):
    for i, m in enumerate(METRICS + ("query_spread_cos",)):
      vals = [expected[(cell, s)][m] for s in (0, 1, 2)]
      assert table[label][i].startswith(f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f}")
  # 'better' always ranks the relevant document first: significant;
  # 'same' has the base's config under another name: identical, never marked.
  assert all(c.endswith(mark) and "(+" in c for c in table["better"][:2])
  assert all(mark not in c and "(+0.0000)" in c for c in table["same"])
  assert mark not in table["better"][2] and "query_spread_cos: not an IR metric" in md
  assert mark not in "".join(table["base (baseline)"])
  sig = summary.significance
  assert sig["same"]["MRR@10"].p_ttest == 1.0 and sig["same"]["MRR@10"].p_randomization == 1.0
  assert sig["better"]["MRR@10"].significant and summary.n_queries == N_QUERIES
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["significance"]["better"]["MRR@10"]["significant"] is True

  for m in ("MRR_10", "nDCG_10", "query_spread_cos"):
    assert (tmp_path / "plots" / f"bar_{m}.png").read_bytes().startswith(PNG)
  assert not list((tmp_path / "plots").glob("sweep_*"))   # no key takes 3 values

  # An IR metric the job does not compute is a config error before anything runs;
  # another name the job did not report is caught when the results are read.
  with pytest.raises(config_lib.ConfigError, match="'P@1' is not computed: add 'P@1' to "
                                                   "config.eval.metrics"):
    report.aggregate(make_config(GRID, metrics=("P@1",)), tmp_path)
  with pytest.raises(ValueError, match="cell 'base' seed 0: the job reported no metric 'acc'"):
    report.aggregate(make_config(GRID, metrics=("acc",)), tmp_path)
  # Qrels other than the job's are caught: the run files no longer give the job's metrics.
  wrong = {q: {"d0": 1} for q in QRELS}
  summary = report.aggregate(config, tmp_path, qrels=wrong)
  assert any("are these the qrels the job evaluated on?" in n for n in summary.notes)


def test_also_against_tests_every_cell_against_a_second_baseline(tmp_path, qrels_path):
  config = make_config(GRID, seeds=(0, 1), qrels=qrels_path, also_against=("same",))
  summary = grid_lib.run_grid(config, tmp_path, job=fake_job)
  # Against 'same' (identical to base), 'better' is better and 'base' is the same.
  vs_same = summary.against["same"]
  assert vs_same["better"]["MRR@10"].significant and vs_same["better"]["MRR@10"].delta > 0
  assert vs_same["base"]["MRR@10"].delta == pytest.approx(0.0, abs=1e-12)
  assert not vs_same["base"]["MRR@10"].significant
  text = (tmp_path / "results.md").read_text()
  assert "Against same" in text and "| better |" in text.split("Against same")[1]
  assert "same" in json.loads((tmp_path / "results.json").read_text())["against"]
  with pytest.raises(config_lib.ConfigError, match="also_against"):
    cells.settings(make_config(GRID, also_against=("nope",)))
