"""The pure training steps: OPTICAL distillation, and the teacher's triple step.

Distillation (`distill_step`). The student starts as a copy of the teacher;
one step:

  teacher(target side, e.g. "passage: " + English) -> tokens, pooled  (no grad)
  student(source side, "query: " + low-resource)    -> tokens, pooled
  loss = losses.distillation_loss(...)   (OT <P, C>, + InfoNCE, + MSE)
         (+ the MLM / TLM terms, see pretraining.py)
  AdamW update of the trainable student parameters

The teacher job (`teacher_step`): one encoder reads queries, positives and
hard negatives; InfoNCE over the in-batch candidates (`losses.triple_loss`).

Both are pure: jit them with the keyword arguments bound (`runner.StepRunner`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from optical_jax.core import losses as losses_lib
from optical_jax.models import heads as heads_lib
from optical_jax.training import sharding
from optical_jax.training.pretraining import Pretraining
from optical_jax.training.state import TrainState
from optical_jax.training.trainable import ModelParts
from optical_jax.training.trainable import Params

# ----------------------------------------------------------------------------
# Distillation.

def encode_pair_side(model: heads_lib.TextModel, ids, mask, layer_index: int | tuple[int, ...],
                     pack=None):
  """(tokens at `layer_index`, pooled last-layer vectors) for one side of the pairs;
  with a tuple of indices, a tuple of token arrays (the OT layers). `pack`: the
  side's `<side>_pack` array, if the batch has one (models/packing.py)."""
  states = model.encoder.hidden_states(ids, mask, pack=pack)
  tokens = (tuple(states[i] for i in layer_index) if isinstance(layer_index, tuple)
            else states[layer_index])
  return tokens, model.head.pool(states[-1], mask)


