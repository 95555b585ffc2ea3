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
from optical_jax.research import plots
from optical_jax.research import report

from tests.research.fake_grid import (GRID, LANG_QRELS, METRICS, N_QUERIES, PNG, QRELS, fake_job,
                                      fake_job_languages, make_config)


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
  assert not list((tmp_path / "plots").glob("languages_*"))   # no per-language columns

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


def test_a_language_column_is_tested_on_that_language_s_queries(tmp_path):
  metrics = ("MRR@10", "MRR@10/a", "MRR@10/b", "MRR@10/gap")
  config = make_config(GRID, seeds=(0, 1), metrics=metrics)
  summary = grid_lib.run_grid(config, tmp_path, job=fake_job_languages, qrels=LANG_QRELS)

  def per_query(cell, lang):   # language `lang`'s reciprocal ranks, averaged over the seeds
    runs = [trec.read_run(tmp_path / "cells" / cell / f"seed{s}" / "eval/optical.run")
            for s in (0, 1)]
    values = [metrics_lib.evaluate(LANG_QRELS, r, ("MRR@10",)).per_query["MRR@10"] for r in runs]
    qids = sorted(q for q in LANG_QRELS if q.startswith(f"{lang}/"))
    return np.array([np.mean([v[q] for v in values]) for q in qids])

  better, base = per_query("better", "a"), per_query("base", "a")
  sig = summary.significance["better"]
  assert sig["MRR@10/a"].p_ttest == pytest.approx(significance.paired_t_test(better, base))
  assert sig["MRR@10/a"].significant and sig["MRR@10/a"].delta > 0
  # Language b is untouched by the boost: the same ranks, p = 1, whatever a did.
  assert sig["MRR@10/b"].delta == 0.0 and sig["MRR@10/b"].p_randomization == 1.0
  assert sig["MRR@10/gap"] is None and summary.n_queries == N_QUERIES
  assert "MRR@10/gap: a mean over languages, no significance test" in " ".join(summary.notes)
  assert not any("are these the qrels" in n for n in summary.notes)
  table = (tmp_path / "results.md").read_text()
  row = next(line for line in table.splitlines() if line.startswith("| better |"))
  cols = [c.strip() for c in row.split("|")[3:-1]]
  assert cols[1].endswith(significance.SIGNIFICANT_MARK)
  assert not cols[2].endswith(significance.SIGNIFICANT_MARK)
  assert not cols[3].endswith(significance.SIGNIFICANT_MARK)
  # The per-language figure: each cell's difference to the baseline in a and b.
  assert (tmp_path / "plots" / "languages_MRR_10.png").read_bytes().startswith(PNG)
  drawn = plots.plot_languages(summary, tmp_path / "plots")
  assert list(drawn) == ["MRR@10"] and set(drawn["MRR@10"]) == {"same", "better"}
  assert drawn["MRR@10"]["better"] == pytest.approx(
      [better.mean() - base.mean(), 0.0], abs=1e-12)
