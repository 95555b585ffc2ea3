"""Experiment grids with a fake job: expansion, overrides, resume, reports, plots."""
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

N_QUERIES = 24
METRICS = ("MRR@10", "nDCG@10")
QRELS = {f"q{i}": {f"d{i}": 1} for i in range(N_QUERIES)}
PNG = b"\x89PNG\r\n\x1a\n"


def fake_job(config, workdir):
  """Writes eval/{zero_shot,optical}.run: the relevant document of each query gets
  `loss.ot_weight` added to a seeded random score, so a larger weight ranks it higher."""
  rng = np.random.default_rng(config.seed)
  noise = rng.random((N_QUERIES, N_QUERIES))
  results = {"steps": 0}
  for name, boost in (("zero_shot", 0.0), ("optical", config.loss.ot_weight)):
    run = {f"q{i}": {f"d{j}": float(noise[i, j] + (boost if i == j else 0.0))
                     for j in range(N_QUERIES)} for i in range(N_QUERIES)}
    trec.write_run(f"{workdir}/eval/{name}.run", run, tag=name)
    results[name] = dict(metrics_lib.evaluate(QRELS, run, METRICS).aggregate,
                         query_spread_cos=0.1 * config.seed)   # like distill's diagnostic
  return results


class Counting:
  """fake_job counting its calls, raising on one (cell weight, seed) if asked."""

  def __init__(self, fail_on=None):
    self.calls, self.fail_on = [], fail_on

  def __call__(self, config, workdir):
    self.calls.append(workdir)
    if (config.loss.ot_weight, config.seed) == self.fail_on:
      raise RuntimeError("preempted")
    return fake_job(config, workdir)


def make_config(grid, seeds=(0, 1, 2), **kwargs):
  c = config_lib.default()
  c.eval.metrics = METRICS
  c.loss.ot_weight = 0.3     # the fake job's base quality: the relevant doc is often not first
  c.experiment.update(grid=grid, seeds=seeds, n_permutations=2000, **kwargs)
  c.lock()
  return c


# A boost of 1 always ranks the relevant document first (noise is in [0, 1)).
GRID = [("base", {}), ("same", {"loss.ot_weight": 0.3}), ("better", {"loss.ot_weight": 1.0})]


@pytest.fixture
def qrels_path(tmp_path):
  path = tmp_path / "qrels.txt"
  path.write_text("".join(f"{q} 0 {d} 1\n" for q, docs in QRELS.items() for d in docs))
  return str(path)


def test_expand_workdirs_overrides_and_lock(tmp_path):
  config = make_config(GRID, seeds=(3, 7))
  runs = cells.expand(config, tmp_path)
  # Seed-major, one workdir per (cell, seed).
  assert [(r.cell, r.seed) for r in runs] == \
      [(c, s) for s in (3, 7) for c in ("base", "same", "better")]
  assert [r.workdir for r in runs] == [tmp_path / "cells" / r.cell / f"seed{r.seed}" for r in runs]
  by = {(r.cell, r.seed): r.config for r in runs}
  assert by[("better", 7)].loss.ot_weight == 1.0 and by[("base", 7)].loss.ot_weight == 0.3
  assert by[("better", 7)].seed == 7 and by[("base", 3)].seed == 3
  assert config.loss.ot_weight == 0.3 and config.seed == 0      # the base is untouched
  for cfg in by.values():
    assert cfg.is_locked and "experiment" not in cfg
    with pytest.raises(AttributeError):
      cfg.loss.new_field = 1


@pytest.mark.parametrize("overrides, match", [
    ({"loss.ot_wieght": 0.0}, r"cell 'typo'.*loss\.ot_wieght"),
    ({"los.ot_weight": 0.0}, r"cell 'typo'.*los\.ot_weight"),
    ({"loss.ot_weight": "high"}, r"cell 'typo'.*config\.loss\.ot_weight"),
    ({"seed": 3}, r"cell 'typo'.*seed"),
])
def test_bad_override_fails_before_any_job(tmp_path, overrides, match):
  job = Counting()
  with pytest.raises(config_lib.ConfigError, match=match):
    grid_lib.run_grid(make_config(GRID + [("typo", overrides)]), tmp_path, job=job)
  assert job.calls == []


