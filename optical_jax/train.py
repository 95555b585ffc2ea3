"""OPTICAL distillation: the training state, the jitted step, and the loop.

The teacher is frozen: its parameters are an argument of the step, never
differentiated, with no optimizer state. The student starts as a copy of the
teacher; `train.trainable` says which of its parameters train (the rest stay
the teacher's values and are not checkpointed). One step:

  teacher(target side, e.g. "passage: " + English) -> tokens, pooled  (no grad)
  student(source side, "query: " + low-resource)    -> tokens, pooled
  loss = losses.distillation_loss(...)   (OT <P, C>, + InfoNCE, + MSE)
  AdamW update of the trainable student parameters

The data order is a function of (seed, step), so a resumed run sees exactly the
batches it would have seen.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from typing import Any, Callable, Sequence

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optical_jax import losses as losses_lib
from optical_jax import text
from optical_jax.models import heads as heads_lib

log = logging.getLogger(__name__)

Params = dict[str, jax.Array]     # "encoder/layers/3/mlp_in/kernel" -> array


# ----------------------------------------------------------------------------
# Which parameters train.

def trainable_predicate(spec: str, num_layers: int) -> Callable[[str], bool]:
  """Parses `train.trainable` into a predicate over parameter names.

  Specs: 'all'; 'no_word_embeddings' (all but the word embedding, which is
  ~80% of e5-small and gets no useful gradient from a few thousand pairs);
  'top:K' (the top K blocks and the head); 'regex:PATTERN' (names matching).
  """
  if spec == "all":
    return lambda name: True
  if spec == "no_word_embeddings":
    return lambda name: not name.startswith("encoder/embeddings/word/")
  if spec.startswith("top:"):
    k = int(spec[4:])
    if not 0 < k <= num_layers:
      raise ValueError(f"train.trainable={spec!r}: K must be in 1..{num_layers}")
    pat = re.compile(r"encoder/layers/(\d+)/")

    def top(name: str) -> bool:
      m = pat.match(name)
      return name.startswith("head/") or (m is not None and int(m.group(1)) >= num_layers - k)
    return top
  if spec.startswith("regex:"):
    pat = re.compile(spec[6:])
    return lambda name: pat.search(name) is not None
  raise ValueError(f"train.trainable={spec!r}: expected 'all', 'no_word_embeddings', "
                   "'top:K' or 'regex:PATTERN'")


@dataclasses.dataclass(frozen=True)
class ModelParts:
  """A model as a static graph plus named parameter dicts.

  Flat string-keyed dicts are what optax, Orbax and the sharding rules all
  handle without ceremony; `merge` turns them back into a model inside jit.
  """
  graphdef: Any
  templates: tuple[tuple[str, tuple, Any], ...]   # (name, path, abstract Variable)

  @classmethod
  def split(cls, model: nnx.Module) -> tuple["ModelParts", Params]:
    graphdef, state = nnx.split(model)
    flat = list(nnx.to_flat_state(state))
    templates = tuple(("/".join(map(str, p)), p, v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype))
                       if hasattr(v, "shape") else v) for p, v in flat)
    params = {"/".join(map(str, p)): v.get_value() for p, v in flat if hasattr(v, "shape")}
    return cls(graphdef, templates), params

  def merge(self, *param_dicts: Params) -> nnx.Module:
    values = {}
    for d in param_dicts:
      values.update(d)
    flat = [(p, v.replace(values[name]) if name in values else v)
            for name, p, v in self.templates]
    return nnx.merge(self.graphdef, nnx.from_flat_state(flat))


# ----------------------------------------------------------------------------
# State and step.

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
      weight_decay, clip_norm, b1, b2).
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
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))
  return tx, schedule


def encode_pair_side(model: heads_lib.TextModel, ids, mask, layer_index: int):
  """(tokens at `layer_index`, pooled last-layer vectors) for one side of the pairs."""
  states = model.encoder.hidden_states(ids, mask)
  return states[layer_index], model.head.pool(states[-1], mask)


def train_step(state: TrainState, frozen: Params, teacher: Params, batch: dict[str, jax.Array],
               *, student_parts: ModelParts, teacher_parts: ModelParts,
               loss_cfg: losses_lib.LossConfig, tx: optax.GradientTransformation,
               layer_index: int) -> tuple[TrainState, dict[str, jax.Array]]:
  """One distillation step (pure; jit it with the keyword arguments bound).

  Args:
    state: the trainable student state.
    frozen: the student's non-trainable parameters.
    teacher: the teacher's parameters (never differentiated).
    batch: 'src_ids', 'src_mask', 'src_special' [B, Ls]; 'tgt_ids',
      'tgt_mask', 'tgt_special' [B, Lt].
    student_parts, teacher_parts: the models' graphs.
    loss_cfg: the objective.
    tx: the optimizer.
    layer_index: index into `hidden_states` of the OT layer.

  Returns:
    (new state, float32 scalar metrics).
  """
  t_model = teacher_parts.merge(teacher)
  t_tok, t_vec = jax.lax.stop_gradient(
      encode_pair_side(t_model, batch["tgt_ids"], batch["tgt_mask"], layer_index))

  def loss_fn(params):
    s_model = student_parts.merge(frozen, params)
    s_tok, s_vec = encode_pair_side(s_model, batch["src_ids"], batch["src_mask"], layer_index)
    return losses_lib.distillation_loss(loss_cfg, s_tok, s_vec, t_tok, t_vec, batch)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            rng=jax.random.split(state.rng)[0])
  return new_state, metrics


# ----------------------------------------------------------------------------
# Batches.

def make_batch(tokenizer: text.Tokenizer, src: Sequence[str], tgt: Sequence[str], *,
               src_prefix: str, tgt_prefix: str, max_length: int, batch_size: int,
               pad_to_max: bool = True) -> tuple[dict[str, np.ndarray], int]:
  """Token arrays for a batch of pairs, and how many texts were truncated.

  With `pad_to_max` both sides are padded to `max_length` so the jitted step
  compiles once; otherwise to their length bucket.
  """
  sides = {}
  truncated = 0
  for side, texts, prefix in (("src", src, src_prefix), ("tgt", tgt, tgt_prefix)):
    b = tokenizer.encode(texts, prefix=prefix, max_length=max_length, batch_size=batch_size)
    if pad_to_max and b.ids.shape[1] < max_length:
      pad = max_length - b.ids.shape[1]
      b.ids = np.pad(b.ids, ((0, 0), (0, pad)), constant_values=tokenizer.pad_id)
      b.mask = np.pad(b.mask, ((0, 0), (0, pad)))
      b.special = np.pad(b.special, ((0, 0), (0, pad)))
    sides.update({f"{side}_ids": b.ids, f"{side}_mask": b.mask, f"{side}_special": b.special})
    truncated += b.num_truncated
  return sides, truncated


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


def jit_train_step(student_parts: ModelParts, teacher_parts: ModelParts,
                   loss_cfg: losses_lib.LossConfig, tx: optax.GradientTransformation,
                   layer_index: int, **jit_kwargs):
  """`train_step` with its static parts bound, jitted (state donated)."""
  step = functools.partial(train_step, student_parts=student_parts, teacher_parts=teacher_parts,
                           loss_cfg=loss_cfg, tx=tx, layer_index=layer_index)
  return jax.jit(step, donate_argnums=(0,), **jit_kwargs)


def init_state(params: Params, tx: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(jax.random.key(seed)))
