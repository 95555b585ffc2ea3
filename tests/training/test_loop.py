"""The training loop (training/loop.py) with a fake step and order: which batches it builds,
what it logs every `log_every` steps, its checkpoints, the NaN stop naming the step, SIGTERM,
evaluation every `eval_every` steps, and resuming under the same config only."""
import os
import signal

import numpy as np
import optax
import pytest

from optical_jax import config as config_lib
from optical_jax.training import checkpoint
from optical_jax.training import loop as loop_lib
from optical_jax.training import metric_log
from optical_jax.training import state as state_lib


class _Order:
  """Two examples a step: step s reads examples 2s and 2s + 1."""

  def indices(self, step, process_index=0, process_count=1):
    del process_index, process_count
    return np.arange(2 * step, 2 * step + 2)

  def position(self, done):
    return {"step": done}


def _loop(workdir, steps, losses, *, on_step=None, save_every=2, **kw):
  """A Loop whose state counts the steps done and whose step `i` (0-based) reports
  `losses[i]`; the batches it was given are in `.built`."""
  built = []

  def make_batch(step, idx):
    built.append((step, idx.tolist()))
    return {"idx": idx}

  def step(state, batch):
    i = int(state["step"])
    assert batch["idx"].tolist() == [2 * i, 2 * i + 1]
    if on_step:
      on_step(i)
    new = {"step": np.array(i + 1, np.int32), "w": state["w"] + 1.0}
    return new, {"loss": losses[i], "aux": 2.0 * i}

  loop = loop_lib.Loop(
      steps=steps, batch_size=2, order=_Order(), make_batch=make_batch, step=step,
      to_host=lambda s: s,
      ckpt=checkpoint.Checkpointer(workdir, save_every=save_every, max_to_keep=20,
                                   async_save=False),
      logger=metric_log.MetricLogger(workdir, tensorboard=False), meta={"config": {"seed": 0}},
      schedule=lambda s: 0.1 * s, progress=False, **kw)
  loop.built = built
  return loop


def _state(step=0):
  return {"step": np.array(step, np.int32), "w": np.full(3, float(step), np.float32)}


def _saved(workdir):
  ckpt = checkpoint.Checkpointer(workdir)
  steps = ckpt.manager.all_steps()
  state, meta = ckpt.restore(_state()) if steps else (None, None)
  ckpt.close()
  return list(steps), state, meta


def test_steps_logs_and_checkpoints(tmp_path):
  loop = _loop(tmp_path, 7, [float(i) for i in range(7)], log_every=3,
               extra_log=lambda: {"extra": 1.0})
  final = loop_lib.run(loop, _state(), 0)
  assert int(final["step"]) == 7 and final["w"].tolist() == [7.0] * 3
  assert loop.built == [(s, [2 * s, 2 * s + 1]) for s in range(7)]
  # Every 3rd step and the last, each with its step's metrics, the rate of the step
  # (0-based step done - 1) and the extra values.
  records = loop.logger.read()
  assert [r["step"] for r in records] == [3, 6, 7] and {r["kind"] for r in records} == {"train"}
  for r in records:
    i = r["step"] - 1
    assert (r["loss"], r["aux"], r["extra"]) == (float(i), 2.0 * i, 1.0)
    assert r["lr"] == pytest.approx(0.1 * i)
    assert "pairs_per_s" in r
  steps, state, meta = _saved(tmp_path)
  assert {2, 4, 6, 7} <= set(steps) and max(steps) == 7   # every 2nd, and the end forced
  assert int(state["step"]) == 7
  # The running counters (extra_log) go with the state, as they were at step 7.
  assert meta == {"config": {"seed": 0}, "data_position": {"step": 7},
                  "counters": {"extra": 1.0}}


def test_a_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
  losses = [1.0, 1.0, 1.0, 1.0, float("nan"), 1.0, 1.0]
  loop = _loop(tmp_path, 7, losses, log_every=1)
  with pytest.raises(FloatingPointError,
                     match=r"the loss became nan at step 5; stopping\. The last good checkpoint "
                           r"\(step 4\) is kept in"):
    loop_lib.run(loop, _state(), 0)
  assert [r["step"] for r in loop.logger.read()] == [1, 2, 3, 4]   # nothing of step 5
  steps, state, _ = _saved(tmp_path)
  assert max(steps) == 4 and int(state["step"]) == 4
  loop.ckpt.close()


class _Recorded:
  """A loss whose reading (what waits for a device step to finish) is recorded."""

  def __init__(self, events, i, value):
    self.events, self.i, self.value = events, i, value

  def __float__(self):
    self.events.append(("read", self.i))
    return self.value


