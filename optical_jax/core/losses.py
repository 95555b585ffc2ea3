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
  multilingual-distillation recipe, which also has the student encode the
  English side and match the teacher there: `both_sides`).
* `token_mse`: token-level MSE to the teacher under a hard alignment: each
  student token is paired with the teacher token it is most similar to
  (`token_alignment`), the classic alternative to a soft transport plan; on
  unit vectors, so it is OT's cost under a hard plan.

The teacher job's objective is here too: `triple_loss`, InfoNCE over in-batch
positives and hard negatives, dense or late-interaction scored.

The total is their weighted sum; `LossConfig` holds the weights. A method
(`config.method`) names which terms train; `for_method` turns it into the
weights (the in-batch contrastive term goes with every method).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from optical_jax.core import ot


# method -> the alignment terms it trains with, beside the contrastive term.
METHODS = {
    "optical": ("ot",),
    "optical+mse": ("ot", "mse"),
    "kd_mse": ("mse",),          # pooled MSE on both sides of the bitext
    "kd_token": ("token_mse",),
}
# Methods that train nothing: the teacher encodes the queries (zero_shot), or
# their English translations from an outside system (translate_query).
UNTRAINED = ("zero_shot", "translate_query")
_TERM_WEIGHT = {"ot": "ot_weight", "mse": "mse_weight", "token_mse": "token_mse_weight"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig:
  """Weights and options of the distillation objective.

  Every field is required: the defaults live in one place, the `loss` and `ot`
  blocks and `method` of `config.default()` (`config.loss_config` builds this
  from them, through `for_method`).

  Attributes:
    method: what trains (`METHODS`); `for_method` zeroes the other terms.
    ot_weight: weight of the OT token-alignment loss.
    contrastive_weight: weight of in-batch InfoNCE against the teacher's
      target-side vectors.
    mse_weight: weight of pooled MSE to the teacher's target-side vectors.
    token_mse_weight: weight of token MSE under a hard alignment.
    token_alignment: 'mutual' (pairs that are each other's most similar
      token, SimAlign's argmax) or 'argmax' (every student token to its most
      similar teacher token).
    temperature: InfoNCE temperature (cosine scores / temperature).
    layer: which layer's token embeddings the OT aligns (1-based, negative from
      the top; pooled vectors always come from the last layer).
    extra_ot_layers: more layers whose tokens OT aligns too; the OT term is the
      mean over `layer` and these.
    english_side: 'on': the student also reads the English side, and every
      alignment term (OT, MSE, token MSE) adds the same term between that
      reading and the teacher's; 'off': the source side only; 'auto': on for
      kd_mse (the sentence-transformers recipe), off for the others.
    ot: the OT options.
  """
  method: str
  ot_weight: float
  contrastive_weight: float
  mse_weight: float
  token_mse_weight: float
  token_alignment: str
  temperature: float
  layer: int
  extra_ot_layers: tuple[int, ...]
  english_side: str
  ot: ot.OTConfig

  def __post_init__(self):
    weights = (self.ot_weight, self.contrastive_weight, self.mse_weight, self.token_mse_weight)
    if min(weights) < 0:
      raise ValueError("loss weights must be >= 0")
    if not sum(weights) > 0:
      raise ValueError("at least one loss weight must be > 0")
    if not self.temperature > 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature}")
    if self.token_alignment not in ("mutual", "argmax"):
      raise ValueError(f"token_alignment={self.token_alignment!r}: expected 'mutual' or 'argmax'")
    if self.english_side not in ("auto", "on", "off"):
      raise ValueError(f"english_side={self.english_side!r}: expected 'auto', 'on' or 'off'")

  @property
  def both_sides(self) -> bool:
    """Whether the alignment terms also pull the student's encoding of the
    English side onto the teacher's (the batch then has 'stu_tgt_*' arrays)."""
    return self.english_side == "on" or (self.english_side == "auto"
                                         and self.method == "kd_mse")


