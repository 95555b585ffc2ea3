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


def contrastive(student_vecs: jax.Array, teacher_vecs: jax.Array,
                temperature: float, valid: jax.Array | None = None) -> jax.Array:
  """In-batch InfoNCE, student source -> teacher target.

  Args:
    student_vecs: [B, D] L2-normalised student vectors.
    teacher_vecs: [B, D] L2-normalised teacher vectors; row i is the
      translation of student row i, the other rows its negatives.
    temperature: logits are cosine / temperature.
    valid: [B] bool; invalid rows (batch padding) are neither anchors nor
      negatives.

  Returns:
    mean cross-entropy over valid rows (float32 scalar).
  """
  b = student_vecs.shape[0]
  valid = jnp.ones((b,), bool) if valid is None else valid
  logits = (student_vecs.astype(jnp.float32) @ teacher_vecs.astype(jnp.float32).T) / temperature
  logits = jnp.where(valid[None, :], logits, -1e9)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(b))
  return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def pooled_mse(student_vecs: jax.Array, teacher_vecs: jax.Array,
               valid: jax.Array | None = None) -> jax.Array:
  """Mean over valid rows of the squared error summed over dimensions... / D.

  Args:
    student_vecs, teacher_vecs: [B, D].
    valid: [B] bool.

  Returns:
    float32 scalar: mean over valid rows and dimensions (as torch MSELoss).
  """
  err = jnp.mean(jnp.square(student_vecs.astype(jnp.float32) -
                            teacher_vecs.astype(jnp.float32)), axis=-1)
  valid = jnp.ones(err.shape, bool) if valid is None else valid
  return jnp.sum(jnp.where(valid, err, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def distillation_loss(cfg: LossConfig, student_tokens: jax.Array, student_vecs: jax.Array,
                      teacher_tokens: jax.Array, teacher_vecs: jax.Array,
                      batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The weighted objective for one batch.

  Args:
    cfg: weights and options (static).
    student_tokens: [B, Ls, H] student tokens at `cfg.layer` (source side).
    student_vecs: [B, D] student pooled vectors.
    teacher_tokens: [B, Lt, H] teacher tokens at `cfg.layer` (target side).
    teacher_vecs: [B, D] teacher pooled vectors.
    batch: 'src_mask', 'tgt_mask' [B, L] and 'src_special', 'tgt_special'
      [B, L] (special and prefix tokens).

  Returns:
    (total loss, metrics: each term and OT diagnostics, float32 scalars).
  """
  valid = (jnp.sum(batch["src_mask"], -1) > 0) & (jnp.sum(batch["tgt_mask"], -1) > 0)
  terms, metrics = {}, {}
  if cfg.ot_weight:
    terms["ot"], aux = ot.ot_alignment_loss(
        student_tokens, batch["src_mask"], teacher_tokens, batch["tgt_mask"], cfg.ot,
        student_special=batch["src_special"], teacher_special=batch["tgt_special"])
    metrics["ot_converged"] = jnp.sum(aux["converged"]) / jnp.maximum(jnp.sum(aux["valid"]), 1)
  if cfg.contrastive_weight:
    terms["contrastive"] = contrastive(student_vecs, teacher_vecs, cfg.temperature, valid)
  if cfg.mse_weight:
    terms["mse"] = pooled_mse(student_vecs, teacher_vecs, valid)
  weights = {"ot": cfg.ot_weight, "contrastive": cfg.contrastive_weight, "mse": cfg.mse_weight}
  total = sum(weights[k] * v for k, v in terms.items())
  metrics.update({f"loss_{k}": v for k, v in terms.items()})
  # How far apart in-batch translations stay for the student: the collapse
  # that pulling alone causes shows up here first.
  sims = student_vecs.astype(jnp.float32) @ teacher_vecs.astype(jnp.float32).T
  b = sims.shape[0]
  off = ~jnp.eye(b, dtype=bool) & valid[:, None] & valid[None, :]
  metrics["pos_cos"] = jnp.sum(jnp.where(valid, jnp.diagonal(sims), 0)) / jnp.maximum(
      jnp.sum(valid), 1)
  metrics["neg_cos"] = jnp.sum(jnp.where(off, sims, 0)) / jnp.maximum(jnp.sum(off), 1)
  return total, metrics
