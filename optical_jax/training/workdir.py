"""A workdir is one run: a lock, a record of what determines the result, checks.

`open_run` is the first thing every job does with its workdir:

* it takes the workdir's lock (`.lock`: pid, host, start time). A second
  process on the same workdir is refused in one line; a lock left by a process
  that died on this host is taken over, saying so. The lock is per process and
  re-entrant (a job that calls another job on its workdir holds it once); on
  several hosts, process 0 holds it for all.
* it reads the run's record (`run.json`: the training record, every config
  key that decides what is trained and how, and the evaluation record, what is
  evaluated) and compares the config with it before anything is written. A
  different training config is refused, naming the keys, with nothing in the
  workdir changed; `train.steps` may change only where the learning-rate
  schedule of the steps already done stays the same (a constant schedule: the
  run continues). A different evaluation of a finished run is a new evaluation
  (the job evaluates the stored model into `evaluations/<digest>/`, beside the
  run's own results); of an unfinished run it is refused.
* a new run writes its record and `config.json` only once the checks passed.

The status says what the job does next: 'new' / 'resume' (train), 'complete'
(print the stored results), 'evaluate' (a new evaluation of a finished run).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import socket
import time
from typing import Any, Iterator, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from optical_jax import config as config_lib
from optical_jax.training import state as state_lib

log = logging.getLogger(__name__)

LOCK = ".lock"
RECORD = "run.json"
CONFIG = "config.json"
EVALUATIONS = "evaluations"
_held: dict[pathlib.Path, int] = {}   # this process's locks: path -> depth


class WorkdirLocked(RuntimeError):
  """Another live process holds the workdir."""


class WorkdirError(config_lib.ConfigError):
  """The workdir holds another run, or is not a directory."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # alive, someone else's
    return True
  return True


