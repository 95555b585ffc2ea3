"""The training loop both jobs run (distill and teacher): what every step of a
long run must do besides the step itself.

For each step: this host's slice of the global batch (`order`, a function of
(seed, step), so a resumed run sees the batches it would have seen), the
jitted step, a stop naming the step when the loss is not finite (the last good
checkpoint stays; each loss is read once the next step is queued, so the host
builds batches while the device computes), logging every `log_every` steps, a
progress bar, checkpoints (forced at the end and on SIGTERM / SIGINT, after
which the run exits asking to be resumed), and optional periodic evaluation.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
import tqdm

from optical_jax import config as config_lib
from optical_jax.training import checkpoint as checkpoint_lib
from optical_jax.training import metric_log

log = logging.getLogger(__name__)


class Preempted(Exception):
  """A SIGTERM / SIGINT stopped the run after saving its state: resume it."""


@dataclasses.dataclass
class Loop:
  """What a job's loop is made of.

  Attributes:
    steps: the last step (exclusive bound of the 0-based steps).
    batch_size: global examples per step (for the throughput).
    order: `.indices(step, process_index, process_count)` and `.position(done)`.
    make_batch: (step, this host's example indices) -> the step's batch.
    step: (state, batch) -> (state, metrics with 'loss').
    to_host: state -> the single copy checkpoints and evaluation take.
    ckpt, logger: where checkpoints and metrics go.
    meta: the JSON record saved with each checkpoint (the data position is added).
    schedule: step -> learning rate, logged.
    extra_log: () -> running counters logged with each record and saved with
      each checkpoint (e.g. truncated texts), as JSON numbers.
    evaluate: (state, done) -> metrics, run every `eval_every` steps before the
      end (0: never).
    desc, unit: progress-bar label and what one example is ('pairs', 'triples').
  """
  steps: int
  batch_size: int
  order: Any
  make_batch: Callable[[int, np.ndarray], Mapping[str, Any]]
  step: Callable[[Any, Mapping[str, Any]], tuple[Any, Mapping[str, Any]]]
  to_host: Callable[[Any], Any]
  ckpt: checkpoint_lib.Checkpointer
  logger: metric_log.MetricLogger
  meta: Mapping[str, Any]
  schedule: Callable[[int], Any]
  log_every: int
  progress: bool
  extra_log: Callable[[], Mapping[str, Any]] = dict
  evaluate: Callable[[Any, int], Mapping[str, float]] | None = None
  eval_every: int = 0
  desc: str = "train"
  unit: str = "pairs"


class Throughput:
  """Pairs per second over the recent steps (excluding the first, compiling one)."""

  def __init__(self):
    self.start, self.pairs = None, 0

  def update(self, pairs: int) -> float:
    now = time.perf_counter()
    if self.start is None:
      self.start = now
      return 0.0
    self.pairs += pairs
    return self.pairs / max(now - self.start, 1e-9)


def restore(workdir, config, state: Any, resume_keys: tuple[str, ...]
            ) -> tuple[checkpoint_lib.Checkpointer, Any, int, dict]:
  """(checkpoints of `workdir`, the state to start from, its step, the saved
  JSON record ({} for a new run)).

  Args:
    config: the job's config (its `checkpoint` block configures the manager).
    state: a fresh state: the restore target, and what starts a new run.
    resume_keys: the config keys a resumed run must share with the saved one
      (`config.check_resumable`; `Loop.meta` saves their `resume_record`).
  """
  cfg = config.checkpoint
  ckpt = checkpoint_lib.Checkpointer(workdir, save_every=cfg.every_steps,
                                     max_to_keep=cfg.max_to_keep, async_save=cfg.async_save)
  restored = ckpt.restore(state)
  if restored is None:
    return ckpt, state, 0, {}
  state, meta = restored
  config_lib.check_resumable(meta["config"], config, resume_keys, workdir)
  log.info("resumed from step %d (data position %s)", int(state.step), meta["data_position"])
  return ckpt, state, int(state.step), meta


def run(loop: Loop, state: Any, start: int) -> Any:
  """Steps `start` .. `loop.steps - 1`; returns the final state (device layout).

  Raises:
    FloatingPointError: the loss is not finite (naming the step and the last
      good checkpoint).
    Preempted: a SIGTERM / SIGINT arrived; the state was saved first.
  """
  ckpt = loop.ckpt
  throughput = Throughput()
  bar = tqdm.tqdm(total=loop.steps, initial=start, desc=loop.desc, unit="step",
                  disable=not loop.progress)
  last_good = ckpt.latest_step()
  pending = None   # (steps done, metrics) of the last step whose loss is unread
  loss = None      # the last loss read (shown on the progress bar)

  def read_loss(done: int, metrics: Mapping[str, Any]) -> float:
    value = float(metrics["loss"])   # waits for that step to finish
    if not np.isfinite(value):
      ckpt.wait()
      raise FloatingPointError(
          f"the loss became {value} at step {done}; stopping. The last good checkpoint "
          f"(step {ckpt.latest_step() or last_good}) is kept in {ckpt.directory}")
    return value

  with checkpoint_lib.PreemptionGuard() as guard:
    for step in range(start, loop.steps):
      # Each host builds only its own slice of the global batch.
      idx = loop.order.indices(step, jax.process_index(), jax.process_count())
      state, metrics = loop.step(state, loop.make_batch(step, idx))
      done = step + 1
      # The previous step's loss is read now, once this step is queued, not this
      # step's: the device runs this step while the host builds the next batch
      # (waiting on each step's own loss left a GPU idle while the host
      # tokenised). Whatever logs, saves or evaluates a state reads its step's
      # loss first, so a non-finite loss still stops the run before any of that.
      if pending is not None:
        loss = read_loss(*pending)
      pending = (done, metrics)
      per_s = throughput.update(loop.batch_size)
      stop = guard.requested is not None
      force = stop or done == loop.steps
      save_now = force or ckpt.should_save(done)
      log_now = done % loop.log_every == 0 or done == loop.steps
      evaluate_now = bool(loop.evaluate and loop.eval_every and done % loop.eval_every == 0
                          and done < loop.steps)
      if log_now or evaluate_now or save_now:
        loss, pending = read_loss(*pending), None
      if log_now:
        record = {k: float(v) for k, v in metrics.items()}
        record.update(lr=float(loop.schedule(step)), **{f"{loop.unit}_per_s": per_s},
                      **loop.extra_log())
        loop.logger.write(done, record)
      shown = {} if loss is None else {"loss": f"{loss:.4f}"}
      bar.set_postfix(**shown, **{f"{loop.unit}_s": f"{per_s:.1f}"})
      bar.update(1)
      # The counters (e.g. truncated texts) go with the state: a resumed run
      # continues them as an uninterrupted one would.
      meta = dict(loop.meta, data_position=loop.order.position(done),
                  counters=dict(loop.extra_log()))
      if save_now and ckpt.save(done, loop.to_host(state), meta, force=force):
        last_good = done
      if evaluate_now:
        loop.logger.write(done, loop.evaluate(state, done), kind="eval")
      if stop:
        ckpt.close()
        bar.close()
        raise Preempted(f"stopped by {guard.requested} after step {done}, saved; resume with "
                        "the same command")
  bar.close()
  ckpt.close()
  return state
