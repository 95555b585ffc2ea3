"""Distillation losses on a batch of bitext pairs.

Every loss sees the same batch: the student's encoding of the source side
(the low-resource sentence, with the query prefix) and the frozen teacher's
encoding of the target side (the English translation, with the prefix of the
side the student must match: documents are "passage: "-encoded).

* `optical`: token-level OT, <P, C> with P the Sinkhorn plan (see `ot.py`).
* `contrastive`: in-batch InfoNCE between the student's pooled source vectors
  and the teacher's pooled target vectors; the other pairs' translations are
  the negatives. It keeps different sentences apart, which pulling alone does
  not: OT or MSE on their own make the student's query vectors crowd together.
* `mse`: pooled-embedding MSE to the teacher (the sentence-transformers
  multilingual-distillation recipe).

The total is their weighted sum; `LossConfig` holds the weights.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from optical_jax import ot


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Weights and options of the distillation objective.

  Attributes:
    ot_weight: weight of the OT token-alignment loss.
    contrastive_weight: weight of in-batch InfoNCE against the teacher's
      target-side vectors.
    mse_weight: weight of pooled MSE to the teacher's target-side vectors.
    temperature: InfoNCE temperature (cosine scores / temperature).
    layer: which layer's token embeddings the OT aligns (1-based, negative from
      the top; pooled vectors always come from the last layer).
    ot: the OT options.
  """
  ot_weight: float = 1.0
  contrastive_weight: float = 1.0
  mse_weight: float = 0.0
  temperature: float = 0.05
  layer: int = -1
  ot: ot.OTConfig = ot.OTConfig()

  def __post_init__(self):
    if min(self.ot_weight, self.contrastive_weight, self.mse_weight) < 0:
      raise ValueError("loss weights must be >= 0")
    if not self.ot_weight + self.contrastive_weight + self.mse_weight > 0:
      raise ValueError("at least one loss weight must be > 0")
    if not self.temperature > 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature}")


def _psum(x: jax.Array, axis_name: str | None) -> jax.Array:
  return jax.lax.psum(x, axis_name) if axis_name else x


def _gather(x: jax.Array, axis_name: str | None) -> jax.Array:
  return jax.lax.all_gather(x, axis_name, tiled=True) if axis_name else x


def contrastive(student_vecs: jax.Array, teacher_vecs: jax.Array,
                temperature: float, valid: jax.Array | None = None, *,
                axis_name: str | None = None) -> jax.Array:
  """In-batch InfoNCE, student source -> teacher target.

  Args:
    student_vecs: [B, D] L2-normalised student vectors.
    teacher_vecs: [B, D] L2-normalised teacher vectors; row i is the
      translation of student row i, the other rows its negatives.
    temperature: logits are cosine / temperature.
    valid: [B] bool; invalid rows (batch padding) are neither anchors nor
      negatives.
    axis_name: inside `pmap`, the device axis: the negatives are then the
      whole global batch (teacher vectors gathered from every device), and the
      value is this device's share of the global mean (psum it).

  Returns:
    mean cross-entropy over valid rows (float32 scalar).
  """
  b = student_vecs.shape[0]
  valid = jnp.ones((b,), bool) if valid is None else valid
  cols = _gather(teacher_vecs.astype(jnp.float32), axis_name)
  col_valid = _gather(valid, axis_name)
  offset = jax.lax.axis_index(axis_name) * b if axis_name else 0
  logits = (student_vecs.astype(jnp.float32) @ cols.T) / temperature
  logits = jnp.where(col_valid[None, :], logits, -1e9)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(b) + offset)
  n = jax.lax.stop_gradient(_psum(jnp.sum(valid), axis_name))
  return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(n, 1)


def pooled_mse(student_vecs: jax.Array, teacher_vecs: jax.Array,
               valid: jax.Array | None = None, *, axis_name: str | None = None) -> jax.Array:
  """Pooled-embedding MSE (sentence-transformers' multilingual distillation loss).

  Args:
    student_vecs, teacher_vecs: [B, D].
    valid: [B] bool.
    axis_name: inside `pmap`: this device's share of the global mean.

  Returns:
    float32 scalar: mean over valid rows and dimensions (as torch MSELoss).
  """
  err = jnp.mean(jnp.square(student_vecs.astype(jnp.float32) -
                            teacher_vecs.astype(jnp.float32)), axis=-1)
  valid = jnp.ones(err.shape, bool) if valid is None else valid
  n = jax.lax.stop_gradient(_psum(jnp.sum(valid), axis_name))
  return jnp.sum(jnp.where(valid, err, 0.0)) / jnp.maximum(n, 1)


