"""Grids of runs: one job per (cell, seed), resumable, aggregated with significance tests.

An experiment config (`configs/experiments/*.py`) is a job config whose
`experiment` block (see `config.default()`) holds the grid:

  grid             [(name, {dotted key: value}), ...]: the cells; {} is the base config
  seeds            every cell runs once per seed, with config.seed = seed
  baseline         the cell every other is tested against (default: the first)
  also_against     more cells to test every other against (a table each)
  metrics          what is reported (default: config.eval.metrics)
  runs_to_compare  the job's results[it] is reported, its eval/<it>.run tested
                   ('' = each cell's method)
  job              a jobs.MODES name ('distill') or 'package.module:function'
  qrels            qrels file of the tests ('' = the configured eval collection's)
  n_permutations, alpha   of the randomization test and the significance mark

An experiment workdir:

  cells/<cell>/seed<seed>/   the job's own workdir, plus done.json once it returned
  results.csv                one row per (cell, seed): overridden keys, metrics
  results.md                 mean ± std over seeds per cell, deltas, significance
  results.json               the same numbers with the p-values
  plots/bar_<metric>.png     a bar per cell, error bars over seeds, seeds as dots
  plots/sweep_<key>_<metric>.png   metric against a swept numeric key

A re-run skips every (cell, seed) with a done.json: an interrupted grid finishes
only what is missing (and distill resumes an unfinished cell from its checkpoints).
"""
from __future__ import annotations

import copy
import importlib
import logging
import os
import sys
from typing import Mapping

import ml_collections

from optical_jax import config as config_lib
from optical_jax.jobs import modes
from optical_jax.research import cells
from optical_jax.research import report
from optical_jax.training import workdir as workdir_lib

log = logging.getLogger(__name__)


def resolve_job(name: str) -> cells.Job:
  """'distill' (any jobs.MODES name) or 'package.module:function' -> the function."""
  if ":" in name:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)
  if name not in modes.MODES:
    raise config_lib.ConfigError(f"config.experiment.job={name!r}: expected a job of "
                                 f"{sorted(modes.MODES)} or 'module:fn'")
  return modes.MODES[name]


def _is_main_process() -> bool:
  """Process 0 writes the shared files; jax is asked only if a job has loaded it."""
  return "jax" not in sys.modules or sys.modules["jax"].process_index() == 0


def run_grid(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
             job: cells.Job | None = None, qrels: str | Mapping | None = None
             ) -> report.Summary | None:
  """Runs every unfinished (cell, seed) of `config`'s grid, then `aggregate`s.

  Args:
    job: (config, workdir) -> results with a metrics dict under the cell's key
      (`cells.compared`: `runs_to_compare`, else the cell's method);
      default `experiment.job`.
    qrels: path or `{qid: {docid: grade}}` for the significance tests; default
      `experiment.qrels`, else the configured collection's.

  Returns the summary; None on processes other than 0, which write nothing. A bad
  experiment block or override raises ConfigError before any job runs; whatever a
  job raises propagates, and the jobs finished before it keep their done.json.
  """
  with workdir_lib.lock(workdir):
    s, runs = cells.settings(config), cells.expand(config, workdir)
    job = job or resolve_job(s.job)
    todo = [r for r in runs if cells.read_done(r) is None]
    log.info("experiment %s: %d of %d jobs to run", workdir, len(todo), len(runs))
    for i, run in enumerate(todo, 1):
      log.info("[%d/%d] cell %s seed %d -> %s", i, len(todo), run.cell, run.seed, run.workdir)
      run.workdir.mkdir(parents=True, exist_ok=True)
      results = job(run.config, str(run.workdir))
      key = cells.compared(s, run.config)
      if not isinstance((results or {}).get(key), Mapping):
        raise ValueError(f"cell {run.cell!r} seed {run.seed}: the job returned no "
                         f"{key!r} metrics dict: {str(results)[:200]}")
      if _is_main_process():
        cells.write_done(run, results, results[key])
    return report.aggregate(config, workdir, qrels=qrels) if _is_main_process() else None


def experiment_mode(config: ml_collections.ConfigDict, workdir: str, *,
                    qrels: str | None = None, baseline: str | None = None,
                    **_) -> report.Summary | None:
  """`--mode=experiment`: `run_grid`; --qrels / --baseline override the experiment block's."""
  if baseline:
    config = copy.deepcopy(config)
    config.experiment.baseline = baseline
  summary = run_grid(config, workdir, qrels=qrels)
  if summary is not None:
    print(report.markdown(summary), flush=True)
  return summary
