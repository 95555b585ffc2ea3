"""Grids of runs: one job per (cell, seed), resumable, aggregated with significance tests.

An experiment config (`configs/experiments/*.py`) is a job config plus an
`experiment` block made by `experiment_block`:

  grid             [(name, {dotted key: value}), ...]: the cells; {} is the base config
  seeds            every cell runs once per seed, with config.seed = seed
  baseline         the cell every other is tested against (default: the first)
  also_against     more cells to test every other against (a table each)
  metrics          what is reported (default: config.eval.metrics)
  runs_to_compare  the job's results[it] is reported, its eval/<it>.run tested
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
import csv
import dataclasses
import importlib
import json
import logging
import os
import pathlib
import re
import sys
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np
from matplotlib.figure import Figure

from optical_jax import config as config_lib
from optical_jax import evaluate as evaluate_lib

log = logging.getLogger(__name__)

Job = Callable[[ml_collections.ConfigDict, str], Mapping[str, Any]]
# Cell names become directory names: no separators, no whitespace, no dot files.
_CELL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+@-]*")
_DONE = "done.json"
_DIGITS = 4
# Keys that choose the evaluation collection: cells that differ in them are not
# evaluated on the baseline's queries, so they cannot be paired with it.
_COLLECTION_KEYS = ("eval.collection", "eval.queries", "eval.corpus", "eval.qrels",
                    "eval.max_queries", "eval.max_docs", "data.heldout_books")


@dataclasses.dataclass(frozen=True)
class Settings:
  """The `experiment` block with its defaults (the module docstring says what each does)."""
  grid: tuple[tuple[str, Mapping[str, Any]], ...] = ()
  seeds: tuple[int, ...] = (0,)
  baseline: str = ""                # '' = the first cell
  also_against: tuple[str, ...] = ()
  metrics: tuple[str, ...] = ()     # () = config.eval.metrics
  runs_to_compare: str = "optical"
  job: str = "distill"
  qrels: str = ""
  n_permutations: int = 10_000
  alpha: float = 0.05


@dataclasses.dataclass(frozen=True)
class CellRun:
  """One job of the grid: its config (overrides applied, seed set, locked) and workdir."""
  cell: str
  seed: int
  overrides: Mapping[str, Any]
  workdir: pathlib.Path
  config: ml_collections.ConfigDict


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
  settings: Settings
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


def experiment_block(grid: Sequence[tuple[str, Mapping[str, Any]]],
                     **fields: Any) -> ml_collections.ConfigDict:
  """`c.experiment = experiment_block(grid, seeds=(0, 1, 2), ...)` before `c.lock()`;
  `fields` are `Settings`'. The grid stays (name, dict) pairs: ConfigDict keys hold no dots."""
  block = dataclasses.asdict(Settings(**fields))
  return ml_collections.ConfigDict(dict(block, grid=[(n, dict(o)) for n, o in grid]))


def sweep(key: str, values: Sequence[float]) -> list[tuple[str, dict[str, Any]]]:
  """Cells `<last part of key>=<value>` setting `key` to each value, for `grid`."""
  return [(f"{key.rsplit('.', 1)[-1]}={v}", {key: v}) for v in values]


def _check(ok: Any, what: str) -> None:
  if not ok:
    raise config_lib.ConfigError(f"config.experiment{what}")


