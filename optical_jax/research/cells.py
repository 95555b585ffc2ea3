"""An experiment's cells: the `experiment` config block, expanded into jobs.

The block (defined in `config.default()`, filled by `configs/experiments/*.py`)
holds the grid: `[(name, {dotted key: value}), ...]`, each cell the base
config with its overrides, run once per seed. `expand` checks every override
before any job runs; a finished (cell, seed) leaves a `done.json` marker with
its results and config, so a rerun skips it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from optical_jax import config as config_lib
from optical_jax.evaluation import metrics as metrics_lib

Job = Callable[[ml_collections.ConfigDict, str], Mapping[str, Any]]


# Cell names become directory names: no separators, no whitespace, no dot files.
_CELL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+@-]*")


_DONE = "done.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """The checked `experiment` block (`config.default()` has its defaults and
  says what each field does)."""
  grid: tuple[tuple[str, Mapping[str, Any]], ...]
  seeds: tuple[int, ...]
  baseline: str
  also_against: tuple[str, ...]
  metrics: tuple[str, ...]
  runs_to_compare: str
  job: str
  qrels: str
  n_permutations: int
  alpha: float


@dataclasses.dataclass(frozen=True)
class CellRun:
  """One job of the grid: its config (overrides applied, seed set, locked) and workdir."""
  cell: str
  seed: int
  overrides: Mapping[str, Any]
  workdir: pathlib.Path
  config: ml_collections.ConfigDict


def compared(s: Settings, config: ml_collections.ConfigDict) -> str:
  """The results key (and eval/ run name) a cell is reported by: the block's
  `runs_to_compare`, else the cell's method."""
  return s.runs_to_compare or config.method


def sweep(key: str, values: Sequence[float]) -> list[tuple[str, dict[str, Any]]]:
  """Cells `<last part of key>=<value>` setting `key` to each value, for `grid`."""
  return [(f"{key.rsplit('.', 1)[-1]}={v}", {key: v}) for v in values]


def check(ok: Any, what: str) -> None:
  if not ok:
    raise config_lib.ConfigError(f"config.experiment{what}")


def settings(config: ml_collections.ConfigDict) -> Settings:
  """The checked `experiment` block of `config` (raises ConfigError naming the field)."""
  check("experiment" in config, " is missing: start the config from config.default()")
  block = config.experiment.to_dict()
  fields = {f.name for f in dataclasses.fields(Settings)}
  unknown, missing = sorted(set(block) - fields), sorted(fields - set(block))
  check(not unknown, f": unknown fields {unknown}")
  check(not missing, f": missing fields {missing}; start the config from config.default()")
  s = Settings(**block)
  grid = tuple((str(name), dict(overrides)) for name, overrides in s.grid)
  names = [name for name, _ in grid]
  bad = [n for n in names if not _CELL_NAME.fullmatch(n)]
  check(grid and not bad and len(set(names)) == len(names),
         f".grid: need distinct cell names matching {_CELL_NAME.pattern} (each names a "
         f"directory), got {names}" + (f"; bad: {bad}" if bad else ""))
  s = dataclasses.replace(s, grid=grid, seeds=tuple(int(x) for x in s.seeds),
                          baseline=s.baseline or names[0],
                          metrics=tuple(s.metrics) or tuple(config.eval.metrics))
  check(s.seeds and len(set(s.seeds)) == len(s.seeds), f".seeds={s.seeds}: need distinct seeds")
  for m in s.metrics:   # an IR metric (or its per-language 'METRIC/lang') the job will not compute
    base = m.split("/", 1)[0]
    try:
      metrics_lib.parse_metric(base)
    except ValueError:
      continue
    check(base in tuple(config.eval.metrics),
           f".metrics: {m!r} is not computed: add {base!r} to config.eval.metrics")
  check(s.baseline in names, f".baseline={s.baseline!r} is not a cell of {names}")
  s = dataclasses.replace(s, also_against=tuple(s.also_against))
  check(all(b in names for b in s.also_against),
         f".also_against={s.also_against} names a cell not in {names}")
  check(s.n_permutations >= 1, f".n_permutations={s.n_permutations} < 1")
  check(0 < s.alpha < 1, f".alpha={s.alpha} is not in (0, 1)")
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


def config_value(config: ml_collections.ConfigDict, key: str) -> Any:
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
  fails now, not after hours of training. Job configs get the default (empty)
  `experiment` block.
  """
  s, base = settings(config), copy.deepcopy(config)
  with base.unlocked():   # a job's config: the grid is not its business
    base.experiment = config_lib.default().experiment
  cells = {name: apply_overrides(base, overrides, name) for name, overrides in s.grid}
  runs = []
  for seed in s.seeds:
    for name, overrides in s.grid:
      cfg = copy.deepcopy(cells[name])
      cfg.seed = seed
      runs.append(CellRun(name, seed, overrides,
                          pathlib.Path(workdir) / "cells" / name / f"seed{seed}", cfg))
  return runs


def read_done(run: CellRun) -> dict | None:
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


def write_done(run: CellRun, results: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
  """done.json via a rename: a crash leaves either no marker or a whole one."""
  path = run.workdir / _DONE
  tmp = path.with_name(f"{_DONE}.{os.getpid()}.tmp")
  record = {"cell": run.cell, "seed": run.seed, "overrides": dict(run.overrides),
            "metrics": {k: float(v) for k, v in metrics.items()
                        if isinstance(v, (int, float, np.number))},
            "results": results, "config": json.loads(run.config.to_json_best_effort())}
  tmp.write_text(json.dumps(record, indent=2, default=lambda v: getattr(v, "tolist", str)(v)))
  os.replace(tmp, path)