def distill_step(state: TrainState, frozen: Params, teacher: Params, batch: dict[str, jax.Array],
               *, student_parts: ModelParts, teacher_parts: ModelParts,
               loss_cfg: losses_lib.LossConfig, tx: optax.GradientTransformation,
               layer_index: int, axis_name: str | None = None,
               ot_fn=None, pretrain: Pretraining | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One distillation step (pure; jit it with the keyword arguments bound).

  Args:
    state: the trainable student state.
    frozen: the student's non-trainable parameters.
    teacher: the teacher's parameters (never differentiated).
    batch: 'src_ids', 'src_mask', 'src_special' [B, Ls]; 'tgt_ids',
      'tgt_mask', 'tgt_special' [B, Lt]; with `loss_cfg.both_sides` also
      'stu_tgt_ids', 'stu_tgt_mask', 'stu_tgt_special' [B, Lt] (the English
      side as the student reads it, with the source prefix); optionally a
      side's '<side>_pack' [C]: its encoder runs on the real tokens only.
    student_parts, teacher_parts: the models' graphs.
    loss_cfg: the objective.
    tx: the optimizer.
    layer_index: index into `hidden_states` of the OT layer, or a tuple of
      indices (`loss.extra_ot_layers`: OT averaged over those layers).
    axis_name: under `pmap`, the device axis: the loss is each device's share
      of the global-batch loss, and gradients and metrics are summed over it.
    ot_fn: the per-pair OT function (`sharding.per_device` runs it on each
      device's own pairs under jit with shardings).
    pretrain: MLM / TLM terms added to the loss (the batch then also has the
      `tlm.TLM_KEYS` arrays when TLM is on); masks are drawn from the state's
      rng, so a resumed run masks as the uninterrupted one would.

  Returns:
    (new state, float32 scalar metrics).
  """
  t_model = teacher_parts.merge(teacher)
  t_tok, t_vec = jax.lax.stop_gradient(
      encode_pair_side(t_model, batch["tgt_ids"], batch["tgt_mask"], layer_index,
                       batch.get("tgt_pack")))

  def loss_fn(params):
    s_model = student_parts.merge(frozen, params)
    s_tok, s_vec = encode_pair_side(s_model, batch["src_ids"], batch["src_mask"], layer_index,
                                    batch.get("src_pack"))
    s_tgt = (encode_pair_side(s_model, batch["stu_tgt_ids"], batch["stu_tgt_mask"],
                              layer_index, batch.get("stu_tgt_pack"))
             if loss_cfg.both_sides else None)
    total, metrics = losses_lib.distillation_loss(loss_cfg, s_tok, s_vec, t_tok, t_vec, batch,
                                                  axis_name=axis_name, ot_fn=ot_fn,
                                                  student_tgt=s_tgt)
    if pretrain is not None:
      extra, more = pretrain.loss(s_model.encoder, params, batch,
                                  jax.random.split(state.rng)[1], axis_name)
      total, metrics = total + extra, dict(metrics, **more)
    return total, metrics

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if axis_name:  # shares of the global batch -> the global values, on every device
    loss, metrics, grads = jax.lax.psum((loss, metrics, grads), axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            rng=jax.random.split(state.rng)[0])
  return new_state, metrics


def bind_distill_step(student_parts: ModelParts, teacher_parts: ModelParts,
                      loss_cfg: losses_lib.LossConfig, tx: optax.GradientTransformation,
                      layer_index: int, pretrain: Pretraining | None = None, *,
                      mesh: jax.sharding.Mesh | None = None, mode: str = "shard_map"):
  """`distill_step` with its static parts bound, for `runner.StepRunner`:
  `(state, frozen, teacher, batch[, axis_name])`. On a mesh in 'shard_map'
  mode, the Sinkhorn solve runs on each device's own pairs."""
  ot_fn = None
  if mesh is not None and mode == "shard_map":
    ot_fn = sharding.per_device(functools.partial(losses_lib.ot_per_pair, loss_cfg.ot), mesh, 3)
  return functools.partial(distill_step, student_parts=student_parts,
                           teacher_parts=teacher_parts, loss_cfg=loss_cfg, tx=tx,
                           layer_index=layer_index, pretrain=pretrain, ot_fn=ot_fn)


def jit_distill_step(student_parts: ModelParts, teacher_parts: ModelParts,
                     loss_cfg: losses_lib.LossConfig, tx: optax.GradientTransformation,
                     layer_index: int, pretrain: Pretraining | None = None, **jit_kwargs):
  """`distill_step` with its static parts bound, jitted (state donated), one device."""
  return jax.jit(bind_distill_step(student_parts, teacher_parts, loss_cfg, tx, layer_index,
                                   pretrain), donate_argnums=(0,), **jit_kwargs)


# ----------------------------------------------------------------------------
# The teacher: (query, positive, hard negative) triples.

def scoring_vectors(model: heads_lib.TextModel, ids: jax.Array, mask: jax.Array, scoring: str,
                    pack: jax.Array | None = None) -> jax.Array:
  """`[B, L]` ids -> pooled `[B, D]` (dense) or head token vectors `[B, L, D]`;
  `pack` as in `encode_pair_side`."""
  tokens = model.encoder.hidden_states(ids, mask, pack=pack)[-1]
  return model.head.pool(tokens, mask) if scoring == "dense" else model.head.tokens(tokens)


def teacher_step(state: TrainState, frozen: Params,
               batch: dict[str, jax.Array], *, parts: ModelParts,
               tx: optax.GradientTransformation, scoring: str, temperature: float
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One step on a batch of triples (pure; jit it with the keywords bound).

  Args:
    state: the trainable parameters and their optimizer state.
    frozen: the parameters that do not train (`train.trainable`).
    batch: 'q_ids', 'q_mask' `[B, Lq]`; 'p_ids', 'p_mask', 'n_ids', 'n_mask'
      `[B, Ld]` (positives, hard negatives); optionally 'q_pack' and 'd_pack'
      (`batches.triple_batch`: positives and negatives packed together).
    parts: the model's graph.
    tx: the optimizer.
    scoring, temperature: see `triple_loss`.

  Returns:
    (new state, float32 scalar metrics: loss, accuracy, pos_score,
    hard_neg_score, grad_norm).
  """
  b = batch["q_ids"].shape[0]
  valid = jnp.all(jnp.stack([jnp.sum(batch[k], -1) > 0
                             for k in ("q_mask", "p_mask", "n_mask")]), axis=0)
  d_ids = jnp.concatenate([batch["p_ids"], batch["n_ids"]])
  d_mask = jnp.concatenate([batch["p_mask"], batch["n_mask"]])

  def loss_fn(params):
    model = parts.merge(frozen, params)
    q = scoring_vectors(model, batch["q_ids"], batch["q_mask"], scoring, batch.get("q_pack"))
    d = scoring_vectors(model, d_ids, d_mask, scoring,     # positives and negatives in one pass
                        batch.get("d_pack"))
    return losses_lib.triple_loss(q, d[:b], d[b:], scoring=scoring, temperature=temperature,
                       query_mask=batch["q_mask"], positive_mask=batch["p_mask"],
                       negative_mask=batch["n_mask"], valid=valid)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       rng=jax.random.split(state.rng)[0]), metrics


def bind_teacher_step(parts: ModelParts, tx: optax.GradientTransformation, scoring: str,
                      temperature: float):
  """`teacher_step` with its static parts bound, for `runner.StepRunner`:
  `(state, frozen, batch)`. In-batch negatives span the whole global batch, so
  there is no per-device (pmap) form."""
  return functools.partial(teacher_step, parts=parts, tx=tx, scoring=scoring,
                           temperature=float(temperature))
