"""BERT masking and the masked-LM cross-entropy: the math of the pretraining terms.

Distillation pulls the student's source-language encoding towards the
teacher's English one; it says nothing about the source language itself. The
pretraining objectives of multilingual encoders can be added to it (see
`training/pretraining.py`): MLM masks tokens of the source sentence, TLM
(XLM, Conneau & Lample 2019) masks tokens of the concatenated pair
(`data/tlm.py` builds it). This module holds what both need: the masking
recipe (pure `jax.random`, deterministic in the key) and the loss over the
predicted positions.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True, kw_only=True)
class MLMConfig:
  """The pretraining terms and BERT's masking recipe.

  Every field is required: the defaults live in one place, the `pretrain`
  block of `config.default()` (`config.pretrain_config` builds this from it).

  Attributes:
    mlm_weight: weight of MLM on the source side (0: off).
    tlm_weight: weight of TLM on the concatenated pair (0: off; needs the
      `tlm_*` batch keys, see `data/tlm.py`).
    mask_rate: fraction of the maskable tokens (real, not special, not
      prefix) chosen for prediction in each sequence.
    mask_fraction: of the chosen tokens, the share replaced by the mask token.
    random_fraction: the share replaced by a random ordinary token; the rest
      (1 - mask_fraction - random_fraction) keep their id.
    tlm_max_length: length of the concatenated TLM sequences; None: the two
      sides' padded lengths together (minus the dropped target CLS), so
      nothing is cut.
  """
  mlm_weight: float
  tlm_weight: float
  mask_rate: float
  mask_fraction: float
  random_fraction: float
  tlm_max_length: int | None

  def __post_init__(self):
    for name in ("mlm_weight", "tlm_weight"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if not 0 < self.mask_rate < 1:
      raise ValueError(f"mask_rate must be in (0, 1), got {self.mask_rate}")
    for name in ("mask_fraction", "random_fraction"):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
    if self.mask_fraction + self.random_fraction > 1 + 1e-9:
      raise ValueError(f"mask_fraction + random_fraction must be <= 1, got "
                       f"{self.mask_fraction} + {self.random_fraction}")
    if self.tlm_max_length is not None and self.tlm_max_length < 4:
      raise ValueError(f"tlm_max_length must be >= 4 (two sentences with their "
                       f"special tokens), got {self.tlm_max_length}")

  @property
  def enabled(self) -> bool:
    return self.mlm_weight > 0 or self.tlm_weight > 0

# ----------------------------------------------------------------------------
# Masking.

def max_predictions(length: int, mask_rate: float) -> int:
  """Most positions `mask_tokens` chooses in a row of `length` tokens."""
  return max(1, math.ceil(length * mask_rate))


def _ordinary_tokens(key: jax.Array, shape, vocab_size: int,
                     exclude_ids: Sequence[int]) -> jax.Array:
  """Uniform ids in [0, vocab_size) minus `exclude_ids`, [*shape] int32."""
  excluded = sorted({int(i) for i in exclude_ids if 0 <= i < vocab_size})
  ids = jax.random.randint(key, shape, 0, vocab_size - len(excluded))
  # Draw from the smaller range, then step over each excluded id in ascending
  # order: a bijection onto the allowed ids, so still uniform, no rejection.
  for e in excluded:
    ids = ids + (ids >= e)
  return ids.astype(jnp.int32)


def mask_tokens(rng: jax.Array, ids: jax.Array, mask: jax.Array, special: jax.Array,
                cfg: MLMConfig, *, vocab_size: int, mask_id: int,
                exclude_ids: Sequence[int] = ()) -> tuple[jax.Array, jax.Array, jax.Array]:
  """BERT masking of the real, non-special tokens of each row.

  Each row with n maskable tokens gets exactly max(1, round(n * mask_rate))
  of them chosen uniformly at random (none when n = 0), as BERT's own data
  pipeline did, rather than an independent coin per token (transformers'
  collator): the count then has the static bound `max_predictions(L, rate)`,
  so the LM head runs on only that many positions per row. Of the chosen
  tokens, `mask_fraction` become `mask_id`, `random_fraction` a random
  ordinary token, and the rest keep their id (the model must still predict
  them).

  Args:
    rng: a PRNG key (typed, or raw uint32 key data).
    ids: [B, L] int token ids.
    mask: [B, L] 1 on real tokens, 0 on padding.
    special: [B, L] bool, True on special and prefix tokens (never masked).
    cfg: the rates.
    vocab_size: random replacements are drawn from [0, vocab_size).
    mask_id: the mask token's id.
    exclude_ids: ids random replacements never take (the special tokens).

  Returns:
    input_ids: [B, L] int32, the ids with the chosen tokens replaced.
    labels: [B, L] int32, the original ids (meaningful where `weights` is 1).
    weights: [B, L] float32, 1 at the chosen positions (the predictions),
      0 elsewhere.
  """
  key = as_key(rng)
  k_choose, k_mode, k_token = jax.random.split(key, 3)
  ids = ids.astype(jnp.int32)
  maskable = (mask > 0) & ~special.astype(bool)
  n = jnp.sum(maskable, axis=1)
  count = jnp.floor(n.astype(jnp.float32) * cfg.mask_rate + 0.5).astype(jnp.int32)
  count = jnp.where(n > 0, jnp.maximum(count, 1), 0)
  # A random order of each row's maskable positions (the others sort last);
  # the first `count` of it are chosen.
  scores = jnp.where(maskable, jax.random.uniform(k_choose, ids.shape), -1.0)
  rank = jnp.argsort(jnp.argsort(-scores, axis=1), axis=1)
  chosen = maskable & (rank < count[:, None])

  u = jax.random.uniform(k_mode, ids.shape)
  to_mask = chosen & (u < cfg.mask_fraction)
  to_random = chosen & ~to_mask & (u < cfg.mask_fraction + cfg.random_fraction)
  random_ids = _ordinary_tokens(k_token, ids.shape, vocab_size, exclude_ids)
  input_ids = jnp.where(to_mask, jnp.int32(mask_id), jnp.where(to_random, random_ids, ids))
  return input_ids, ids, chosen.astype(jnp.float32)


def as_key(rng: jax.Array) -> jax.Array:
  # TrainState keeps raw key data (uint32 [2]) so checkpoints stay plain arrays.
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return rng
  return jax.random.wrap_key_data(rng)

# ----------------------------------------------------------------------------
# Loss.

def _psum(x: jax.Array, axis_name: str | None) -> jax.Array:
  return jax.lax.psum(x, axis_name) if axis_name else x


def mlm_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array, *,
             axis_name: str | None = None) -> jax.Array:
  """Cross-entropy averaged over the predicted positions.

  Args:
    logits: [B, L, V] (any float dtype; computed in float32).
    labels: [B, L] int target ids (ignored where `weights` is 0).
    weights: [B, L] 1 at predicted positions, 0 elsewhere.
    axis_name: inside `pmap`, the device axis: the value is this device's
      share of the global mean (local sum / global count; psum it).

  Returns:
    float32 scalar; 0 (with zero gradients) when nothing is predicted.
  """
  w = weights.astype(jnp.float32)
  # Labels at unused positions may be anything (-100, pad); an out-of-range
  # id would gather NaN, so they are pointed at id 0 before the gather.
  safe = jnp.where(w > 0, labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
  n = jax.lax.stop_gradient(_psum(jnp.sum(w), axis_name))
  return jnp.sum(jnp.where(w > 0, ce * w, 0.0)) / jnp.maximum(n, 1.0)


def masked_accuracy(logits: jax.Array, labels: jax.Array, weights: jax.Array,
                    axis_name: str | None) -> jax.Array:
  """Fraction of the predicted positions (`weights` > 0) whose argmax is the label."""
  w = weights.astype(jnp.float32)
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(hit * w) / jnp.maximum(_psum(jnp.sum(w), axis_name), 1.0)