def for_method(method: str, cfg: LossConfig) -> LossConfig:
  """The weights `method` trains with: its terms at `cfg`'s weights, the others 0.

  Raises:
    ValueError: an unknown or untrained method, or one whose term has weight 0.
  """
  if method not in METHODS:
    raise ValueError(f"method={method!r} trains nothing or is unknown: expected one of "
                     f"{sorted(METHODS)} (or {UNTRAINED}, which are evaluated untrained)")
  weights = {}
  for term, field in _TERM_WEIGHT.items():
    on = term in METHODS[method]
    if on and not getattr(cfg, field) > 0:
      raise ValueError(f"method {method!r} trains with loss.{field}, which is 0")
    weights[field] = getattr(cfg, field) if on else 0.0
  return dataclasses.replace(cfg, method=method, **weights)


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

  Summed over dimensions, i.e. torch's MSELoss times D: for unit vectors it is
  2 - 2 cos, on the scale of the other terms whatever the dimension, so one
  weight means the same for a 384- and a 1024-dimensional teacher.

  Args:
    student_vecs, teacher_vecs: [B, D].
    valid: [B] bool.
    axis_name: inside `pmap`: this device's share of the global mean.

  Returns:
    float32 scalar: mean over valid rows of the squared distance.
  """
  err = jnp.sum(jnp.square(student_vecs.astype(jnp.float32) -
                           teacher_vecs.astype(jnp.float32)), axis=-1)
  valid = jnp.ones(err.shape, bool) if valid is None else valid
  n = jax.lax.stop_gradient(_psum(jnp.sum(valid), axis_name))
  return jnp.sum(jnp.where(valid, err, 0.0)) / jnp.maximum(n, 1)


def token_alignment(student_tokens: jax.Array, student_ok: jax.Array, teacher_tokens: jax.Array,
                    teacher_ok: jax.Array, kind: str = "mutual") -> tuple[jax.Array, jax.Array]:
  """Hard token alignment by cosine similarity (no gradient flows through it).

  Args:
    student_tokens: [B, Ls, H]; teacher_tokens: [B, Lt, H].
    student_ok, teacher_ok: [B, Ls], [B, Lt] bool: tokens that may align
      (real, not special or prefix).
    kind: 'argmax': each student token to its most similar teacher token;
      'mutual': only pairs that are each other's most similar.

  Returns:
    index: [B, Ls] int32 teacher position of each student token;
    aligned: [B, Ls] bool, whether that student token has a partner.
  """
  s = jax.lax.stop_gradient(student_tokens.astype(jnp.float32))
  t = jax.lax.stop_gradient(teacher_tokens.astype(jnp.float32))
  sims = 1.0 - ot.cost_matrix(s, t, "cosine")                       # [B, Ls, Lt]
  pair_ok = student_ok[:, :, None] & teacher_ok[:, None, :]
  sims = jnp.where(pair_ok, sims, -jnp.inf)
  index = jnp.argmax(sims, axis=-1).astype(jnp.int32)               # [B, Ls]
  aligned = student_ok & jnp.any(teacher_ok, axis=-1, keepdims=True)
  if kind == "mutual":
    back = jnp.argmax(sims, axis=-2)                                # [B, Lt]
    aligned &= jnp.take_along_axis(back, index, axis=-1) == jnp.arange(s.shape[1])[None]
  return index, aligned


def token_mse(student_tokens: jax.Array, student_ok: jax.Array, teacher_tokens: jax.Array,
              teacher_ok: jax.Array, kind: str = "mutual", *,
              axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
  """Token-level MSE to the teacher under `token_alignment`.

  On L2-normalised token vectors, summed over H: the squared distance
  2 - 2 cos, i.e. twice OT's cosine cost, so this is OPTICAL's objective with
  the soft plan replaced by a hard alignment, on the same scale (and, like the
  pooled MSE, one weight means the same for any hidden size).

  Args:
    as `token_alignment`; axis_name: inside `pmap`: this device's share.

  Returns:
    (mean over aligned student tokens of the squared distance to their
    teacher token, fraction of eligible student tokens aligned); float32
    scalars, 0 when nothing aligns.
  """
  index, aligned = token_alignment(student_tokens, student_ok, teacher_tokens, teacher_ok, kind)
  # rsqrt(max(|x|^2, tiny)): finite gradients for zero (pad) vectors, as in ot.cost_matrix.
  unit = lambda x: x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-12))
  s = unit(student_tokens.astype(jnp.float32))
  t = jax.lax.stop_gradient(unit(teacher_tokens.astype(jnp.float32)))
  target = jnp.take_along_axis(t, index[..., None], axis=1)
  err = jnp.sum(jnp.square(s - target), axis=-1)
  n = jax.lax.stop_gradient(_psum(jnp.sum(aligned), axis_name))
  n_ok = jax.lax.stop_gradient(_psum(jnp.sum(student_ok), axis_name))
  return (jnp.sum(jnp.where(aligned, err, 0.0)) / jnp.maximum(n, 1),
          jnp.sum(aligned) / jnp.maximum(n_ok, 1))


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
                      ot_fn=None, student_tgt: tuple | None = None
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The weighted objective for one batch.

  Args:
    cfg: weights and options (static).
    student_tokens: [B, Ls, H] student tokens at `cfg.layer` (source side), or
      a tuple of them, `cfg.layer`'s then `cfg.extra_ot_layers`'.
    student_vecs: [B, D] student pooled vectors.
    teacher_tokens: [B, Lt, H] teacher tokens at `cfg.layer` (target side).
    teacher_vecs: [B, D] teacher pooled vectors.
    batch: 'src_mask', 'tgt_mask' [B, L] and 'src_special', 'tgt_special'
      [B, L] (special and prefix tokens); with `cfg.both_sides` also
      'stu_tgt_mask', 'stu_tgt_special' [B, Lt].
    axis_name: inside `pmap`, the device axis. Every value is then this
      device's share of the global-batch value (local sum / global count), so
      a psum over devices gives exactly the single-device loss and metrics.
    ot_fn: computes `ot_per_pair(cfg.ot, ...)`; `sharding.per_device` wraps it
      so each device solves only its own pairs.
    student_tgt: (tokens, vectors) of the student's reading of the English
      side, shaped as `student_tokens` and `student_vecs` (required with
      `cfg.both_sides`): each alignment term adds its value on that side.

  Returns:
    (total loss, metrics: each term and OT diagnostics, float32 scalars).
  """
  valid = (jnp.sum(batch["src_mask"], -1) > 0) & (jnp.sum(batch["tgt_mask"], -1) > 0)
  n_valid = jax.lax.stop_gradient(jnp.maximum(_psum(jnp.sum(valid), axis_name), 1))
  terms, metrics = {}, {}
  # Several OT layers (`extra_ot_layers`) come as tuples, `cfg.layer`'s first.
  layers = lambda tokens: tokens if isinstance(tokens, tuple) else (tokens,)
  t_layers = layers(teacher_tokens)
  # The student's readings the alignment terms pull onto the teacher's English:
  # (batch key prefix, token layers, pooled vectors); the source side first.
  sides = [("src", layers(student_tokens), student_vecs)]
  if cfg.both_sides:
    if student_tgt is None:
      raise ValueError("english_side: the student's encoding of the English side is needed")
    sides.append(("stu_tgt", layers(student_tgt[0]), student_tgt[1]))
  if cfg.ot_weight:
    fn = ot_fn or functools.partial(ot_per_pair, cfg.ot)
    ot_terms, converged_share = [], []
    for side, s_layers, _ in sides:
      per_layer = []
      for s_tok, t_tok in zip(s_layers, t_layers):
        per_pair, ot_valid, converged = fn(s_tok, batch[f"{side}_mask"], t_tok,
                                           batch["tgt_mask"], batch[f"{side}_special"],
                                           batch["tgt_special"])
        n_ot = jax.lax.stop_gradient(jnp.maximum(_psum(jnp.sum(ot_valid), axis_name), 1))
        per_layer.append(jnp.sum(per_pair) / n_ot)
        converged_share.append(jnp.sum(converged) / n_ot)
      ot_terms.append(sum(per_layer) / len(per_layer))
    terms["ot"] = sum(ot_terms)      # mean over the layers, summed over the sides
    metrics["ot_converged"] = sum(converged_share) / len(converged_share)
  if cfg.contrastive_weight:
    terms["contrastive"] = contrastive(student_vecs, teacher_vecs, cfg.temperature, valid,
                                       axis_name=axis_name)
  if cfg.mse_weight:
    terms["mse"] = sum(pooled_mse(vecs, teacher_vecs, valid, axis_name=axis_name)
                       for _, _, vecs in sides)
  if cfg.token_mse_weight:
    ok = lambda side: (batch[f"{side}_mask"] > 0) & ~(batch[f"{side}_special"] > 0)
    per_side = [token_mse(s_layers[0], ok(side), t_layers[0], ok("tgt"), cfg.token_alignment,
                          axis_name=axis_name) for side, s_layers, _ in sides]
    terms["token_mse"] = sum(value for value, _ in per_side)
    metrics["token_aligned"] = sum(share for _, share in per_side) / len(per_side)
  weights = {"ot": cfg.ot_weight, "contrastive": cfg.contrastive_weight, "mse": cfg.mse_weight,
             "token_mse": cfg.token_mse_weight}
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

