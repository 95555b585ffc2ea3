"""What a finished grid says: mean and spread over seeds, significance, tables.

`aggregate` reads the finished (cell, seed)s of an experiment workdir and
writes `results.csv` (one row per (cell, seed)), `results.md` (mean ± std over
seeds per cell, deltas, significance marks), `results.json` (the same numbers
with the p-values) and the plots. Significance pairs the cells' per-query
values (averaged over seeds) with the baseline's, read from their run files.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import pathlib
from typing import Mapping, Sequence

import ml_collections
import numpy as np

from optical_jax.data import layouts
from optical_jax.data import sources
from optical_jax.data import trec
from optical_jax.evaluation import metrics as metrics_lib
from optical_jax.evaluation import retrieval_eval
from optical_jax.evaluation import significance as significance_lib
from optical_jax.research import cells as cells_lib
from optical_jax.research import plots

log = logging.getLogger(__name__)

_DIGITS = 4


# Keys that choose the evaluation collection: cells that differ in them are not
# evaluated on the baseline's queries, so they cannot be paired with it.
_COLLECTION_KEYS = ("eval.collection", "eval.queries", "eval.corpus", "eval.qrels",
                    "eval.max_queries", "eval.max_docs", "data.heldout_books")


@dataclasses.dataclass(frozen=True)
class CellStats:
  """A cell's metrics over its finished seeds; `values[metric]` is `[n_seeds]`."""
  seeds: tuple[int, ...]
  values: Mapping[str, tuple[float, ...]]
  mean: Mapping[str, float]
  std: Mapping[str, float]       # sample std (ddof=1); 0 for a single seed


@dataclasses.dataclass(frozen=True)
class Significance:
  """A cell against the baseline on one metric, per-query values averaged over seeds."""
  delta: float
  p_ttest: float
  p_randomization: float
  significant: bool              # both p-values < alpha, as evaluate.markdown_table


@dataclasses.dataclass(frozen=True)
class Summary:
  """Everything the reports show; `significance[cell][metric]`, None when untestable."""
  settings: cells_lib.Settings
  cells: Mapping[str, CellStats]
  significance: Mapping[str, Mapping[str, Significance | None]]
  notes: tuple[str, ...]         # why a test is missing, which (cell, seed) are missing
  n_queries: int
  sweeps: Mapping[str, tuple[tuple[float, str], ...]]
  # also_against cell -> the same as `significance`, against that cell
  against: Mapping[str, Mapping[str, Mapping[str, Significance | None]]] = \
      dataclasses.field(default_factory=dict)

  def significant(self, cell: str, metric: str) -> bool:
    sig = self.significance.get(cell, {}).get(metric)
    return bool(sig and sig.significant)


def _testable(metric: str) -> tuple[str, str | None] | None:
  """(IR metric, language or None) whose per-query values `metric` averages, else None.

  'nDCG@10' -> ('nDCG@10', None); 'nDCG@10/sw' -> ('nDCG@10', 'sw'): the mean over
  the queries whose id starts with 'sw/'; 'nDCG@10/gap' or 'query_spread_cos' -> None.
  """
  base, _, lang = metric.partition("/")
  if lang in retrieval_eval.LANGUAGE_AGGREGATES:   # nothing per query to pair
    return None
  try:
    metrics_lib.parse_metric(base)
  except ValueError:
    return None
  return base, lang or None


def _per_query(qrels: Mapping, paths: Sequence[pathlib.Path],
               testable: Mapping[str, tuple[str, str | None]]) -> dict[str, dict[str, float]]:
  """metric -> {qid: value averaged over the runs (seeds)}, every judged query (of the
  metric's language, for a per-language metric)."""
  bases = sorted({base for base, _ in testable.values()})
  results = [metrics_lib.evaluate(qrels, trec.read_run(p), bases) for p in paths]
  return {m: {q: float(np.mean([r.per_query[base][q] for r in results]))
              for q in results[0].per_query[base]
              if lang is None or layouts.language_of(q) == lang}
          for m, (base, lang) in testable.items()}


def numeric_sweeps(s: cells_lib.Settings, configs: Mapping[str, ml_collections.ConfigDict]
                   ) -> dict[str, tuple[tuple[float, str], ...]]:
  """key -> ((value, cell), ...) ascending, for a numeric key that >= 3 cells vary alone.

  The cells of `key`'s sweep override nothing else (a cell without overrides sits
  at the base value, read from `configs`: cell -> its config).
  """
  sweeps = {}
  for key in sorted({k for _, overrides in s.grid for k in overrides}):
    points = [(cells_lib.config_value(configs[name], key), name) for name, overrides in s.grid
              if set(overrides) <= {key}]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v, _ in points) \
        and len({v for v, _ in points}) >= 3:
      sweeps[key] = tuple(sorted((float(v), name) for v, name in points))
  return sweeps