def test_each_loss_is_read_after_the_next_step_is_sent_except_where_it_is_used(tmp_path):
  # Reading step i's loss waits for step i; done after step i + 1 is queued, the
  # device is never idle while the host builds a batch. Steps that log (every
  # 4th), save (every 3rd, and the first: a run with no checkpoint saves) or end
  # the run read their own loss before doing so.
  events = []
  losses = [_Recorded(events, i, 1.0) for i in range(9)]
  loop = _loop(tmp_path, 9, losses, on_step=lambda i: events.append(("step", i)),
               log_every=4, save_every=3)
  loop_lib.run(loop, _state(), 0)
  reads = [i for kind, i in events if kind == "read"]
  assert sorted(set(reads)) == list(range(9))
  saved, _, _ = _saved(tmp_path)
  assert saved == [1, 3, 6, 9]
  for i in range(9):
    first_read = events.index(("read", i))
    own = (i + 1) % 4 == 0 or (i + 1) in saved
    if own:   # read before the next step is sent
      assert i == 8 or first_read < events.index(("step", i + 1)), (i, events)
    else:     # read only once the next step is sent
      assert first_read > events.index(("step", i + 1)), (i, events)


def test_a_nan_loss_read_late_still_stops_before_its_state_is_saved(tmp_path):
  # Step 5 (1-based) is neither logged nor saved, so its loss is read after step
  # 6 is sent; step 6 saves. The run stops there, and nothing after step 4 stays.
  losses = [1.0, 1.0, 1.0, 1.0, float("nan"), 1.0, 1.0, 1.0]
  loop = _loop(tmp_path, 8, losses, log_every=100, save_every=2)
  with pytest.raises(FloatingPointError, match=r"the loss became nan at step 5; stopping\. "
                                               r"The last good checkpoint \(step 4\)"):
    loop_lib.run(loop, _state(), 0)
  steps, state, _ = _saved(tmp_path)
  assert max(steps) == 4 and int(state["step"]) == 4
  loop.ckpt.close()


def test_a_resumed_loop_starts_at_its_step_and_evaluates_every_eval_every(tmp_path):
  evaluated = []

  def evaluate(state, done):
    evaluated.append((int(state["step"]), done))
    return {"metric": float(done)}

  loop = _loop(tmp_path, 8, [0.5] * 8, log_every=4, evaluate=evaluate, eval_every=2)
  loop_lib.run(loop, _state(3), 3)
  assert [s for s, _ in loop.built] == [3, 4, 5, 6, 7]
  # Every 2nd step before the end (the job evaluates the end itself).
  assert evaluated == [(4, 4), (6, 6)]
  records = loop.logger.read()
  assert [(r["step"], r["kind"]) for r in records] == [(4, "train"), (4, "eval"), (6, "eval"),
                                                       (8, "train")]
  assert [r["metric"] for r in records if r["kind"] == "eval"] == [4.0, 6.0]


def test_sigterm_saves_the_step_then_exits(tmp_path):
  def term_in_step_three(i):
    if i == 2:
      handler = signal.getsignal(signal.SIGTERM)     # the loop's guard, never the default
      assert isinstance(getattr(handler, "__self__", None), checkpoint.PreemptionGuard)
      os.kill(os.getpid(), signal.SIGTERM)

  loop = _loop(tmp_path, 7, [1.0] * 7, log_every=1, on_step=term_in_step_three)
  with pytest.raises(loop_lib.Preempted,
                     match="stopped by SIGTERM after step 3, saved; resume with the same"):
    loop_lib.run(loop, _state(), 0)
  assert [s for s, _ in loop.built] == [0, 1, 2]
  steps, state, meta = _saved(tmp_path)
  assert max(steps) == 3 and int(state["step"]) == 3    # saved though 3 is not a multiple of 2
  assert meta["data_position"] == {"step": 3}


def test_restore_starts_fresh_or_resumes_under_the_same_config(tmp_path):
  c = config_lib.default()
  c.checkpoint.async_save = False
  keys = ("seed", "loss")
  tx = optax.sgd(0.1)
  fresh = state_lib.init_state({"w": np.ones(3, np.float32)}, tx, seed=0)
  ckpt, state, start, meta = loop_lib.restore(tmp_path, c, fresh, keys)
  assert start == 0 and state is fresh and meta == {}
  later = fresh.replace(step=np.int32(5), params={"w": np.full(3, 2.0, np.float32)})
  ckpt.save(5, later, {"config": config_lib.resume_record(c, keys),
                       "data_position": {"step": 5}}, force=True)
  ckpt.close()
  ckpt, state, start, meta = loop_lib.restore(tmp_path, c, fresh, keys)
  ckpt.close()
  assert start == 5 and np.asarray(state.params["w"]).tolist() == [2.0] * 3
  assert meta["data_position"] == {"step": 5}
  c.seed += 1
  with pytest.raises(config_lib.ConfigError, match=r"different config\.seed"):
    loop_lib.restore(tmp_path, c, fresh, keys)
