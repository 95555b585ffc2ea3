"""Experiment cells (research/cells.py): expansion into (cell, seed) jobs, the checked block."""
import pytest

from optical_jax import config as config_lib
from optical_jax.research import cells

from tests.research.fake_grid import GRID, make_config


def test_expand_workdirs_overrides_and_lock(tmp_path):
  config = make_config(GRID, seeds=(3, 7))
  runs = cells.expand(config, tmp_path)
  # Seed-major, one workdir per (cell, seed).
  assert [(r.cell, r.seed) for r in runs] == \
      [(c, s) for s in (3, 7) for c in ("base", "same", "better")]
  assert [r.workdir for r in runs] == [tmp_path / "cells" / r.cell / f"seed{r.seed}" for r in runs]
  by = {(r.cell, r.seed): r.config for r in runs}
  assert by[("better", 7)].loss.ot_weight == 1.0 and by[("base", 7)].loss.ot_weight == 0.3
  assert by[("better", 7)].seed == 7 and by[("base", 3)].seed == 3
  assert config.loss.ot_weight == 0.3 and config.seed == 0      # the base is untouched
  for cfg in by.values():
    # A job's config: the grid is not its business (it gets default()'s empty block).
    assert cfg.is_locked and cfg.experiment.to_dict() == config_lib.default().experiment.to_dict()
    with pytest.raises(AttributeError):
      cfg.loss.new_field = 1


def test_bad_blocks():
  with pytest.raises(config_lib.ConfigError, match="baseline='nope'"):
    cells.settings(make_config(GRID, baseline="nope"))
  with pytest.raises(config_lib.ConfigError, match="distinct"):
    cells.settings(make_config(GRID + [("base", {})]))
  with pytest.raises(config_lib.ConfigError, match=r"bad: \[.a/b.\]"):
    cells.settings(make_config([("a/b", {})]))
  without = config_lib.default()
  del without["experiment"]
  with pytest.raises(config_lib.ConfigError, match="config.experiment is missing"):
    cells.settings(without)
  with pytest.raises(config_lib.ConfigError, match=r"config\.experiment\.grid: need distinct"):
    cells.settings(config_lib.default())     # default()'s block has no cells
