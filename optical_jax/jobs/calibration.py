"""The calibration research question's job: distil (or not), then calibrate each
query encoder's scores.

Scores are mapped to relevance probabilities by Platt scaling fitted on a dev
half of the queries and judged on the other half (`evaluation/calibration.py`).
"""
from __future__ import annotations

import json
import pathlib

from optical_jax.data import layouts
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

  With several evaluation languages, each language is also calibrated on its
  own (`ECE/<lang>`, `Brier/<lang>`), and the scaling fitted on
  `calibration.fit_language`'s dev half (default: the distilled language,
  `data.language`) is applied to every language's test half
  (`ECE_transfer/<lang>`): whether a calibration made where the student was
  trained holds in a language it never saw.
  """
  with workdir_lib.lock(workdir):
    block = {k: v for k, v in config.calibration.to_dict().items() if k != "fit_language"}
    results = distill.run(config, workdir)
    qrels = sources.load(config, need_train_data=False)[2].qrels
    out = pathlib.Path(workdir) / "calibration"
    report = {}
    languages = tuple(config.eval.languages)
    fit_language = config.calibration.fit_language or config.data.language
    for name in dict.fromkeys(("zero_shot", config.method)):
      path = pathlib.Path(workdir) / "eval" / f"{name}.run"
      if name not in results or not path.exists():
        continue
      run = trec.read_run(path)
      report[name] = calibration.calibrate_run(
          run, qrels, k=config.eval.k, plot=out / f"{name}.png",
          title=f"{name} ({config.method})", **block)
      metrics = {"ECE": report[name]["ECE"], "Brier": report[name]["Brier"]}
      if languages:
        by_language = {lang: {q: docs for q, docs in run.items()
                              if layouts.language_of(q) == lang} for lang in languages}
        fitted = {}
        for lang, part in by_language.items():
          fitted[lang] = calibration.calibrate_run(
              part, qrels, k=config.eval.k, plot=out / f"{name}_{lang}.png",
              title=f"{name} ({config.method}), {lang}", **block)
          metrics.update({f"ECE/{lang}": fitted[lang]["ECE"],
                          f"Brier/{lang}": fitted[lang]["Brier"]})
        if fit_language in fitted:
          scaling = calibration.PlattScaling(fitted[fit_language]["platt_a"],
                                             fitted[fit_language]["platt_b"])
          for lang, part in by_language.items():
            moved = calibration.calibrate_run(part, qrels, k=config.eval.k, platt=scaling,
                                              **block)
            metrics[f"ECE_transfer/{lang}"] = moved["ECE"]
        report[name] = dict(report[name], languages=fitted)
      results[name] = dict(results[name], **metrics)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    return results