# ----------------------------------------------------------------------------
# The teacher's objective: (query, positive, hard negative) triples.

SCORINGS = ("dense", "late_interaction")
# Masked similarities: finite, so no -inf reaches a gradient.
_NEG = -1e9


def _unit(x: jax.Array) -> jax.Array:
  """float32 unit vectors along the last axis; zero vectors stay zero."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, 1e-12)


def in_batch_scores(queries: jax.Array, query_mask: jax.Array | None, docs: jax.Array,
                    doc_mask: jax.Array | None, scoring: str) -> jax.Array:
  """Similarity of every query to every candidate passage, float32 `[B, N]`.

  Args:
    queries: dense: `[B, D]` pooled vectors; late_interaction: `[B, Lq, D]`
      token vectors. L2-normalised here (any norm in).
    query_mask: late_interaction: `[B, Lq]`, 1 on real tokens (dense: unused).
    docs, doc_mask: `[N, D]`, or `[N, Ld, D]` and `[N, Ld]`, likewise.
    scoring: 'dense' (cosine) or 'late_interaction' (MaxSim: the sum over real
      query tokens of the best cosine over real passage tokens, as
      `late_interaction.maxsim` scores at evaluation).
  """
  q, d = _unit(queries), _unit(docs)
  if scoring == "dense":
    return q @ d.T
  if scoring != "late_interaction":
    raise ValueError(f"scoring={scoring!r}: expected one of {SCORINGS}")
  sim = jnp.einsum("bid,njd->bnij", q, d)                            # [B, N, Lq, Ld]
  best = jnp.max(jnp.where(doc_mask[None, :, None, :].astype(bool), sim, _NEG), axis=-1)
  return jnp.sum(jnp.where(query_mask[:, None, :].astype(bool), best, 0.0), axis=-1)


def triple_loss(queries: jax.Array, positives: jax.Array, negatives: jax.Array, *,
                scoring: str, temperature: float, query_mask: jax.Array | None = None,
                positive_mask: jax.Array | None = None, negative_mask: jax.Array | None = None,
                valid: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """InfoNCE over in-batch positives and hard negatives.

  Query i's candidates are all B positives then all B hard negatives; the
  label is its own positive (column i):

    loss = mean_i [ logsumexp_j s[i, j] / T  -  s[i, i] / T ],  s = scores [B, 2B].

  Args:
    queries: `[B, D]` (dense) or `[B, Lq, D]` (late_interaction).
    positives, negatives: `[B, D]` or `[B, Ld, D]`; row i belongs to query i.
    scoring: 'dense' or 'late_interaction' (see `in_batch_scores`).
    temperature: scores are divided by it.
    query_mask, positive_mask, negative_mask: late_interaction: `[B, L]` real
      tokens.
    valid: `[B]` bool; an invalid row (batch padding) is neither a query nor
      a candidate (its positive and negative columns are dropped).

  Returns:
    (mean cross-entropy over valid queries, metrics: 'accuracy' (own positive
    scored first), 'pos_score', 'hard_neg_score' (own, unscaled means)), all
    float32 scalars.
  """
  b = queries.shape[0]
  valid = jnp.ones((b,), bool) if valid is None else valid.astype(bool)
  docs = jnp.concatenate([positives, negatives])
  doc_mask = None if positive_mask is None else jnp.concatenate([positive_mask, negative_mask])
  s = in_batch_scores(queries, query_mask, docs, doc_mask, scoring)          # [B, 2B]
  cols = jnp.concatenate([valid, valid])
  logits = jnp.where(cols[None, :], s / temperature, _NEG)
  labels = jnp.arange(b)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  n = jnp.maximum(jnp.sum(valid), 1)

  def mean(x):
    return jnp.sum(jnp.where(valid, x, 0.0)) / n
  metrics = {"accuracy": mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)),
             "pos_score": mean(s[labels, labels]), "hard_neg_score": mean(s[labels, labels + b])}
  return mean(ce), jax.lax.stop_gradient(metrics)