def ot_per_pair(cfg: ot.OTConfig, student_tokens, student_mask, teacher_tokens, teacher_mask,
                student_special, teacher_special) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(<P, C> [B], valid [B], converged [B]) of each pair: a per-pair function,
  so it runs unchanged on each device's own rows (see `sharding.per_device`)."""
  _, aux = ot.ot_alignment_loss(student_tokens, student_mask, teacher_tokens, teacher_mask,
                                cfg, student_special=student_special,
                                teacher_special=teacher_special)
  return aux["per_pair"], aux["valid"], aux["converged"]


def distillation_loss(cfg: LossConfig, student_tokens: jax.Array, student_vecs: jax.Array,
                      teacher_tokens: jax.Array, teacher_vecs: jax.Array,
                      batch: dict[str, jax.Array], *, axis_name: str | None = None,
                      ot_fn=None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The weighted objective for one batch.

  Args:
    cfg: weights and options (static).
    student_tokens: [B, Ls, H] student tokens at `cfg.layer` (source side).
    student_vecs: [B, D] student pooled vectors.
    teacher_tokens: [B, Lt, H] teacher tokens at `cfg.layer` (target side).
    teacher_vecs: [B, D] teacher pooled vectors.
    batch: 'src_mask', 'tgt_mask' [B, L] and 'src_special', 'tgt_special'
      [B, L] (special and prefix tokens).
    axis_name: inside `pmap`, the device axis. Every value is then this
      device's share of the global-batch value (local sum / global count), so
      a psum over devices gives exactly the single-device loss and metrics.
    ot_fn: computes `ot_per_pair(cfg.ot, ...)`; `sharding.per_device` wraps it
      so each device solves only its own pairs.

  Returns:
    (total loss, metrics: each term and OT diagnostics, float32 scalars).
  """
  valid = (jnp.sum(batch["src_mask"], -1) > 0) & (jnp.sum(batch["tgt_mask"], -1) > 0)
  n_valid = jax.lax.stop_gradient(jnp.maximum(_psum(jnp.sum(valid), axis_name), 1))
  terms, metrics = {}, {}
  if cfg.ot_weight:
    fn = ot_fn or functools.partial(ot_per_pair, cfg.ot)
    per_pair, ot_valid, converged = fn(student_tokens, batch["src_mask"], teacher_tokens,
                                       batch["tgt_mask"], batch["src_special"],
                                       batch["tgt_special"])
    n_ot = jax.lax.stop_gradient(jnp.maximum(_psum(jnp.sum(ot_valid), axis_name), 1))
    terms["ot"] = jnp.sum(per_pair) / n_ot
    metrics["ot_converged"] = jnp.sum(converged) / n_ot
  if cfg.contrastive_weight:
    terms["contrastive"] = contrastive(student_vecs, teacher_vecs, cfg.temperature, valid,
                                       axis_name=axis_name)
  if cfg.mse_weight:
    terms["mse"] = pooled_mse(student_vecs, teacher_vecs, valid, axis_name=axis_name)
  weights = {"ot": cfg.ot_weight, "contrastive": cfg.contrastive_weight, "mse": cfg.mse_weight}
  total = sum(weights[k] * v for k, v in terms.items())
  metrics.update({f"loss_{k}": v for k, v in terms.items()})
  # How far apart in-batch translations stay for the student: the collapse
  # that pulling alone causes shows up here first.
  s = jax.lax.stop_gradient(student_vecs.astype(jnp.float32))
  cols = _gather(jax.lax.stop_gradient(teacher_vecs.astype(jnp.float32)), axis_name)
  col_valid = _gather(valid, axis_name)
  b = s.shape[0]
  offset = jax.lax.axis_index(axis_name) * b if axis_name else 0
  sims = s @ cols.T
  own = jnp.arange(cols.shape[0])[None, :] == (jnp.arange(b) + offset)[:, None]
  off = ~own & valid[:, None] & col_valid[None, :]
  n_off = jax.lax.stop_gradient(jnp.maximum(_psum(jnp.sum(off), axis_name), 1))
  metrics["pos_cos"] = jnp.sum(jnp.where(own & valid[:, None], sims, 0)) / n_valid
  metrics["neg_cos"] = jnp.sum(jnp.where(off, sims, 0)) / n_off
  return total, metrics
