"""What a distillation job works with, loaded from its config."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import ml_collections

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.data import sources
from optical_jax.models import heads as heads_lib
from optical_jax.models import tokenizer as tokenizer_lib


@dataclasses.dataclass
class Setup:
  """Everything a distill or evaluate job works with."""
  config: ml_collections.ConfigDict
  teacher: heads_lib.TextModel
  tokenizer: tokenizer_lib.Tokenizer
  directory: pathlib.Path  # the teacher's HF directory
  src: list[str]
  tgt: list[str]
  collection: Any          # sources.Collection or None
  order: Any = None        # the training order (BatchOrder or a language mix)
  report: dict = dataclasses.field(default_factory=dict)   # see `sources.load`


def prepare(config: ml_collections.ConfigDict, *, need_train_data: bool = True) -> Setup:
  """Loads the bitext and the evaluation collection (first: a bad line fails
  fast), then the teacher and its tokenizer."""
  config_lib.check(config)
  report = {}
  src, tgt, collection, order = sources.load(config, need_train_data=need_train_data,
                                             with_order=True, report=report)
  teacher, tokenizer, directory = models.load_configured(config.model)
  if need_train_data:
    for key in ("src_prefix", "tgt_prefix"):
      n = int(tokenizer.encode([""], prefix=config.text[key]).mask.sum())
      if n >= config.train.max_length:
        raise config_lib.ConfigError(
            f"config.train.max_length={config.train.max_length} leaves no room for text after "
            f"config.text.{key}={config.text[key]!r} ({n} tokens with the special ones)")
  return Setup(config, teacher, tokenizer, directory, src, tgt, collection, order, report)
