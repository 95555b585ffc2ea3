"""What a checkpoint holds, and the optimizer that updates it.

The teacher is frozen: its parameters are an argument of the step, never
differentiated, with no optimizer state. Only the trainable parameters (see
`trainable.py`) have a state here.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from optical_jax.training.trainable import Params


@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds (besides the JSON record).

  Attributes:
    step: steps done.
    params: trainable student parameters by name.
    opt_state: optax state of `params`.
    rng: PRNG key (reserved for stochastic options; split every step).
  """
  step: jax.Array
  params: Params
  opt_state: Any
  rng: jax.Array


def make_optimizer(cfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with linear warmup then linear or cosine decay, after global-norm clipping.

  Args:
    cfg: the `train` config block (lr, steps, warmup_frac, schedule,
      weight_decay, clip_norm, b1, b2, eps).
  """
  warmup = int(round(cfg.warmup_frac * cfg.steps))
  decay_steps = max(cfg.steps - warmup, 1)
  if cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(cfg.lr, decay_steps)
  elif cfg.schedule == "linear":
    decay = optax.linear_schedule(cfg.lr, 0.0, decay_steps)
  elif cfg.schedule == "constant":
    decay = optax.constant_schedule(cfg.lr)
  else:
    raise ValueError(f"train.schedule={cfg.schedule!r}: expected linear, cosine or constant")
  schedule = decay if not warmup else optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm else optax.identity(),
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay))
  return tx, schedule


def init_state(params: Params, tx: optax.GradientTransformation, seed: int,
               shardings=None) -> TrainState:
  """Step 0. With `shardings`, the optimizer moments are created in the
  parameters' shards (jit with out_shardings), never whole on one device."""
  def make(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                      rng=jax.random.key_data(jax.random.key(seed)))
  if shardings is None:
    return make(params)
  abstract = jax.eval_shape(make, params)
  # Moments mirror the parameter tree, so each leaf named after a parameter
  # takes that parameter's sharding; scalars (counts, step, rng) are replicated.
  mesh = next(iter(shardings.values())).mesh
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def leaf_sharding(path, _):
    keys = [getattr(k, "key", None) for k in path]
    name = next((k for k in reversed(keys) if isinstance(k, str) and k in shardings), None)
    return shardings[name] if name else replicated
  out = jax.tree_util.tree_map_with_path(leaf_sharding, abstract)
  return jax.jit(make, out_shardings=out)(params)