def settings(config: ml_collections.ConfigDict) -> Settings:
  """The checked `experiment` block of `config` (raises ConfigError naming the field)."""
  _check("experiment" in config, " is missing: add experiments.experiment_block(...)")
  block = config.experiment.to_dict()
  unknown = sorted(set(block) - {f.name for f in dataclasses.fields(Settings)})
  _check(not unknown, f": unknown fields {unknown}")
  s = Settings(**block)
  grid = tuple((str(name), dict(overrides)) for name, overrides in s.grid)
  names = [name for name, _ in grid]
  bad = [n for n in names if not _CELL_NAME.fullmatch(n)]
  _check(grid and not bad and len(set(names)) == len(names),
         f".grid: need distinct cell names matching {_CELL_NAME.pattern} (each names a "
         f"directory), got {names}" + (f"; bad: {bad}" if bad else ""))
  s = dataclasses.replace(s, grid=grid, seeds=tuple(int(x) for x in s.seeds),
                          baseline=s.baseline or names[0],
                          metrics=tuple(s.metrics) or tuple(config.eval.metrics))
  _check(s.seeds and len(set(s.seeds)) == len(s.seeds), f".seeds={s.seeds}: need distinct seeds")
  for m in s.metrics:   # an IR metric (or its per-language 'METRIC/lang') the job will not compute
    base = m.split("/", 1)[0]
    try:
      evaluate_lib.parse_metric(base)
    except ValueError:
      continue
    _check(base in tuple(config.eval.metrics),
           f".metrics: {m!r} is not computed: add {base!r} to config.eval.metrics")
  _check(s.baseline in names, f".baseline={s.baseline!r} is not a cell of {names}")
  s = dataclasses.replace(s, also_against=tuple(s.also_against))
  _check(all(b in names for b in s.also_against),
         f".also_against={s.also_against} names a cell not in {names}")
  _check(s.n_permutations >= 1, f".n_permutations={s.n_permutations} < 1")
  _check(0 < s.alpha < 1, f".alpha={s.alpha} is not in (0, 1)")
  return s


def _lookup(config: ml_collections.ConfigDict, key: str, cell: str) -> tuple[Any, str]:
  """(the ConfigDict holding `key`, its last part); ConfigError if `key` is unknown."""
  *path, field = key.split(".")
  node = config
  for part in path:
    node = node[part] if isinstance(node, ml_collections.ConfigDict) and part in node else None
  if not isinstance(node, ml_collections.ConfigDict) or field not in node:
    raise config_lib.ConfigError(f"cell {cell!r}: unknown config key {key!r}")
  return node, field


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  node, field = _lookup(config, key, "")
  return node[field]


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any],
                    cell: str) -> ml_collections.ConfigDict:
  """A copy of `config` with `overrides` set; it keeps `config`'s lock.

  Raises:
    ConfigError: naming the cell, for a key the config lacks, a value of another
      type, or `seed` / `experiment.*` (the grid owns those).
  """
  out = copy.deepcopy(config)
  for key, value in overrides.items():
    if key.split(".")[0] in ("seed", "experiment"):
      raise config_lib.ConfigError(f"cell {cell!r}: {key!r} cannot be overridden by a cell "
                                   "(seeds come from experiment.seeds)")
    node, field = _lookup(out, key, cell)
    try:
      node[field] = value
    except (TypeError, ValueError) as e:
      raise config_lib.ConfigError(f"cell {cell!r}: config.{key}={value!r}: {e}") from None
  return out


def expand(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> list[CellRun]:
  """Every (cell, seed) job, seed-major: after the first seed, every cell has a result.

  All overrides are checked here, before any job runs: a typo in the last cell
  fails now, not after hours of training. Job configs have no `experiment` block.
  """
  s, base = settings(config), copy.deepcopy(config)
  with base.unlocked():
    del base["experiment"]
  cells = {name: apply_overrides(base, overrides, name) for name, overrides in s.grid}
  runs = []
  for seed in s.seeds:
    for name, overrides in s.grid:
      cfg = copy.deepcopy(cells[name])
      cfg.seed = seed
      runs.append(CellRun(name, seed, overrides,
                          pathlib.Path(workdir) / "cells" / name / f"seed{seed}", cfg))
  return runs


def resolve_job(name: str) -> Job:
  """'distill' (any jobs.MODES name) or 'package.module:function' -> the function."""
  if ":" in name:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)
  from optical_jax import jobs  # pylint: disable=g-import-not-at-top  (jobs imports us)
  if name not in jobs.MODES or name == "experiment":
    raise config_lib.ConfigError(f"config.experiment.job={name!r}: expected a job of "
                                 f"{sorted(set(jobs.MODES) - {'experiment'})} or 'module:fn'")
  return jobs.MODES[name]


def _is_main_process() -> bool:
  """Process 0 writes the shared files; jax is asked only if a job has loaded it."""
  return "jax" not in sys.modules or sys.modules["jax"].process_index() == 0


