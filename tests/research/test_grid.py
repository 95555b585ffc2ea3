"""Experiment grids (research/grid.py) with a fake job: bad overrides fail first, an
interrupted grid reruns only its missing cells, sweeps, the experiment mode."""
import json

import pytest

from optical_jax import config as config_lib
from optical_jax.research import cells
from optical_jax.research import grid as grid_lib

from tests.research.fake_grid import GRID, METRICS, PNG, Counting, fake_job, make_config


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


def test_numeric_sweep_plot_and_string_job(tmp_path, qrels_path):
  grid = cells.sweep("loss.ot_weight", (0.0, 0.5, 2.0)) + [("base", {})]
  config = make_config(grid, seeds=(0, 1), baseline="base", qrels=qrels_path,
                       job="tests.research.fake_grid:fake_job")
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


def test_more_seeds_later_run_only_the_new_seeds(tmp_path, qrels_path):
  """A grid run with one seed, re-run with three into the same workdir: the finished
  seed-0 cells are kept (the seeds are not part of a cell's config) and the report
  averages over all three."""
  grid_lib.run_grid(make_config(GRID, seeds=(0,), qrels=qrels_path), tmp_path, job=fake_job)
  job = Counting()
  summary = grid_lib.run_grid(make_config(GRID, seeds=(0, 1, 2), qrels=qrels_path), tmp_path,
                              job=job)
  assert sorted(job.calls) == sorted(str(tmp_path / "cells" / c / f"seed{s}")
                                     for c, _ in GRID for s in (1, 2))
  assert all(summary.cells[c].seeds == (0, 1, 2) for c, _ in GRID)
