"""The optimizer (training/state.py): its learning-rate schedule."""
import numpy as np

from optical_jax import config as config_lib
from optical_jax.training import state as state_lib


def _train_cfg(**kw):
  c = config_lib.default().train
  c.update(kw)
  return c


def test_schedule_warms_up_then_decays():
  _, schedule = state_lib.make_optimizer(_train_cfg(steps=100, lr=1.0, warmup_frac=0.1))
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(10)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(55)), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(100)), 0.0, atol=1e-6)
