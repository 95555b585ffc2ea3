"""MTOP utterances with their intents, as the intent research question reads them.

Read through the `mtop` TFDS builder (`tfds_builders/mtop.py`), which loads
only when MTOP is read. Intents map to label ids over the label vocabulary of
the training split; an intent outside it is `probe.UNKNOWN`.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from optical_jax import config as config_lib
from optical_jax.core.probe import UNKNOWN
from optical_jax.data.tfds_builders import _base
from optical_jax.data.tfds_builders import loading

LANGUAGES = config_lib.MTOP_LANGUAGES
SPLITS = ("train", "eval", "test")


@dataclasses.dataclass(frozen=True)
class Utterances:
  """One language's split of MTOP, in file order.

  Attributes:
    lang: language code ('en', 'de', ...).
    split: 'train', 'eval' or 'test'.
    ids: [N] utterance ids, shared by the translations of an utterance.
    texts: [N] utterances.
    intents: [N] gold intents ('IN:GET_WEATHER').
  """
  lang: str
  split: str
  ids: tuple[str, ...]
  texts: tuple[str, ...]
  intents: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.ids)


def read_mtop(lang: str, split: str, *, data_dir: str | None = None,
              manual_dir: str | None = None, limit: int = 0) -> Utterances:
  """MTOP utterances of one language and split, through the `mtop` TFDS builder.

  Args:
    lang: one of `LANGUAGES`.
    split: one of `SPLITS`.
    data_dir: where the prepared dataset lives (TFDS's default when None or '').
    manual_dir: the unzipped release (`<manual_dir>/mtop/<lang>/<split>.txt`).
    limit: the first `limit` utterances only (0 = all), for quick runs.

  Raises:
    ManualDataError: the release files are not in `manual_dir` (they are listed).
  """
  source = loading.load("mtop", lang, data_dir or None, manual_dir or None, split=split)
  n = min(limit, len(source)) if limit else len(source)
  rows = [source[i] for i in range(n)]
  return Utterances(lang, split, *(tuple(_base.text(r[k]) for r in rows)
                                   for k in ("id", "utterance", "intent")))


def label_vocab(intents: Sequence[str]) -> tuple[str, ...]:
  """The label vocabulary: the distinct intents of the training split, sorted.

  Sorted, so that label i means the same intent whatever the file order.
  """
  if not intents:
    raise ValueError("no training intents to build the label vocabulary from")
  return tuple(sorted(set(intents)))


def encode_labels(intents: Sequence[str], vocab: Sequence[str]
                  ) -> tuple[np.ndarray, dict[str, int]]:
  """Intents -> label ids, and the intents outside the vocabulary with their counts.

  Returns:
    ([N] int32 labels, `UNKNOWN` (-1) where the intent is not in `vocab`;
     {intent: count} of those, most frequent first).
  """
  index = {intent: i for i, intent in enumerate(vocab)}
  labels = np.array([index.get(i, UNKNOWN) for i in intents], np.int32)
  unknown: dict[str, int] = {}
  for intent in intents:
    if intent not in index:
      unknown[intent] = unknown.get(intent, 0) + 1
  return labels, dict(sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0])))
