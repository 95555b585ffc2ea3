"""Runs a pure step on one device, on a mesh (jit with shardings), or under pmap.

A step is `step(state, *inputs, batch) -> (state, metrics)`: `inputs` are
fixed parameter dicts that never train (the frozen parts of the student, the
teacher), `batch` this step's arrays. A step that takes an `axis_name`
keyword can also run under pmap.

* no mesh: plain `jax.jit`, the state donated.
* mode 'shard_map': `jax.jit` with the inputs placed by the logical-axis rules
  (parameters, and the optimizer moments in the parameters' shards) and the
  batch rows over `data`, the state donated; the compiler partitions the
  encoders. A step with a per-example part that must stay on each device's
  own rows (distillation's Sinkhorn solve) runs it inside `jax.shard_map`
  (`sharding.per_device`, bound by the job).
* mode 'pmap': the same per-device step under `jax.pmap` over every device
  of the mesh (pure data parallelism; the state is replicated with a leading
  device axis), with `axis_name='batch'`: the step normalises its loss by
  the global batch and sums gradients across devices, so it equals the
  single-device step.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optical_jax.training import sharding
from optical_jax.training import state as state_lib
from optical_jax.training.state import TrainState
from optical_jax.training.trainable import Params

MODES = ("shard_map", "pmap")
# The pmap device axis a step's `axis_name` is bound to.
PMAP_AXIS = "batch"


class StepRunner:
  """A step placed on the devices the configuration asks for.

  Attributes:
    mesh: the mesh, or None (one device).
    mode: 'shard_map' or 'pmap'.
    shardings: parameter name -> NamedSharding in 'shard_map' mode on a mesh,
      else None.
  """

  def __init__(self, step: Callable[..., tuple[TrainState, dict[str, jax.Array]]],
               templates: Sequence[tuple[str, Sequence[tuple[str, tuple, Any]]]], *,
               mesh: jax.sharding.Mesh | None = None, mode: str = "shard_map",
               rules: Sequence[tuple[str, str]] = ()):
    """Args:
      step: the pure step (see the module docstring).
      templates: (name prefix, `ModelParts.templates`) of every model whose
        parameters the state and inputs hold: their logical axes place them.
      mesh, mode, rules: where the step runs (see the module docstring).
    """
    if mode not in MODES:
      raise ValueError(f"parallel.step={mode!r}: expected one of {MODES}")
    self.mesh, self.mode = mesh, mode
    self.shardings = None
    self._devices = list(mesh.devices.flat) if mesh is not None else []
    if mesh is None:
      self._step = jax.jit(step, donate_argnums=(0,))
    elif mode == "pmap":
      self._step = jax.pmap(functools.partial(step, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS,
                            devices=self._devices, donate_argnums=(0,))
    else:
      self.shardings = {}
      for prefix, model_templates in templates:
        self.shardings.update({prefix + k: v for k, v in sharding.param_shardings(
            model_templates, mesh, rules).items()})
      self._step = jax.jit(step, donate_argnums=(0,))

  @property
  def data_parallelism(self) -> int:
    """How many ways a batch is split (it must divide the batch size)."""
    if self.mesh is None:
      return 1
    return len(self._devices) if self.mode == "pmap" else self.mesh.shape[sharding.DATA]

  def place_params(self, params: Params) -> Params:
    """Fixed step inputs (teacher, frozen student parts) where the step wants
    them: sharded by the rules, replicated per device under pmap."""
    if self.shardings is not None:
      return sharding.place(params, self.shardings)
    if self.mesh is not None:
      return self._replicate(params)
    return {k: jnp.asarray(v) for k, v in params.items()}

  def _replicate(self, tree):
    """One copy per device along a leading axis, as pmap takes its inputs."""
    n = len(self._devices)
    mesh = jax.sharding.Mesh(np.array(self._devices), (PMAP_AXIS,))
    stacked = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(PMAP_AXIS))
    return jax.tree.map(
        lambda x: jax.device_put(np.broadcast_to(np.asarray(x)[None], (n, *np.shape(x))),
                                 stacked), tree)

  def init_state(self, params: Params, tx: optax.GradientTransformation,
                 seed: int) -> TrainState:
    """A fresh state in host layout (sharded by the rules on a mesh in
    'shard_map' mode): what checkpoints hold, and the restore target."""
    if self.shardings is not None:
      params = sharding.place(params, self.shardings)
    params = jax.tree.map(jnp.array, params)    # owned copies: the step donates the state
    return state_lib.init_state(params, tx, seed, shardings=self.shardings)

  def to_device(self, state: TrainState) -> TrainState:
    if self.mode == "pmap" and self.mesh is not None:
      return self._replicate(state)
    return state

  def to_host(self, state: TrainState) -> TrainState:
    """One copy of the state (what checkpoints and evaluation take)."""
    if self.mode == "pmap" and self.mesh is not None:
      return jax.tree.map(lambda x: x[0], state)
    return state

  def batch(self, local: dict[str, np.ndarray]) -> dict[str, Any]:
    """This host's rows of the batch -> what the step takes."""
    if self.mesh is None:
      return local
    if self.mode == "pmap":
      n = len(self._devices)
      rows = len(next(iter(local.values())))
      if rows % n:
        raise ValueError(f"train.batch_size {rows} does not divide over {n} devices")
      return {k: v.reshape(n, -1, *v.shape[1:]) for k, v in local.items()}
    return sharding.global_batch(local, self.mesh)

  def __call__(self, state: TrainState, *inputs_and_batch):
    """`state, *inputs, local_batch` -> (state, metrics): one step."""
    *inputs, local_batch = inputs_and_batch
    state, metrics = self._step(state, *inputs, self.batch(local_batch))
    if self.mode == "pmap" and self.mesh is not None:
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return state, metrics
