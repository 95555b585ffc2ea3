"""Masked and translation language modelling, an extra loss during distillation.

Distillation pulls the student's source-language encoding towards the
teacher's English one; it says nothing about the source language itself. The
pretraining objectives of multilingual encoders can be added to it:

* MLM (BERT): mask tokens of the source sentence, predict them from the rest;
* TLM (XLM, Conneau & Lample 2019): concatenate the source sentence and its
  English translation into one sequence and mask tokens of both, so a masked
  source word can be recovered from the translation, which ties the two
  languages' tokens together.

Both run the student encoder on masked inputs and predict the masked tokens
with `MLMHead`, the BERT/RoBERTa LM head whose output matrix is the student's
own word embedding (tied, as in the pretrained checkpoints). The head starts
from the checkpoint's `cls.predictions.*` (BERT) or `lm_head.*` (RoBERTa,
XLM-R) tensors when it has them, else from a seeded random initialisation.

What the train step calls is `pretraining_loss`. Masking happens inside the
step (pure `jax.random`, deterministic in the key), the TLM concatenation on
the host when the batch is built (`add_tlm_inputs`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optical_jax import text
from optical_jax.models import encoder as encoder_lib
from optical_jax.models import weights as weights_lib

log = logging.getLogger(__name__)

# RoBERTa's LM head applies GELU whatever `hidden_act` says; BERT's applies
# `hidden_act` (see transformers' RobertaLMHead / BertPredictionHeadTransform).
_ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert")
TLM_KEYS = ("tlm_ids", "tlm_mask", "tlm_special", "tlm_type_ids")


@dataclasses.dataclass(frozen=True)
class MLMConfig:
  """The pretraining terms and BERT's masking recipe.

  Attributes:
    mlm_weight: weight of MLM on the source side (0: off).
    tlm_weight: weight of TLM on the concatenated pair (0: off; needs the
      `tlm_*` batch keys, see `add_tlm_inputs`).
    mask_rate: fraction of the maskable tokens (real, not special, not
      prefix) chosen for prediction in each sequence.
    mask_fraction: of the chosen tokens, the share replaced by the mask token.
    random_fraction: the share replaced by a random ordinary token; the rest
      (1 - mask_fraction - random_fraction) keep their id.
    tlm_max_length: length of the concatenated TLM sequences; None: the two
      sides' padded lengths together (minus the dropped target CLS), so
      nothing is cut.
  """
  mlm_weight: float = 0.0
  tlm_weight: float = 0.0
  mask_rate: float = 0.15
  mask_fraction: float = 0.8
  random_fraction: float = 0.1
  tlm_max_length: int | None = None

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


@dataclasses.dataclass(frozen=True)
class VocabIds:
  """The token ids masking needs, read from a tokenizer.

  Attributes:
    mask_id: the mask token ([MASK], <mask>).
    pad_id: padding.
    cls_id: first token of a sequence ([CLS], <s>).
    sep_id: separator / end of sequence ([SEP], </s>).
    special_ids: every special token; random replacements never draw them.
  """
  mask_id: int
  pad_id: int
  cls_id: int | None
  sep_id: int | None
  special_ids: tuple[int, ...]

  @classmethod
  def from_tokenizer(cls, tokenizer: text.Tokenizer) -> "VocabIds":
    """Reads the ids from a `text.Tokenizer`.

    Raises:
      ValueError: the tokenizer has no mask token (it cannot do MLM).
    """
    def token_id(*names):
      for name in names:
        token = tokenizer.special_tokens.get(name)
        if token is not None and tokenizer.backend.token_to_id(token) is not None:
          return tokenizer.backend.token_to_id(token)
      return None

    mask_id = token_id("mask_token")
    if mask_id is None:
      raise ValueError("the tokenizer has no mask token (special_tokens['mask_token']); "
                       "MLM and TLM need one")
    named = {token_id(n) for n in tokenizer.special_tokens} - {None}
    added = {i for i, tok in tokenizer.backend.get_added_tokens_decoder().items() if tok.special}
    return cls(mask_id=mask_id, pad_id=tokenizer.pad_id,
               cls_id=token_id("cls_token", "bos_token"),
               sep_id=token_id("sep_token", "eos_token"),
               special_ids=tuple(sorted(named | added)))


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
  key = _as_key(rng)
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


def _as_key(rng: jax.Array) -> jax.Array:
  # TrainState keeps raw key data (uint32 [2]) so checkpoints stay plain arrays.
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return rng
  return jax.random.wrap_key_data(rng)


# ----------------------------------------------------------------------------
# The LM head.

class MLMHead(nnx.Module):
  """BERT / RoBERTa LM head: dense H->H, activation, LayerNorm, tied decoder.

  The decoder matrix is not a parameter of the head: it is the word embedding
  passed at call time, so the student's table (trainable or frozen) is what
  predicts, as in the checkpoints (`tie_word_embeddings`). Only the output
  bias is the head's own.

  Attributes:
    dense: the H -> H transform.
    norm: its LayerNorm.
    output_bias: [V] bias of the vocabulary logits.
  """

  def __init__(self, cfg: encoder_lib.EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    h = cfg.hidden_size
    kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    part = lambda init, axes: nnx.with_partitioning(init, axes, eager_sharding=False)
    self.dense = nnx.Linear(
        h, h, kernel_init=part(nnx.initializers.normal(0.02), ("embed", None)),
        bias_init=part(nnx.initializers.zeros_init(), (None,)), rngs=rngs, **kw)
    self.norm = nnx.LayerNorm(
        h, epsilon=cfg.layer_norm_eps,
        scale_init=part(nnx.initializers.ones_init(), ("embed",)),
        bias_init=part(nnx.initializers.zeros_init(), ("embed",)), rngs=rngs, **kw)
    self.output_bias = nnx.Param(
        jnp.zeros((cfg.vocab_size,), jnp.dtype(cfg.param_dtype)), out_sharding=("vocab",),
        eager_sharding=False)
    act = "gelu" if cfg.model_type in _ROBERTA_FAMILY else cfg.hidden_act
    self.activation = encoder_lib._ACTIVATIONS[act]  # pylint: disable=protected-access

  def __call__(self, hidden: jax.Array, embedding: jax.Array) -> jax.Array:
    """Vocabulary logits.

    Args:
      hidden: [..., H] encoder output.
      embedding: [V, H] the word embedding table (the tied decoder).

    Returns:
      [..., V] float32 logits (the V-way softmax is where precision matters,
      so the decoder matmul accumulates in float32 also for bf16 models).
    """
    x = self.norm(self.activation(self.dense(hidden)))
    logits = jnp.einsum("...h,vh->...v", x, embedding.astype(x.dtype),
                        preferred_element_type=jnp.float32)
    return logits + self.output_bias[...].astype(jnp.float32)


def _head_table(model_type: str) -> tuple[str, list[tuple[tuple[str, ...], str, bool]]]:
  """(HF prefix, [(HF names, tried in order), our name, transpose?])."""
  if model_type in _ROBERTA_FAMILY:
    prefix, dense, norm = "lm_head.", "dense.", "layer_norm."
  else:
    prefix, dense, norm = "cls.predictions.", "transform.dense.", "transform.LayerNorm."
  rows = [
      ((dense + "weight",), "dense/kernel", True),
      ((dense + "bias",), "dense/bias", False),
      ((norm + "weight", norm + "gamma"), "norm/scale", False),
      ((norm + "bias", norm + "beta"), "norm/bias", False),
      # transformers ties `decoder.bias` to `bias` and saves one of them.
      (("bias", "decoder.bias"), "output_bias", False),
  ]
  return prefix, rows


def head_params_from_hf(tensors: dict[str, np.ndarray], cfg: encoder_lib.EncoderConfig,
                        *, origin: str = "<tensors>") -> dict[str, np.ndarray] | None:
  """The LM head's parameters from a checkpoint's tensors, if it has a head.

  Args:
    tensors: HF-named arrays (as `weights.read_checkpoint` returns them).
    cfg: the encoder the head sits on.
    origin: where the tensors came from, for messages.

  Returns:
    our parameter name ('dense/kernel', 'dense/bias', 'norm/scale',
    'norm/bias', 'output_bias') -> array in our layout, or None when the
    checkpoint has no `cls.predictions.*` / `lm_head.*` tensors (a bare
    `BertModel` or a sentence-transformers model).

  Raises:
    WeightsError: a head that is there but incomplete or of the wrong shape.
  """
  prefix, rows = _head_table(cfg.model_type)
  if not any(k.startswith(prefix) for k in tensors):
    return None
  h, v = cfg.hidden_size, cfg.vocab_size
  shapes = {"dense/kernel": (h, h), "dense/bias": (h,), "norm/scale": (h,),
            "norm/bias": (h,), "output_bias": (v,)}
  out = {}
  for hf_names, ours, transpose in rows:
    key = next((prefix + n for n in hf_names if prefix + n in tensors), None)
    if key is None:
      raise weights_lib.WeightsError(
          f"{origin}: the LM head lacks {prefix + hf_names[0]!r} (has "
          f"{sorted(k for k in tensors if k.startswith(prefix))})")
    value = np.asarray(tensors[key], np.float32)
    value = np.ascontiguousarray(value.T) if transpose else value
    if value.shape != shapes[ours]:
      raise weights_lib.WeightsError(
          f"{origin}: tensor {key!r} has shape {tuple(tensors[key].shape)}, the config "
          f"expects {shapes[ours]} (after conversion)")
    out[ours] = value
  _warn_if_untied(tensors, prefix, origin)
  return out


def _warn_if_untied(tensors: dict[str, np.ndarray], prefix: str, origin: str) -> None:
  decoder = tensors.get(prefix + "decoder.weight")
  word = next((v for k, v in tensors.items() if k.endswith("embeddings.word_embeddings.weight")),
              None)
  if decoder is None or word is None:
    return
  if decoder.shape != word.shape or not np.allclose(decoder, word, atol=1e-6):
    log.warning("%s: %sdecoder.weight differs from the word embedding (an untied head); "
                "the MLM head predicts with the student's word embedding instead", origin,
                prefix)


def init_head(cfg: encoder_lib.EncoderConfig, *, tensors: dict[str, np.ndarray] | None = None,
              seed: int = 0, origin: str = "<tensors>") -> MLMHead:
  """An `MLMHead` from a checkpoint's head tensors when present, else random.

  Args:
    cfg: the encoder the head sits on.
    tensors: a checkpoint's HF-named tensors, or None.
    seed: the random initialisation's seed (used when there is no head).
    origin: where `tensors` came from, for the log line.
  """
  head = MLMHead(cfg, rngs=nnx.Rngs(seed))
  values = head_params_from_hf(tensors, cfg, origin=origin) if tensors is not None else None
  if values is None:
    log.info("MLM head: %s has no %s* tensors; random initialisation (seed %d)", origin,
             _head_table(cfg.model_type)[0], seed)
    return head
  for name, value in values.items():
    var = head
    for part in name.split("/"):
      var = getattr(var, part)
    var.set_value(jnp.asarray(value, var.get_value().dtype))
  log.info("MLM head: initialised from %s (%s*)", origin, _head_table(cfg.model_type)[0])
  return head


def load_head(directory: str | os.PathLike, cfg: encoder_lib.EncoderConfig, *,
              seed: int = 0) -> MLMHead:
  """`init_head` from an HF model directory (`models.resolve_dir` gives it)."""
  tensors, _ = weights_lib.read_checkpoint(directory)
  return init_head(cfg, tensors=tensors, seed=seed, origin=str(directory))


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


def _accuracy(logits, labels, weights, axis_name):
  w = weights.astype(jnp.float32)
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(hit * w) / jnp.maximum(_psum(jnp.sum(w), axis_name), 1.0)


def masked_lm_term(encoder: encoder_lib.Encoder, head: MLMHead, ids: jax.Array,
                   mask: jax.Array, special: jax.Array, rng: jax.Array, cfg: MLMConfig, *,
                   vocab_size: int, mask_id: int, exclude_ids: Sequence[int] = (),
                   type_ids: jax.Array | None = None, axis_name: str | None = None
                   ) -> tuple[jax.Array, jax.Array]:
  """(loss, accuracy) of masked-token prediction on one batch of sequences.

  Masks [B, L] `ids`, encodes them, and runs the head on only the
  `max_predictions(L)` gathered positions per row, not all L: the [.., V]
  logits are the largest tensor of the step (V = 250k for XLM-R).
  """
  input_ids, labels, weights = mask_tokens(rng, ids, mask, special, cfg,
                                           vocab_size=vocab_size, mask_id=mask_id,
                                           exclude_ids=exclude_ids)
  hidden = encoder(input_ids, mask, type_ids)                          # [B, L, H]
  k = max_predictions(ids.shape[1], cfg.mask_rate)
  # Every chosen position has weight 1 > 0 and there are at most k, so the
  # top k hold them all; the slots left over carry weight 0.
  _, pos = jax.lax.top_k(weights, k)                                   # [B, K]
  hidden = jnp.take_along_axis(hidden, pos[..., None], axis=1)        # [B, K, H]
  labels = jnp.take_along_axis(labels, pos, axis=1)
  weights = jnp.take_along_axis(weights, pos, axis=1)
  logits = head(hidden, encoder.embeddings.word.embedding[...])        # [B, K, V]
  loss = mlm_loss(logits, labels, weights, axis_name=axis_name)
  acc = jax.lax.stop_gradient(_accuracy(logits, labels, weights, axis_name))
  return loss, acc


def pretraining_loss(encoder: encoder_lib.Encoder, head: MLMHead, batch: dict[str, jax.Array],
                     rng: jax.Array, cfg: MLMConfig, *, vocab_size: int, mask_id: int,
                     exclude_ids: Sequence[int] = (), axis_name: str | None = None
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The weighted MLM + TLM terms for one batch (call inside the loss function).

  Args:
    encoder: the student encoder (merged from the parameters being
      differentiated, so the terms train it).
    head: the LM head (likewise).
    batch: 'src_ids', 'src_mask', 'src_special' [B, Ls] for MLM; for TLM
      'tlm_ids', 'tlm_mask', 'tlm_special' [B, Lp] and optionally
      'tlm_type_ids' (used when the encoder has >= 2 token types), as
      `add_tlm_inputs` writes them.
    rng: this step's key (typed or raw key data); MLM and TLM fold in 0 and 1,
      and under `pmap` the device index too, so no two masks repeat.
    cfg: weights and masking rates (static).
    vocab_size: random replacements come from [0, vocab_size).
    mask_id: the mask token id.
    exclude_ids: ids random replacements avoid (`VocabIds.special_ids`).
    axis_name: inside `pmap`, the device axis: each value is this device's
      share of the global-batch value (psum it), as in `losses`.

  Returns:
    (mlm_weight * loss_mlm + tlm_weight * loss_tlm, metrics 'loss_mlm',
    'mlm_accuracy', 'loss_tlm', 'tlm_accuracy' for the terms that are on),
    float32 scalars.
  """
  key = _as_key(rng)
  if axis_name:
    key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
  kw = dict(vocab_size=vocab_size, mask_id=mask_id, exclude_ids=tuple(exclude_ids),
            axis_name=axis_name)
  total, metrics = jnp.zeros((), jnp.float32), {}
  if cfg.mlm_weight:
    loss, acc = masked_lm_term(encoder, head, batch["src_ids"], batch["src_mask"],
                               batch["src_special"], jax.random.fold_in(key, 0), cfg, **kw)
    total += cfg.mlm_weight * loss
    metrics.update(loss_mlm=loss, mlm_accuracy=acc)
  if cfg.tlm_weight:
    if "tlm_ids" not in batch:
      raise KeyError("tlm_weight > 0 needs the batch keys 'tlm_ids', 'tlm_mask', "
                     "'tlm_special' (see mlm.add_tlm_inputs)")
    type_ids = batch.get("tlm_type_ids") if encoder.cfg.type_vocab_size >= 2 else None
    loss, acc = masked_lm_term(encoder, head, batch["tlm_ids"], batch["tlm_mask"],
                               batch["tlm_special"], jax.random.fold_in(key, 1), cfg,
                               type_ids=type_ids, **kw)
    total += cfg.tlm_weight * loss
    metrics.update(loss_tlm=loss, tlm_accuracy=acc)
  return total, metrics