def aggregate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
              qrels: str | Mapping | None = None) -> Summary:
  """Summarises the finished (cell, seed)s of `workdir` and writes the reports.

  Cells with missing seeds are summarised over those they have (and noted).
  Each cell is tested against the baseline on per-query values averaged over
  its seeds: the pairs are queries, so seeds do not pose as extra queries.
  """
  s, wd = cells_lib.settings(config), pathlib.Path(workdir)
  runs = cells_lib.expand(config, wd)
  done = {(r.cell, r.seed): d for r in runs if (d := cells_lib.read_done(r)) is not None}
  notes = [f"{r.cell} seed {r.seed}: not finished" for r in runs if (r.cell, r.seed) not in done]
  cells: dict[str, CellStats] = {}
  for name, _ in s.grid:
    seeds = tuple(seed for seed in s.seeds if (name, seed) in done)
    for seed, m in ((seed, m) for seed in seeds for m in s.metrics
                    if m not in done[(name, seed)]["metrics"]):
      raise ValueError(f"cell {name!r} seed {seed}: the job reported no metric {m!r} "
                       f"(it has {sorted(done[(name, seed)]['metrics'])})")
    values = {m: tuple(done[(name, seed)]["metrics"][m] for seed in seeds) for m in s.metrics}
    if seeds:
      cells[name] = CellStats(seeds, values, {m: float(np.mean(v)) for m, v in values.items()},
                              {m: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
                               for m, v in values.items()})
  configs = {r.cell: r.config for r in runs}
  significance, n_queries = _significance(s, wd, cells, configs, qrels, notes, config.seed)
  against = {}
  for other in (b for b in s.also_against if b != s.baseline):
    more: list[str] = []
    against[other] = _significance(dataclasses.replace(s, baseline=other), wd, cells, configs,
                                   qrels, more, config.seed)[0]
    notes += [n for n in more if n not in notes]
  summary = Summary(s, cells, significance, tuple(notes), n_queries, numeric_sweeps(s, configs),
                    against)
  _write_reports(summary, runs, wd)
  return summary


def _significance(s: cells_lib.Settings, wd: pathlib.Path, cells: Mapping[str, CellStats],
                  configs: Mapping[str, ml_collections.ConfigDict], qrels: str | Mapping | None,
                  notes: list[str], test_seed: int) -> tuple[dict, int]:
  """(`significance[cell][metric]`, number of queries), from the cells' run files."""
  testable = {}
  for m in s.metrics:   # ir-measures' metrics, overall or per language
    split = _testable(m)
    if split:
      testable[m] = split
    elif m.partition("/")[2] in retrieval_eval.LANGUAGE_AGGREGATES:
      notes.append(f"{m}: a mean over languages, no significance test (see each language's)")
    else:
      notes.append(f"{m}: not an IR metric, no significance test")
  if s.baseline not in cells:
    return {}, 0
  qrels = qrels or s.qrels or None
  judged = trec.read_qrels(qrels) if isinstance(qrels, (str, os.PathLike)) else qrels
  if judged is None and testable:
    collection = sources.load(configs[s.baseline], need_train_data=False)[2]
    judged = collection and collection.qrels
    if judged is None:
      notes.append("no qrels (no experiment.qrels, no eval collection): no significance tests")

  def vectors(name: str) -> dict[str, dict[str, float]] | None:
    key = cells_lib.compared(s, configs[name])
    paths = [wd / "cells" / name / f"seed{seed}" / "eval" / f"{key}.run"
             for seed in cells[name].seeds]
    if not all(p.exists() for p in paths):
      notes.append(f"{name}: no eval/{key}.run for every seed, no significance test")
      return None
    out = _per_query(judged, paths, testable)
    for m in testable:   # the qrels must be the job's, or the tests test something else
      if out[m] and abs(np.mean(list(out[m].values())) - cells[name].mean[m]) > 1e-6:
        notes.append(f"{name}: {m} of the run files against the qrels differs from the job's: "
                     "are these the qrels the job evaluated on?")
    return out

  base = vectors(s.baseline) if judged and testable else None
  n_queries = max(len(v) for v in base.values()) if base else 0
  significance: dict[str, dict[str, Significance | None]] = {}
  for name in (n for n in cells if n != s.baseline):
    significance[name] = dict.fromkeys(s.metrics)
    comparable = qrels is not None or all(
        cells_lib.config_value(configs[name], k) == cells_lib.config_value(configs[s.baseline], k)
        for k in _COLLECTION_KEYS)
    if not comparable:
      notes.append(f"{name}: evaluated on another collection than {s.baseline}, no test")
    ours = vectors(name) if base and comparable and n_queries >= 2 else None
    for m in testable if ours else ():
      qids = sorted(base[m])
      if len(qids) < 2:   # a language with fewer than two judged queries: nothing to test
        continue
      a, b = np.array([ours[m][q] for q in qids]), np.array([base[m][q] for q in qids])
      p_t = significance_lib.paired_t_test(a, b)
      p_r = significance_lib.randomization_test(a, b, s.n_permutations, test_seed)
      significance[name][m] = Significance(
          cells[name].mean[m] - cells[s.baseline].mean[m], p_t, p_r, max(p_t, p_r) < s.alpha)
  return significance, n_queries