def _read_done(run: CellRun) -> dict | None:
  """The done.json of `run`, or None; ConfigError if it was made by another config."""
  path = run.workdir / _DONE
  if not path.exists():
    return None
  done, now = json.loads(path.read_text()), json.loads(run.config.to_json_best_effort())
  diff = config_lib.differences(done["config"], now)
  if diff:
    raise config_lib.ConfigError(
        f"{run.workdir} finished with another config (config.{diff[0]} differs): restore "
        "the experiment config, or delete that cell's directory to rerun it")
  return done


def _write_done(run: CellRun, results: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
  """done.json via a rename: a crash leaves either no marker or a whole one."""
  path = run.workdir / _DONE
  tmp = path.with_name(f"{_DONE}.{os.getpid()}.tmp")
  record = {"cell": run.cell, "seed": run.seed, "overrides": dict(run.overrides),
            "metrics": {k: float(v) for k, v in metrics.items()
                        if isinstance(v, (int, float, np.number))},
            "results": results, "config": json.loads(run.config.to_json_best_effort())}
  tmp.write_text(json.dumps(record, indent=2, default=lambda v: getattr(v, "tolist", str)(v)))
  os.replace(tmp, path)


def run_grid(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
             job: Job | None = None, qrels: str | Mapping | None = None) -> Summary | None:
  """Runs every unfinished (cell, seed) of `config`'s grid, then `aggregate`s.

  Args:
    job: (config, workdir) -> results with a metrics dict `results[runs_to_compare]`;
      default `experiment.job`.
    qrels: path or `{qid: {docid: grade}}` for the significance tests; default
      `experiment.qrels`, else the configured collection's.

  Returns the summary; None on processes other than 0, which write nothing. A bad
  experiment block or override raises ConfigError before any job runs; whatever a
  job raises propagates, and the jobs finished before it keep their done.json.
  """
  s, runs = settings(config), expand(config, workdir)
  job = job or resolve_job(s.job)
  todo = [r for r in runs if _read_done(r) is None]
  log.info("experiment %s: %d of %d jobs to run", workdir, len(todo), len(runs))
  for i, run in enumerate(todo, 1):
    log.info("[%d/%d] cell %s seed %d -> %s", i, len(todo), run.cell, run.seed, run.workdir)
    run.workdir.mkdir(parents=True, exist_ok=True)
    results = job(run.config, str(run.workdir))
    if not isinstance((results or {}).get(s.runs_to_compare), Mapping):
      raise ValueError(f"cell {run.cell!r} seed {run.seed}: the job returned no "
                       f"{s.runs_to_compare!r} metrics dict: {str(results)[:200]}")
    if _is_main_process():
      _write_done(run, results, results[s.runs_to_compare])
  return aggregate(config, workdir, qrels=qrels) if _is_main_process() else None


def _per_query(qrels: Mapping, paths: Sequence[pathlib.Path],
               metrics: Sequence[str]) -> dict[str, dict[str, float]]:
  """metric -> {qid: value averaged over the runs (seeds)}, every judged query."""
  results = [evaluate_lib.evaluate(qrels, evaluate_lib.read_run(p), metrics) for p in paths]
  return {m: {q: float(np.mean([r.per_query[m][q] for r in results]))
              for q in results[0].per_query[m]} for m in metrics}


def numeric_sweeps(s: Settings, configs: Mapping[str, ml_collections.ConfigDict]
                   ) -> dict[str, tuple[tuple[float, str], ...]]:
  """key -> ((value, cell), ...) ascending, for a numeric key that >= 3 cells vary alone.

  The cells of `key`'s sweep override nothing else (a cell without overrides sits
  at the base value, read from `configs`: cell -> its config).
  """
  sweeps = {}
  for key in sorted({k for _, overrides in s.grid for k in overrides}):
    points = [(_get(configs[name], key), name) for name, overrides in s.grid
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
  s, wd = settings(config), pathlib.Path(workdir)
  runs = expand(config, wd)
  done = {(r.cell, r.seed): d for r in runs if (d := _read_done(r)) is not None}
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


def _significance(s: Settings, wd: pathlib.Path, cells: Mapping[str, CellStats],
                  configs: Mapping[str, ml_collections.ConfigDict], qrels: str | Mapping | None,
                  notes: list[str], test_seed: int) -> tuple[dict, int]:
  """(`significance[cell][metric]`, number of queries), from the cells' run files."""
  testable = []
  for m in s.metrics:   # ir-measures' metrics; not e.g. distill's query_spread_cos
    try:
      evaluate_lib.parse_metric(m)
      testable.append(m)
    except ValueError:
      notes.append(f"{m}: not an IR metric, no significance test")
  if s.baseline not in cells:
    return {}, 0
  qrels = qrels or s.qrels or None
  judged = evaluate_lib.read_qrels(qrels) if isinstance(qrels, (str, os.PathLike)) else qrels
  if judged is None and testable:
    from optical_jax.data import sources  # pylint: disable=g-import-not-at-top  (heavy)
    collection = sources.load(configs[s.baseline], need_train_data=False)[2]
    judged = collection and collection.qrels
    if judged is None:
      notes.append("no qrels (no experiment.qrels, no eval collection): no significance tests")

  def vectors(name: str) -> dict[str, dict[str, float]] | None:
    paths = [wd / "cells" / name / f"seed{seed}" / "eval" / f"{s.runs_to_compare}.run"
             for seed in cells[name].seeds]
    if not all(p.exists() for p in paths):
      notes.append(f"{name}: no eval/{s.runs_to_compare}.run for every seed, no significance test")
      return None
    out = _per_query(judged, paths, testable)
    for m in testable:   # the qrels must be the job's, or the tests test something else
      if abs(np.mean(list(out[m].values())) - cells[name].mean[m]) > 1e-6:
        notes.append(f"{name}: {m} of the run files against the qrels differs from the job's: "
                     "are these the qrels the job evaluated on?")
    return out

  base = vectors(s.baseline) if judged and testable else None
  n_queries = len(next(iter(base.values()))) if base else 0
  significance: dict[str, dict[str, Significance | None]] = {}
  for name in (n for n in cells if n != s.baseline):
    significance[name] = dict.fromkeys(s.metrics)
    comparable = qrels is not None or all(
        _get(configs[name], k) == _get(configs[s.baseline], k) for k in _COLLECTION_KEYS)
    if not comparable:
      notes.append(f"{name}: evaluated on another collection than {s.baseline}, no test")
    ours = vectors(name) if base and comparable and n_queries >= 2 else None
    for m in testable if ours else ():
      qids = sorted(base[m])
      a, b = np.array([ours[m][q] for q in qids]), np.array([base[m][q] for q in qids])
      p_t = evaluate_lib.paired_t_test(a, b)
      p_r = evaluate_lib.randomization_test(a, b, s.n_permutations, test_seed)
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
          evaluate_lib.SIGNIFICANT_MARK if summary.significant(name, m) else "")
    return text

  lines = ["| cell | seeds | " + " | ".join(s.metrics) + " |",
           "|" + "---|" * (len(s.metrics) + 2)]
  for name in sorted(summary.cells, key=lambda n: n != s.baseline):   # baseline first
    label = name + (" (baseline)" if name == s.baseline else "")
    lines.append(f"| {label} | {len(summary.cells[name].seeds)} | "
                 + " | ".join(entry(name, m) for m in s.metrics) + " |")
  tests = (f"{evaluate_lib.SIGNIFICANT_MARK} p < {s.alpha} against {s.baseline} under both a "
           f"paired t-test and a paired randomization test ({s.n_permutations} sign flips) on "
           f"per-query values averaged over seeds; {summary.n_queries} queries; no "
           "multiple-comparison correction." if summary.n_queries else
           "No significance tests: no per-query retrieval runs to pair (see the notes).")
  lines.append(f"\nmean ± sample std over seeds (0 for one seed) of the {s.runs_to_compare} "
               f"results. {tests}")
  for other, by_cell in summary.against.items():
    lines += [f"\nAgainst {other} (difference of means; {evaluate_lib.SIGNIFICANT_MARK} as "
              "above):\n", "| cell | " + " | ".join(s.metrics) + " |",
              "|" + "---|" * (len(s.metrics) + 1)]
    for name, by_metric in by_cell.items():
      if name == other:
        continue
      cols = []
      for m in s.metrics:
        sig = by_metric.get(m)
        cols.append("n/a" if sig is None else f"{sig.delta:+.{_DIGITS}f}"
                    + (evaluate_lib.SIGNIFICANT_MARK if sig.significant else "")
                    + f" (p={max(sig.p_ttest, sig.p_randomization):.3g})")
      lines.append(f"| {name} | " + " | ".join(cols) + " |")
  lines.append("\nCells:\n")
  lines += [f"- {name}: " + (", ".join(f"`{k}={v!r}`" for k, v in overrides.items())
                             or "the base config") for name, overrides in s.grid]
  if summary.notes:
    lines += ["\nNotes:\n"] + [f"- {note}" for note in summary.notes]
  return "\n".join(lines) + "\n"


def _file_part(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _write_reports(summary: Summary, runs: Sequence[CellRun], wd: pathlib.Path) -> None:
  s = summary.settings
  keys = sorted({k for _, overrides in s.grid for k in overrides})
  with open(wd / "results.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["cell", "seed"] + keys + list(s.metrics))
    for run in runs:   # seed-major order, as they ran
      st = summary.cells.get(run.cell)
      if st and run.seed in st.seeds:
        writer.writerow([run.cell, run.seed] + [_get(run.config, k) for k in keys]
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
  _plot(summary, wd / "plots")


def _plot(summary: Summary, out: pathlib.Path) -> None:
  """A bar chart per metric, a line plot per (numeric sweep, metric); Agg, no pyplot state."""
  out.mkdir(parents=True, exist_ok=True)
  s, names = summary.settings, list(summary.cells)
  figures = [(f"bar_{_file_part(m)}", m, None, list(enumerate(names))) for m in s.metrics]
  figures += [(f"sweep_{_file_part(key)}_{_file_part(m)}", m, key, points)
              for key, points in summary.sweeps.items() for m in s.metrics
              if all(n in summary.cells for _, n in points)]
  for filename, m, key, points in figures:
    fig = Figure(figsize=(max(5.0, 0.8 * len(points) + 1.5), 4), layout="constrained")
    ax = fig.add_subplot()
    xs, cells = [x for x, _ in points], [summary.cells[n] for _, n in points]
    ys, errs = [c.mean[m] for c in cells], [c.std[m] for c in cells]
    if key:
      ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=4)
      ax.set_xlabel(key)
    else:
      ax.bar(xs, ys, yerr=errs, capsize=4, alpha=0.8,
             color=["tab:gray" if n == s.baseline else "tab:blue" for n in names])
      for x, c in zip(xs, cells):   # the seeds as dots: the spread behind the error bar
        ax.plot([x] * len(c.values[m]), c.values[m], "k.", markersize=4)
      ax.set_xticks(xs, names, rotation=30, ha="right")
    for x, y, err, (_, n) in zip(xs, ys, errs, points):
      if summary.significant(n, m):
        ax.annotate(evaluate_lib.SIGNIFICANT_MARK, (x, y + err), ha="center", va="bottom")
    ax.set_ylabel(m)
    ax.set_title(f"{m}{f' against {key}' if key else ''}: mean ± std over seeds; "
                 f"{evaluate_lib.SIGNIFICANT_MARK} against {s.baseline}", fontsize=9)
    fig.savefig(out / f"{filename}.png", format="png", dpi=100)


def experiment_mode(config: ml_collections.ConfigDict, workdir: str, *,
                    qrels: str | None = None, baseline: str | None = None,
                    **_) -> Summary | None:
  """`--mode=experiment`: `run_grid`; --qrels / --baseline override the experiment block's."""
  if baseline:
    config = copy.deepcopy(config)
    config.experiment.baseline = baseline
  summary = run_grid(config, workdir, qrels=qrels)
  if summary is not None:
    print(markdown(summary), flush=True)
  return summary
