"""The BERT / RoBERTa masked-LM head, its Hugging Face name table, and the token
ids masking needs.

`MLMHead`'s output matrix is the student's own word embedding (tied, as in the
pretrained checkpoints). The head starts from the checkpoint's
`cls.predictions.*` (BERT) or `lm_head.*` (RoBERTa, XLM-R) tensors when it has
them, else from a seeded random initialisation.
"""
from __future__ import annotations

import dataclasses
import logging
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from optical_jax.models import activations
from optical_jax.models import encoder as encoder_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights as weights_lib

log = logging.getLogger(__name__)

# RoBERTa's LM head applies GELU whatever `hidden_act` says; BERT's applies
# `hidden_act` (see transformers' RobertaLMHead / BertPredictionHeadTransform).
_ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert")


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
  def from_tokenizer(cls, tokenizer: tokenizer_lib.Tokenizer) -> "VocabIds":
    """Reads the ids from a `tokenizer_lib.Tokenizer`.

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
    self.activation = activations.ACTIVATIONS[act]

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