def test_bad_blocks():
  with pytest.raises(config_lib.ConfigError, match="baseline='nope'"):
    cells.settings(make_config(GRID, baseline="nope"))
  with pytest.raises(config_lib.ConfigError, match="distinct"):
    cells.settings(make_config(GRID + [("base", {})]))
  with pytest.raises(config_lib.ConfigError, match=r"bad: \[.a/b.\]"):
    cells.settings(make_config([("a/b", {})]))
  with pytest.raises(config_lib.ConfigError, match="config.experiment is missing"):
    cells.settings(config_lib.default())


def test_interrupted_grid_reruns_only_missing_cells(tmp_path, qrels_path):
  config = make_config(GRID, qrels=qrels_path)
  job = Counting(fail_on=(1.0, 1))          # 'better', seed 1: the 6th of 9 jobs
  with pytest.raises(RuntimeError, match="preempted"):
    grid_lib.run_grid(config, tmp_path, job=job)
  assert len(job.calls) == 6
  done = sorted(p.parent.relative_to(tmp_path / "cells").as_posix()
                for p in tmp_path.glob("cells/*/*/done.json"))
  assert done == ["base/seed0", "base/seed1", "better/seed0", "same/seed0", "same/seed1"]
  marker = json.loads((tmp_path / "cells/same/seed1/done.json").read_text())
  assert marker["cell"] == "same" and marker["seed"] == 1 and set(marker["metrics"]) >= set(METRICS)
  assert not list(tmp_path.glob("cells/*/*/*.tmp"))

  job = Counting()
  summary = grid_lib.run_grid(config, tmp_path, job=job)
  assert sorted(job.calls) == sorted(str(tmp_path / "cells" / c / f"seed{s}")
                                     for c, s in (("better", 1), ("base", 2), ("same", 2),
                                                  ("better", 2)))
  assert all(len(summary.cells[c].seeds) == 3 for c in ("base", "same", "better"))
  job = Counting()
  grid_lib.run_grid(config, tmp_path, job=job)       # all done: nothing runs
  assert job.calls == []

  # A finished cell whose overrides changed is an error, not a silently stale result.
  stale = make_config([("base", {}), ("same", {"loss.ot_weight": 2.0})], qrels=qrels_path)
  with pytest.raises(config_lib.ConfigError, match="another config"):
    grid_lib.run_grid(stale, tmp_path, job=job)


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


def test_numeric_sweep_plot_and_string_job(tmp_path, qrels_path):
  grid = cells.sweep("loss.ot_weight", (0.0, 0.5, 2.0)) + [("base", {})]
  config = make_config(grid, seeds=(0, 1), baseline="base", qrels=qrels_path,
                       job="tests.research.test_grid:fake_job")
  # Called as optical_jax.main calls every mode.
  summary = grid_lib.experiment_mode(config, str(tmp_path), export_dir=None, runs=[],
                                        qrels=None, baseline=None, query_encoder="auto")
  assert summary.sweeps == {"loss.ot_weight": ((0.0, "ot_weight=0.0"), (0.3, "base"),
                                               (0.5, "ot_weight=0.5"), (2.0, "ot_weight=2.0"))}
  for m in ("MRR_10", "nDCG_10"):
    assert (tmp_path / "plots" / f"sweep_loss.ot_weight_{m}.png").read_bytes().startswith(PNG)
  # The mode's --baseline flag replaces the block's.
  summary = grid_lib.experiment_mode(config, str(tmp_path), baseline="ot_weight=2.0")
  assert "ot_weight=2.0" not in summary.significance and "base" in summary.significance


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


def test_a_config_field_added_later_keeps_finished_cells(tmp_path, qrels_path):
  """Cells finished before the code grew a field (left at its default) still count."""
  config = make_config(GRID[:1], seeds=(0,), qrels=qrels_path)
  grid_lib.run_grid(config, tmp_path, job=fake_job)
  done = tmp_path / "cells" / "base" / "seed0" / "done.json"
  record = json.loads(done.read_text())
  del record["config"]["eval"]["zero_shot"]        # as written before eval.zero_shot existed
  done.write_text(json.dumps(record))
  calls = Counting()
  grid_lib.run_grid(config, tmp_path, job=calls)
  assert calls.calls == []
  record["config"]["eval"]["zero_shot"] = False    # but a changed value is another config
  done.write_text(json.dumps(record))
  with pytest.raises(config_lib.ConfigError, match="eval.zero_shot differs"):
    grid_lib.run_grid(config, tmp_path, job=calls)
