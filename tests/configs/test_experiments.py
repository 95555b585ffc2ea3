"""Every experiment config's `:smoke` variant through the command line, as CI runs them:
each produces its table, CSV and plots; an interrupted grid finishes only what is missing."""
import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from optical_jax.research import cells
from optical_jax.research import plots

from tests import repo

REPO = repo.ROOT
SMOKES = ["methods:smoke", "ratio:smoke", "codeswitch:smoke", "codeswitch:smoke_mlqa",
          "calibration:smoke", "pretraining:smoke", "intent:smoke"]


@pytest.fixture(scope="module")
def env():
  """One CPU device, as a laptop user runs it (the suite's compilation cache comes
  along: the cells of a grid compile the same steps)."""
  return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def _args(spec: str, workdir) -> list[str]:
  name, _, arg = spec.partition(":")
  return [sys.executable, "-m", "optical_jax.main", "--mode=experiment",
          f"--config=configs/experiments/{name}.py:{arg}", f"--workdir={workdir}"]


def _load(spec: str):
  name, _, arg = spec.partition(":")
  return repo.load_config(f"configs/experiments/{name}.py", arg)


@pytest.mark.real_model
@pytest.mark.parametrize("spec", SMOKES)
def test_smoke_variant_writes_its_table_and_plots(spec, tmp_path, env):
  config = _load(spec)
  s = cells.settings(config)
  out = subprocess.run(_args(spec, tmp_path), cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  table = (tmp_path / "results.md").read_text()
  for name, _ in s.grid:
    assert f"| {name}" in table, (name, table)
  assert table in out.stdout            # the command prints what it writes
  with open(tmp_path / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(s.grid) * len(s.seeds)
  for row in rows:
    for m in s.metrics:
      value = float(row[m])
      assert math.isfinite(value), (row["cell"], m, value)
  for m in s.metrics:
    png = tmp_path / "plots" / f"bar_{plots._file_part(m)}.png"
    assert png.read_bytes().startswith(b"\x89PNG"), png
  if spec.startswith("calibration"):    # a reliability diagram per cell, named after its method
    for name, overrides in s.grid:
      method = overrides.get("method", config.method)
      assert list((tmp_path / "cells" / name).glob(f"seed*/calibration/{method}.png")), name


@pytest.mark.real_model
def test_an_interrupted_grid_runs_only_the_missing_cells(tmp_path, env):
  spec = "codeswitch:smoke"
  proc = subprocess.Popen(_args(spec, tmp_path), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  first = tmp_path / "cells" / "plain" / "seed0" / "done.json"
  deadline = time.time() + 600
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.5)
  assert first.exists(), "the first cell never finished"
  proc.send_signal(signal.SIGKILL)       # preempted in the middle of the second cell
  proc.wait()
  finished = first.read_text()
  out = subprocess.run(_args(spec, tmp_path), cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  assert "1 of 2 jobs to run" in out.stderr
  assert first.read_text() == finished   # the finished cell was not run again
  assert (tmp_path / "cells" / "codeswitch=0.3" / "seed0" / "done.json").exists()
