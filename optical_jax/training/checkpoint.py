"""Checkpoints that survive preemption, with exact resume.

An Orbax `CheckpointManager` in `<workdir>/checkpoints` holds, per saved step,
the training state (trainable student parameters, optimizer state, step, RNG)
and a JSON record (data position, the config, metric history) that resume
checks. Saves are asynchronous; the manager keeps the last `max_to_keep`.

`save` is called every step and the manager decides (every `save_every` steps,
or at once when forced: preemption signal, end of training). On Cloud TPU the
manager also takes part in multi-host preemption sync, so every host saves the
same step.

`PreemptionGuard` turns SIGTERM (what a TPU/GCE preemption or a job scheduler
sends) and SIGINT (Ctrl-C) into a flag the loop checks between steps, so a
killed run saves first and leaves cleanly.
"""
from __future__ import annotations

import logging
import os
import pathlib
import signal
import time
import types
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


BROKEN = "checkpoints_broken"


class CheckpointError(RuntimeError):
  """No checkpoint of a workdir restores; the message lists each step's reason."""


class Checkpointer:
  """Saves and restores (state, meta) under `<workdir>/checkpoints`.

  Attributes:
    directory: the checkpoint directory.
    manager: the Orbax manager.
  """

  def __init__(self, workdir: str | os.PathLike, *, save_every: int = 100,
               max_to_keep: int = 2, async_save: bool = True):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_interval_steps=max(1, save_every),
        enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    """Whether `save(step, ...)` would write (the interval, or preemption on TPU)."""
    return self.manager.should_save(step)

  def save(self, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
    """Saves if the interval (or `force`) says so; returns whether it did."""
    saved = self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)
    if saved:
      log.info("checkpoint at step %d%s", step, " (forced)" if force else "")
    return saved

  def _restore_step(self, step: int, target: Any) -> tuple[Any, dict]:
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    if not isinstance(out.meta, dict) or "data_position" not in out.meta:
      raise ValueError("its JSON record (meta) is missing or incomplete")
    return out.state, out.meta

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict] | None:
    """The state saved at `step` (default: the newest that restores), shaped like
    `abstract_state`.

    `abstract_state` leaves are arrays or `jax.ShapeDtypeStruct`s; their
    shardings decide where restored arrays go, so a state saved on one mesh
    restores onto another. Without `step`, a newest checkpoint that fails to
    restore (a truncated, corrupt or half-deleted file) is reported, naming the
    step and the reason, and the one before it is tried; once one restores,
    the newer broken ones are moved to `<workdir>/checkpoints_broken/` (never
    deleted) so that training can save those steps again.

    Returns:
      (state, meta), or None when there is no checkpoint.

    Raises:
      CheckpointError: no checkpoint restores (each step's reason is listed;
        nothing is moved or deleted).
    """
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    if step is not None:
      return self._restore_step(step, target)
    steps = sorted(self.manager.all_steps(), reverse=True)
    broken = []
    for candidate in steps:
      try:
        restored = self._restore_step(candidate, target)
      except Exception as e:  # pylint: disable=broad-except  (any unreadable file)
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        log.warning("checkpoint step %d (%s) does not restore: %s", candidate,
                    self.directory / str(candidate), reason)
        broken.append((candidate, reason))
        continue
      if broken:
        self._set_aside([s for s, _ in broken])
        log.warning("resuming from step %d, the newest checkpoint that restores; the broken "
                    "ones (steps %s) are in %s", candidate, [s for s, _ in broken],
                    self.directory.parent / BROKEN)
      return restored
    if broken:
      raise CheckpointError(
          f"no checkpoint in {self.directory} restores (nothing was moved or deleted): "
          + "; ".join(f"step {s}: {r}" for s, r in broken))
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Moves broken step directories out of the manager's way (process 0)."""
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      aside = self.directory.parent / BROKEN
      aside.mkdir(exist_ok=True)
      for s in steps:
        src = self.directory / str(s)
        if src.exists():
          os.replace(src, aside / f"{s}.{time.strftime('%Y%m%d-%H%M%S')}")
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until asynchronous saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class PreemptionGuard:
  """Context manager: SIGTERM / SIGINT set `requested` instead of killing.

  A second SIGINT while a save is pending restores Python's default (raise
  KeyboardInterrupt), so an impatient user can still stop at once.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = signals
    self.requested: str | None = None
    self._previous: dict[int, Any] = {}

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.requested and signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)
    self.requested = name
    log.warning("%s received: saving a checkpoint and stopping after this step", name)

  def __enter__(self) -> "PreemptionGuard":
    for s in self.signals:
      try:
        self._previous[s] = signal.signal(s, self._handle)
      except ValueError:   # not the main thread (e.g. a notebook worker)
        pass
    return self

  def __exit__(self, *exc) -> None:
    for s, h in self._previous.items():
      signal.signal(s, h)