def markdown(summary: Summary) -> str:
  """Cells as rows, metrics as columns: `mean ± std (delta)` and the mark of significance."""
  s = summary.settings
  base = summary.cells.get(s.baseline)

  def entry(name: str, m: str) -> str:
    st = summary.cells[name]
    text = f"{st.mean[m]:.{_DIGITS}f} ± {st.std[m]:.{_DIGITS}f}"
    if name != s.baseline and base:
      text += f" ({st.mean[m] - base.mean[m]:+.{_DIGITS}f})" + (
          significance_lib.SIGNIFICANT_MARK if summary.significant(name, m) else "")
    return text

  lines = ["| cell | seeds | " + " | ".join(s.metrics) + " |",
           "|" + "---|" * (len(s.metrics) + 2)]
  for name in sorted(summary.cells, key=lambda n: n != s.baseline):   # baseline first
    label = name + (" (baseline)" if name == s.baseline else "")
    lines.append(f"| {label} | {len(summary.cells[name].seeds)} | "
                 + " | ".join(entry(name, m) for m in s.metrics) + " |")
  tests = (f"{significance_lib.SIGNIFICANT_MARK} p < {s.alpha} against {s.baseline} under both a "
           f"paired t-test and a paired randomization test ({s.n_permutations} sign flips) on "
           f"per-query values averaged over seeds; {summary.n_queries} queries (a "
           "language's column: its own queries); no multiple-comparison correction."
           if summary.n_queries else
           "No significance tests: no per-query retrieval runs to pair (see the notes).")
  compared = f"the {s.runs_to_compare} results" if s.runs_to_compare else "each cell's results"
  lines.append(f"\nmean ± sample std over seeds (0 for one seed) of {compared}. {tests}")
  for other, by_cell in summary.against.items():
    lines += [f"\nAgainst {other} (difference of means; {significance_lib.SIGNIFICANT_MARK} as "
              "above):\n", "| cell | " + " | ".join(s.metrics) + " |",
              "|" + "---|" * (len(s.metrics) + 1)]
    for name, by_metric in by_cell.items():
      if name == other:
        continue
      cols = []
      for m in s.metrics:
        sig = by_metric.get(m)
        cols.append("n/a" if sig is None else f"{sig.delta:+.{_DIGITS}f}"
                    + (significance_lib.SIGNIFICANT_MARK if sig.significant else "")
                    + f" (p={max(sig.p_ttest, sig.p_randomization):.3g})")
      lines.append(f"| {name} | " + " | ".join(cols) + " |")
  lines.append("\nCells:\n")
  lines += [f"- {name}: " + (", ".join(f"`{k}={v!r}`" for k, v in overrides.items())
                             or "the base config") for name, overrides in s.grid]
  if summary.notes:
    lines += ["\nNotes:\n"] + [f"- {note}" for note in summary.notes]
  return "\n".join(lines) + "\n"


def _write_reports(summary: Summary, runs: Sequence[cells_lib.CellRun], wd: pathlib.Path) -> None:
  s = summary.settings
  keys = sorted({k for _, overrides in s.grid for k in overrides})
  with open(wd / "results.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["cell", "seed"] + keys + list(s.metrics))
    for run in runs:   # seed-major order, as they ran
      st = summary.cells.get(run.cell)
      if st and run.seed in st.seeds:
        writer.writerow([run.cell, run.seed] + [cells_lib.config_value(run.config, k) for k in keys]
                        + [repr(st.values[m][st.seeds.index(run.seed)]) for m in s.metrics])
  table = markdown(summary)
  (wd / "results.md").write_text(table, encoding="utf-8")
  (wd / "results.json").write_text(json.dumps(
      {"settings": dataclasses.asdict(s), "n_queries": summary.n_queries,
       "cells": {n: dataclasses.asdict(c) for n, c in summary.cells.items()},
       "significance": {n: {m: sig and dataclasses.asdict(sig) for m, sig in by.items()}
                        for n, by in summary.significance.items()},
       "against": {b: {n: {m: sig and dataclasses.asdict(sig) for m, sig in by.items()}
                       for n, by in cells.items()} for b, cells in summary.against.items()},
       "sweeps": summary.sweeps, "notes": summary.notes}, indent=2, default=str))
  plots.plot_summary(summary, wd / "plots")
