"""The calibration research question's job: distil (or not), then calibrate each
query encoder's scores.

Scores are mapped to relevance probabilities by Platt scaling fitted on a dev
half of the queries and judged on the other half (`evaluation/calibration.py`).
"""
from __future__ import annotations

import json
import pathlib

from optical_jax.data import sources
from optical_jax.data import trec
from optical_jax.evaluation import calibration
from optical_jax.jobs import distill
from optical_jax.training import workdir as workdir_lib


def run(config, workdir: str) -> dict:
  """The calibration experiment's job (`optical_jax.jobs.calibration:run`).

  Runs the distill job (for `method='zero_shot'` it only evaluates), then
  calibrates each query encoder's scores (`calibrate_run`, the same dev / test
  split of the queries for every cell and seed: `calibration.split_seed`) and
  adds ECE and Brier to its metrics. Writes WORKDIR/calibration/NAME.png and
  results.json.
  """
  with workdir_lib.lock(workdir):
    block = config.calibration.to_dict()
    results = distill.run(config, workdir)
    qrels = sources.load(config, need_train_data=False)[2].qrels
    out = pathlib.Path(workdir) / "calibration"
    report = {}
    for name in dict.fromkeys(("zero_shot", config.method)):
      path = pathlib.Path(workdir) / "eval" / f"{name}.run"
      if name not in results or not path.exists():
        continue
      report[name] = calibration.calibrate_run(
          trec.read_run(path), qrels, k=config.eval.k, plot=out / f"{name}.png",
          title=f"{name} ({config.method})", **block)
      results[name] = dict(results[name], ECE=report[name]["ECE"], Brier=report[name]["Brier"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    return results