# ----------------------------------------------------------------------------
# TLM inputs (host side, at batch construction).

def _pair_lengths(a: int, b: int, max_length: int) -> tuple[int, int]:
  """Tokens kept of a source of `a` and a target of `b` tokens."""
  if a + b <= max_length:
    return a, b
  # The longer side is cut first; when both are long each keeps half (the
  # source the odd token), as transformers' 'longest_first' ends up.
  b_keep = min(b, max(max_length - a, max_length // 2))
  return min(a, max_length - b_keep), b_keep


def _cut(tokens: np.ndarray, keep: int) -> np.ndarray:
  """The first `keep - 1` tokens and the last (the closing separator)."""
  if keep >= len(tokens):
    return tokens
  return np.concatenate([tokens[:keep - 1], tokens[-1:]])


def tlm_inputs(src_ids: np.ndarray, src_mask: np.ndarray, src_special: np.ndarray,
               tgt_ids: np.ndarray, tgt_mask: np.ndarray, tgt_special: np.ndarray, *,
               max_length: int, pad_id: int, target_start_id: int | None = None
               ) -> dict[str, np.ndarray]:
  """Each (source, target) pair as one TLM sequence.

  `[CLS] src [SEP]` + `[CLS] tgt [SEP]` -> `[CLS] src [SEP] tgt [SEP]`: the
  target's leading special token (CLS / <s>) is dropped, or replaced by
  `target_start_id` (pass the </s> id for RoBERTa / XLM-R to get their pair
  layout `<s> src </s></s> tgt </s>`); separators and the prefix tokens stay
  and stay marked special, so they are never masked. Over `max_length`, the
  longer side is cut first (each keeping its closing separator), the same
  way for every batch. Rows where either side is empty (batch padding) come
  out empty.

  Positions are not restarted for the target as XLM's TLM does: our encoder
  derives position ids from the mask, so they run on through the pair, as
  in BERT's sentence-pair inputs. The sides are told apart by
  `tlm_type_ids` (0 source, 1 target) on encoders with two token types
  (BERT, e5); XLM-R has one and ignores them.

  This runs in numpy on the host: it is batch construction, with per-row
  lengths deciding where each piece lands, and it hands the step one more
  fixed-shape [B, max_length] array set that the sharding code splits by
  rows like any other batch key.

  Args:
    src_ids, src_mask, src_special: [B, Ls] the source side (as `make_batch`
      builds it).
    tgt_ids, tgt_mask, tgt_special: [B, Lt] the target side.
    max_length: length of the result (>= 4).
    pad_id: id of the padding.
    target_start_id: see above; None drops the target's first token.

  Returns:
    'tlm_ids' [B, max_length] int32, 'tlm_mask' int32, 'tlm_special' bool,
    'tlm_type_ids' int32.
  """
  if max_length < 4:
    raise ValueError(f"max_length must be >= 4, got {max_length}")
  b = src_ids.shape[0]
  out_ids = np.full((b, max_length), pad_id, np.int32)
  out_mask = np.zeros((b, max_length), np.int32)
  out_special = np.zeros((b, max_length), bool)
  out_type = np.zeros((b, max_length), np.int32)
  for i in range(b):
    ns, nt = int(np.sum(src_mask[i])), int(np.sum(tgt_mask[i]))
    if not ns or not nt:
      continue
    s_ids, s_sp = np.asarray(src_ids[i, :ns]), np.asarray(src_special[i, :ns], bool)
    t_ids, t_sp = np.array(tgt_ids[i, :nt]), np.array(tgt_special[i, :nt], bool)
    if t_sp[0]:           # the target's CLS / <s>
      if target_start_id is None:
        t_ids, t_sp = t_ids[1:], t_sp[1:]
      else:
        t_ids[0] = target_start_id
    a_keep, b_keep = _pair_lengths(len(s_ids), len(t_ids), max_length)
    ids = np.concatenate([_cut(s_ids, a_keep), _cut(t_ids, b_keep)])
    special = np.concatenate([_cut(s_sp, a_keep), _cut(t_sp, b_keep)])
    n = len(ids)
    out_ids[i, :n], out_mask[i, :n], out_special[i, :n] = ids, 1, special
    out_type[i, min(a_keep, len(s_ids)):n] = 1
  return dict(zip(TLM_KEYS, (out_ids, out_mask, out_special, out_type)))


def add_tlm_inputs(batch: dict[str, np.ndarray], *, pad_id: int,
                   max_length: int | None = None, target_start_id: int | None = None
                   ) -> dict[str, np.ndarray]:
  """`batch` (with the `src_*` / `tgt_*` keys of `train.make_batch`) plus the
  `tlm_*` keys; `max_length` None: both sides' padded lengths together (less
  the dropped target CLS), so nothing is cut."""
  if max_length is None:
    max_length = (batch["src_ids"].shape[1] + batch["tgt_ids"].shape[1]
                  - (target_start_id is None))
  sides = {k: batch[k] for k in ("src_ids", "src_mask", "src_special",
                                  "tgt_ids", "tgt_mask", "tgt_special")}
  return {**batch, **tlm_inputs(**sides, max_length=max_length, pad_id=pad_id,
                                target_start_id=target_start_id)}
