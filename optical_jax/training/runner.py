"""Runs a step on one device, on a mesh (jit with shardings), or under pmap."""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optical_jax.core import losses as losses_lib
from optical_jax.training import sharding
from optical_jax.training import state as state_lib
from optical_jax.training import step as step_lib
from optical_jax.training.pretraining import HEAD_PREFIX
from optical_jax.training.pretraining import Pretraining
from optical_jax.training.state import TrainState
from optical_jax.training.trainable import ModelParts
from optical_jax.training.trainable import Params


class StepRunner:
  """Runs the step on one device, on a mesh (jit with shardings), or under pmap.

  * no mesh: plain `jax.jit`.
  * mode 'shard_map': `jax.jit` with explicit in/out shardings (parameters by
    the logical-axis rules, batch rows over `data`, state donated); the
    encoders are partitioned by the compiler, and the Sinkhorn solve runs
    inside `jax.shard_map` on each device's own pairs.
  * mode 'pmap': the same per-device step under `jax.pmap` over every device
    of the mesh (pure data parallelism; the state is replicated with a leading
    device axis); the loss is normalised by the global batch, gradients are
    summed across devices, so it equals the single-device step.

  Attributes:
    mesh: the mesh, or None.
    mode: 'shard_map' or 'pmap'.
  """

  def __init__(self, student_parts: ModelParts, teacher_parts: ModelParts,
               loss_cfg: losses_lib.LossConfig, tx: optax.GradientTransformation,
               layer_index: int, *, mesh=None, mode: str = "shard_map",
               rules: Sequence[tuple[str, str]] = (), pretrain: Pretraining | None = None):
    self.mesh, self.mode, self._sharding = mesh, mode, sharding
    kw = dict(student_parts=student_parts, teacher_parts=teacher_parts, loss_cfg=loss_cfg,
              tx=tx, layer_index=layer_index, pretrain=pretrain)
    if mode not in ("shard_map", "pmap"):
      raise ValueError(f"parallel.step={mode!r}: expected 'shard_map' or 'pmap'")
    self.shardings = None
    if mesh is not None and mode == "shard_map":
      self.shardings = sharding.param_shardings(teacher_parts.templates, mesh, rules)
      if pretrain is not None:   # the LM head is sharded by its own logical axes
        self.shardings.update({HEAD_PREFIX + k: v for k, v in sharding.param_shardings(
            pretrain.head_parts.templates, mesh, rules).items()})
    self._tx = tx
    self._devices = list(mesh.devices.flat) if mesh is not None else []
    if mesh is None:
      self._step = step_lib.jit_distill_step(student_parts, teacher_parts, loss_cfg, tx,
                                            layer_index, pretrain)
    elif mode == "pmap":
      self._step = jax.pmap(functools.partial(step_lib.distill_step, axis_name="batch", **kw),
                            axis_name="batch", devices=self._devices, donate_argnums=(0,))
    else:
      ot_fn = sharding.per_device(functools.partial(losses_lib.ot_per_pair, loss_cfg.ot),
                                  mesh, 3)
      self._step = jax.jit(functools.partial(step_lib.distill_step, ot_fn=ot_fn, **kw),
                           donate_argnums=(0,))

  @property
  def data_parallelism(self) -> int:
    """How many ways a batch is split (it must divide the batch size)."""
    if self.mesh is None:
      return 1
    return len(self._devices) if self.mode == "pmap" else self.mesh.shape["data"]

  def place_params(self, params: Params) -> Params:
    """Fixed step inputs (teacher, frozen student parts) where the step wants
    them: sharded by the rules, replicated per device under pmap."""
    if self.shardings is not None:
      return self._sharding.place(params, self.shardings)
    if self.mesh is not None:
      return self._replicate(params)
    return {k: jnp.asarray(v) for k, v in params.items()}

  def _replicate(self, tree):
    """One copy per device along a leading axis, as pmap takes its inputs."""
    n = len(self._devices)
    mesh = jax.sharding.Mesh(np.array(self._devices), ("batch",))
    stacked = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    return jax.tree.map(
        lambda x: jax.device_put(np.broadcast_to(np.asarray(x)[None], (n, *np.shape(x))),
                                 stacked), tree)

  def init_state(self, params: Params, seed: int) -> TrainState:
    """A fresh state in host layout (sharded by the rules on a mesh in
    'shard_map' mode): what checkpoints hold, and the restore target."""
    if self.shardings is not None:
      params = self._sharding.place(params, self.shardings)
    params = jax.tree.map(jnp.array, params)    # owned copies: the step donates the state
    return state_lib.init_state(params, self._tx, seed, shardings=self.shardings)

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
    if self.mesh is None:
      return local
    if self.mode == "pmap":
      n = len(self._devices)
      if len(local["src_ids"]) % n:
        raise ValueError(f"train.batch_size {len(local['src_ids'])} does not divide over "
                         f"{n} devices")
      return {k: v.reshape(n, -1, *v.shape[1:]) for k, v in local.items()}
    return self._sharding.global_batch(local, self.mesh)

  def __call__(self, state, frozen, teacher, local_batch):
    state, metrics = self._step(state, frozen, teacher, self.batch(local_batch))
    if self.mode == "pmap" and self.mesh is not None:
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return state, metrics
