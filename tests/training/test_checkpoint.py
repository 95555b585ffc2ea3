"""Checkpoints (training/checkpoint.py): what is saved restores exactly, the interval and
`max_to_keep` decide what is kept, and SIGTERM becomes a flag the loop reads."""
import os
import signal
import time

import jax
import numpy as np

from optical_jax.training import checkpoint


def _state(step: int) -> dict:
  """A training-state-like tree whose every leaf says which step it is from."""
  return {"step": np.array(step, np.int32), "params": {"w": np.full((2, 3), step, np.float32),
                                             "b": np.arange(4, dtype=np.float32) + step},
          "rng": np.array([step, 7], np.uint32)}


def _assert_state(got, step):
  want = _state(step)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(g), w)
    assert np.asarray(g).dtype == w.dtype


def test_save_and_restore_round_trip_keeping_the_last_max_to_keep(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, save_every=1, max_to_keep=2, async_save=False)
  assert ckpt.latest_step() is None and ckpt.restore(_state(0)) is None
  for step in (1, 2, 3, 4):
    assert ckpt.save(step, _state(step), {"data_position": {"step": step}, "note": "é"},
                     force=True)
  assert ckpt.manager.all_steps() == [3, 4]          # the oldest two were removed
  assert ckpt.directory == tmp_path.absolute() / "checkpoints"
  ckpt.close()

  # Another process (a new Checkpointer) finds them; the target only gives the shapes.
  again = checkpoint.Checkpointer(tmp_path)
  assert again.latest_step() == 4
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                        _state(0))
  state, meta = again.restore(target)
  _assert_state(state, 4)
  assert meta == {"data_position": {"step": 4}, "note": "é"}
  state, meta = again.restore(_state(0), step=3)
  _assert_state(state, 3)
  assert meta["data_position"] == {"step": 3}
  again.close()


def test_saves_every_save_every_steps_unless_forced(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path, save_every=3, max_to_keep=10, async_save=False)
  saved = {step: ckpt.save(step, _state(step), {}) for step in range(2, 8)}
  # Multiples of 3, and the first save into an empty directory (Orbax's initial-save
  # policy: a run killed before its first interval still leaves a checkpoint).
  assert {s for s, done in saved.items() if done} == {2, 3, 6}
  assert not ckpt.should_save(7) and ckpt.should_save(9)
  assert ckpt.save(7, _state(7), {}, force=True)      # preemption, the end of training
  assert ckpt.latest_step() == 7
  ckpt.close()


def test_preemption_guard_turns_sigterm_into_a_flag():
  before = signal.getsignal(signal.SIGTERM)
  with checkpoint.PreemptionGuard() as guard:
    assert guard.requested is None
    handler = signal.getsignal(signal.SIGTERM)
    assert getattr(handler, "__self__", None) is guard    # never the default: it would kill
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.time() + 5
    while guard.requested is None and time.time() < deadline:
      time.sleep(0.01)
    assert guard.requested == "SIGTERM"                  # and this process still runs
  assert signal.getsignal(signal.SIGTERM) is before
