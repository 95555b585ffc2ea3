"""A fake experiment job and the grids the research tests run it in: each cell's run files
are seeded random scores plus a boost of the relevant document, so a cell's quality is known."""
import numpy as np

from optical_jax import config as config_lib
from optical_jax.data import trec
from optical_jax.evaluation import metrics as metrics_lib

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


LANG_QRELS = {f"{lang}/q{i}": {f"d{i}": 1} for lang in "ab" for i in range(N_QUERIES // 2)}


def fake_job_languages(config, workdir):
  """fake_job on the queries of two languages, 'a/q0' ... and 'b/q0' ...: `loss.ot_weight`
  boosts language a's relevant documents; b's always get 0.3. Reports each metric overall,
  per language ('MRR@10/a') and as the a - b gap ('MRR@10/gap')."""
  rng = np.random.default_rng(config.seed)
  n = N_QUERIES // 2
  noise = rng.random((2, n, n))
  boost = {"a": config.loss.ot_weight, "b": 0.3}
  run = {f"{lang}/q{i}": {f"d{j}": float(noise[k, i, j] + (boost[lang] if i == j else 0.0))
                          for j in range(n)}
         for k, lang in enumerate("ab") for i in range(n)}
  trec.write_run(f"{workdir}/eval/optical.run", run, tag="optical")
  result = metrics_lib.evaluate(LANG_QRELS, run, METRICS)
  metrics = dict(result.aggregate)
  for m in METRICS:
    for lang in "ab":
      metrics[f"{m}/{lang}"] = float(np.mean(
          [v for q, v in result.per_query[m].items() if q.startswith(f"{lang}/")]))
    metrics[f"{m}/gap"] = metrics[f"{m}/a"] - metrics[f"{m}/b"]
  return {"steps": 0, "optical": metrics}


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
