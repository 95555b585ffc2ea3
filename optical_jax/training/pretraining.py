"""The multilingual pretraining terms (MLM / TLM) as an extra loss on the student.

Both run the student encoder on masked inputs (`core/masking.py`) and predict
the masked tokens with the LM head (`models/lm_head.py`), whose parameters
train with the student's: they sit in the trainable dict under `HEAD_PREFIX`,
so they are optimised, checkpointed and sharded like the rest. MLM masks the
source side; TLM the concatenated pair that `data/tlm.py` builds.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from optical_jax.core import masking
from optical_jax.models import encoder as encoder_lib
from optical_jax.models import heads as heads_lib
from optical_jax.models import lm_head
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.training.trainable import ModelParts
from optical_jax.training.trainable import Params

# The MLM head's parameters sit in the trainable dict under this prefix.
HEAD_PREFIX = "mlm_head/"


@dataclasses.dataclass(frozen=True)
class Pretraining:
  """The multilingual pretraining terms (MLM / TLM, see `core/masking.py`) as an extra loss.

  Attributes:
    head_parts: the LM head's graph; its parameters are `HEAD_PREFIX + name`
      entries of the trainable dict (trained, checkpointed, sharded with it).
    cfg: weights and masking.
    vocab_size, mask_id, exclude_ids: what masking draws from and avoids.
  """
  head_parts: ModelParts
  cfg: masking.MLMConfig
  vocab_size: int
  mask_id: int
  exclude_ids: tuple[int, ...]

  @classmethod
  def create(cls, cfg: masking.MLMConfig, teacher: heads_lib.TextModel, directory,
             tokenizer: tokenizer_lib.Tokenizer, seed: int) -> tuple["Pretraining", Params]:
    """(the spec, its head's initial parameters, prefixed): the checkpoint's LM
    head when `directory` has one, else a seeded random head."""
    head = lm_head.load_head(directory, teacher.encoder.cfg, seed=seed)
    parts, params = ModelParts.split(head)
    vocab = lm_head.VocabIds.from_tokenizer(tokenizer)
    spec = cls(parts, cfg, teacher.encoder.cfg.vocab_size, vocab.mask_id,
               tuple(vocab.special_ids))
    return spec, {HEAD_PREFIX + k: v for k, v in params.items()}

  def loss(self, encoder, params: Params, batch, rng, axis_name: str | None):
    head = self.head_parts.merge({k[len(HEAD_PREFIX):]: v for k, v in params.items()
                                  if k.startswith(HEAD_PREFIX)})
    return pretraining_loss(encoder, head, batch, rng, self.cfg,
                                    vocab_size=self.vocab_size, mask_id=self.mask_id,
                                    exclude_ids=self.exclude_ids, axis_name=axis_name)


def masked_lm_term(encoder: encoder_lib.Encoder, head: lm_head.MLMHead, ids: jax.Array,
                   mask: jax.Array, special: jax.Array, rng: jax.Array, cfg: masking.MLMConfig, *,
                   vocab_size: int, mask_id: int, exclude_ids: Sequence[int] = (),
                   type_ids: jax.Array | None = None, axis_name: str | None = None,
                   pack: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(loss, accuracy) of masked-token prediction on one batch of sequences.

  Masks [B, L] `ids`, encodes them, and runs the head on only the
  `masking.max_predictions(L)` gathered positions per row, not all L: the [.., V]
  logits are the largest tensor of the step (V = 250k for XLM-R). `pack` [C]
  (`packing.pack_index` of `mask`): the encoder runs on the real tokens only;
  masking keeps `mask`, so the unmasked sequence's index serves.
  """
  input_ids, labels, weights = masking.mask_tokens(rng, ids, mask, special, cfg,
                                           vocab_size=vocab_size, mask_id=mask_id,
                                           exclude_ids=exclude_ids)
  hidden = encoder(input_ids, mask, type_ids, pack=pack)               # [B, L, H]
  k = masking.max_predictions(ids.shape[1], cfg.mask_rate)
  # Every chosen position has weight 1 > 0 and there are at most k, so the
  # top k hold them all; the slots left over carry weight 0.
  _, pos = jax.lax.top_k(weights, k)                                   # [B, K]
  # Gathered in float32: the gradient of a gather is a scatter-add, and a bf16
  # one is a compare-and-swap loop on NVIDIA GPUs (openxla/xla#26371).
  hidden = jnp.take_along_axis(hidden.astype(jnp.float32), pos[..., None], axis=1)  # [B, K, H]
  labels = jnp.take_along_axis(labels, pos, axis=1)
  weights = jnp.take_along_axis(weights, pos, axis=1)
  logits = head(hidden, encoder.embeddings.word.embedding[...])        # [B, K, V]
  loss = masking.mlm_loss(logits, labels, weights, axis_name=axis_name)
  acc = jax.lax.stop_gradient(masking.masked_accuracy(logits, labels, weights, axis_name))
  return loss, acc


def pretraining_loss(encoder: encoder_lib.Encoder, head: lm_head.MLMHead,
                     batch: dict[str, jax.Array],
                     rng: jax.Array, cfg: masking.MLMConfig, *, vocab_size: int, mask_id: int,
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
      `tlm.add_tlm_inputs` writes them; 'src_pack' / 'tlm_pack' where the
      batch packs those sides (`batches.with_packs`).
    rng: this step's key (typed or raw key data); MLM and TLM fold in 0 and 1,
      and under `pmap` the device index too, so no two masks repeat.
    cfg: weights and masking rates (static).
    vocab_size: random replacements come from [0, vocab_size).
    mask_id: the mask token id.
    exclude_ids: ids random replacements avoid (`lm_head.VocabIds.special_ids`).
    axis_name: inside `pmap`, the device axis: each value is this device's
      share of the global-batch value (psum it), as in `losses`.

  Returns:
    (mlm_weight * loss_mlm + tlm_weight * loss_tlm, metrics 'loss_mlm',
    'mlm_accuracy', 'loss_tlm', 'tlm_accuracy' for the terms that are on),
    float32 scalars.
  """
  key = masking.as_key(rng)
  if axis_name:
    key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
  kw = dict(vocab_size=vocab_size, mask_id=mask_id, exclude_ids=tuple(exclude_ids),
            axis_name=axis_name)
  total, metrics = jnp.zeros((), jnp.float32), {}
  if cfg.mlm_weight:
    loss, acc = masked_lm_term(encoder, head, batch["src_ids"], batch["src_mask"],
                               batch["src_special"], jax.random.fold_in(key, 0), cfg,
                               pack=batch.get("src_pack"), **kw)
    total += cfg.mlm_weight * loss
    metrics.update(loss_mlm=loss, mlm_accuracy=acc)
  if cfg.tlm_weight:
    if "tlm_ids" not in batch:
      raise KeyError("tlm_weight > 0 needs the batch keys 'tlm_ids', 'tlm_mask', "
                     "'tlm_special' (see tlm.add_tlm_inputs)")
    type_ids = batch.get("tlm_type_ids") if encoder.cfg.type_vocab_size >= 2 else None
    loss, acc = masked_lm_term(encoder, head, batch["tlm_ids"], batch["tlm_mask"],
                               batch["tlm_special"], jax.random.fold_in(key, 1), cfg,
                               type_ids=type_ids, pack=batch.get("tlm_pack"), **kw)
    total += cfg.tlm_weight * loss
    metrics.update(loss_tlm=loss, tlm_accuracy=acc)
  return total, metrics