def _read_lock(path: pathlib.Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {}   # half-written by a process that died mid-write: treated as stale


@contextlib.contextmanager
def lock(workdir: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Holds `workdir` for this process (see the module docstring); yields its path.

  Raises:
    WorkdirError: `workdir` is a file.
    WorkdirLocked: another live process holds it (or one on another host).
  """
  wd = pathlib.Path(workdir).absolute()
  if wd.exists() and not wd.is_dir():
    raise WorkdirError(f"--workdir {workdir} is a file; give a directory (it is created)")
  wd.mkdir(parents=True, exist_ok=True)
  if wd in _held or jax.process_index() != 0:
    _held[wd] = _held.get(wd, 0) + 1
    try:
      yield wd
    finally:
      _held[wd] -= 1
      if not _held[wd]:
        del _held[wd]
    return
  path = wd / LOCK
  me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%F %T")}
  while True:
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      other = _read_lock(path)
      if other.get("host", me["host"]) != me["host"]:
        raise WorkdirLocked(
            f"{wd} is in use by process {other.get('pid')} on {other.get('host')} since "
            f"{other.get('since')}; wait for it, or delete {path} if that run is gone") from None
      if other.get("pid") and _pid_alive(int(other["pid"])):
        raise WorkdirLocked(
            f"{wd} is in use by process {other['pid']} (since {other.get('since')}); wait "
            "for it to finish or use another --workdir") from None
      # A dead process's lock: move it aside (one taker wins the rename), retry.
      try:
        os.rename(path, wd / f"{LOCK}.stale.{os.getpid()}")
      except FileNotFoundError:
        continue
      (wd / f"{LOCK}.stale.{os.getpid()}").unlink(missing_ok=True)
      log.warning("%s: took over the lock of process %s, which is gone", wd,
                  other.get("pid", "?"))
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    break
  _held[wd] = 1
  try:
    yield wd
  finally:
    _held.pop(wd, None)
    if _read_lock(path).get("pid") == me["pid"]:
      path.unlink(missing_ok=True)


def record(config: ml_collections.ConfigDict, keys: Sequence[str]) -> dict:
  """The record of `keys` (`config.resume_record`)."""
  return config_lib.resume_record(config, keys)


def digest(rec: Mapping[str, Any]) -> str:
  """A short stable name for a record (what `evaluations/` directories are called)."""
  return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12]


def _schedule_agrees(saved_train: Mapping[str, Any], train: ml_collections.ConfigDict,
                     done: int) -> bool:
  """Whether the learning rates of the `done` steps are the same under both
  `train` blocks (what lets a run continue with another `train.steps`)."""
  old = ml_collections.ConfigDict(dict(train.to_dict(), **saved_train))
  steps = np.arange(done)
  _, before = state_lib.make_optimizer(old)
  _, now = state_lib.make_optimizer(train)
  return bool(np.array_equal(np.asarray(before(steps)), np.asarray(now(steps))))


def latest_step(wd: pathlib.Path) -> int:
  """The newest checkpoint step in `wd/checkpoints` (0 when none), from the
  directory names: no checkpoint is opened."""
  steps = [int(p.name) for p in (wd / "checkpoints").glob("*") if p.name.isdigit()]
  return max(steps, default=0)


@dataclasses.dataclass
class Run:
  """A checked workdir.

  Attributes:
    path: the workdir.
    status: 'new', 'resume', 'complete' or 'evaluate' (see the module docstring).
    results: the stored results.json ({} for a new run).
    eval_dir: for 'evaluate', where the new evaluation goes.
  """
  path: pathlib.Path
  status: str
  results: dict
  eval_dir: pathlib.Path | None = None


def _differ(what: str, wd: pathlib.Path, keys: Sequence[str], saved: Mapping, now: Mapping,
            why: str) -> WorkdirError:
  flat_saved, flat_now = config_lib.flatten(saved), config_lib.flatten(now)
  shown = ", ".join(f"config.{k} ({flat_saved.get(k, '<default>')!r} there, "
                    f"{flat_now.get(k, '<unset>')!r} now)" for k in keys[:3])
  more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
  return WorkdirError(f"{wd} holds a run with another {what}: {shown}{more}; {why}")


def check(wd: pathlib.Path, config: ml_collections.ConfigDict, train_keys: Sequence[str],
          eval_keys: Sequence[str], finished) -> Run:
  """The workdir's status for `config`, before anything is written.

  Args:
    train_keys, eval_keys: the config blocks (or dotted keys) of the training
      and of the evaluation record.
    finished: results -> whether they are a finished run's (the job knows).

  Raises:
    WorkdirError: a different training config (naming the keys), or a
      different evaluation of an unfinished run.
  """
  results_path = wd / "results.json"
  results = json.loads(results_path.read_text()) if results_path.exists() else {}
  train_now, eval_now = record(config, train_keys), record(config, eval_keys)
  done = latest_step(wd)
  rec_path = wd / RECORD
  if not rec_path.exists():
    if done or results:
      log.warning("%s has no %s (a run of an older version): resuming it; the checkpoints' "
                  "own record is still checked", wd, RECORD)
      return Run(wd, "resume", results)
    return Run(wd, "new", {})
  saved = json.loads(rec_path.read_text())
  diff = config_lib.differences(saved["training"], train_now)
  if diff == ["train.steps"] and not _schedule_agrees(saved["training"]["train"], config.train,
                                                       done):
    raise _differ("training config", wd, diff, saved["training"], train_now,
                  "the learning-rate schedule of the steps done depends on train.steps "
                  "(only a constant schedule can continue); use a new --workdir")
  if diff and diff != ["train.steps"]:
    raise _differ("training config", wd, diff, saved["training"], train_now,
                  "rerun with the same config, or use a new --workdir")
  eval_diff = config_lib.differences(saved["eval"], eval_now)
  if finished(results):
    if eval_diff:
      return Run(wd, "evaluate", results, wd / EVALUATIONS / digest(eval_now))
    return Run(wd, "complete", results)
  if eval_diff:
    raise _differ("evaluation", wd, eval_diff, saved["eval"], eval_now,
                  "an unfinished run keeps its evaluation: finish it with the old one (then "
                  "rerun with the new one to evaluate the result on it), or use a new --workdir")
  return Run(wd, "resume" if done or results else "new", results)


def write_record(wd: pathlib.Path, config: ml_collections.ConfigDict,
                 train_keys: Sequence[str], eval_keys: Sequence[str]) -> None:
  """run.json and config.json of a run that passed `check` (process 0)."""
  if jax.process_index() != 0:
    return
  rec = {"training": record(config, train_keys), "eval": record(config, eval_keys)}
  for name, text in ((RECORD, json.dumps(rec, indent=2)), (CONFIG, config.to_json(indent=2))):
    tmp = wd / f"{name}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, wd / name)   # whole or not at all
