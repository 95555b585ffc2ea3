"""Text to fixed-shape token batches.

Tokenisation runs through the Rust `tokenizers` library (the engine behind
transformers' fast tokenizers). Batches are padded to a few fixed length
buckets so that jitted encoders compile once per bucket instead of once per
batch; inputs longer than the limit are truncated (special tokens kept) and
counted, and the count is reported.

The tokenizer file is read with `tokenizers.Tokenizer.from_file`: loading an
XLM-R `tokenizer.json` through transformers' slow-tokenizer class can drop its
NFKC normaliser, which changes the ids of many non-Latin texts.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from typing import Sequence

import numpy as np
import tokenizers

log = logging.getLogger(__name__)

# Steps of 16 up to 128 tokens, where sentences and passages mostly fall, then
# coarser. Encoding sorts texts by length, so a batch's padding is its bucket's
# rounding: with (16, 32, 64, 128, ...) the demo's evaluation texts were 41-45%
# padding, with these 26-32%, and encoding its 2,061 queries took 61 s instead of
# 80 s (compilations included) on a 2-core EPYC. Each bucket used is one more
# compilation of the encoder.
DEFAULT_BUCKETS = (16, 32, 48, 64, 80, 96, 112, 128, 192, 256, 384, 512)
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                 "cls_token", "mask_token")


@dataclasses.dataclass
class TokenBatch:
  """A padded batch of token ids.

  Attributes:
    ids: [B, L] int32 token ids, `pad_id` past each text's end.
    mask: [B, L] int32, 1 on real tokens (specials and prefix included).
    special: [B, L] bool, True on special tokens (CLS/SEP, <s>/</s>) and on the
      tokens of the query/passage prefix: the tokens OT marginals may leave out.
    num_truncated: texts of this batch that were cut at the length limit.
    num_texts: texts before any batch padding (rows past it are empty).
  """
  ids: np.ndarray
  mask: np.ndarray
  special: np.ndarray
  num_truncated: int
  num_texts: int

  @property
  def lengths(self) -> np.ndarray:
    """[B] real tokens per row."""
    return self.mask.sum(axis=1)


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= n (the last bucket if none is)."""
  for b in sorted(buckets):
    if b >= n:
      return b
  return max(buckets)


class Tokenizer:
  """A fast tokenizer with prefixes, length buckets and truncation accounting.

  Attributes:
    backend: the `tokenizers.Tokenizer`.
    special_tokens: HF special-token names -> strings (`pad_token`, `cls_token`...).
    pad_id: id used for padding.
    max_length: longest sequence produced, special tokens included.
    buckets: padded lengths a batch may take (all <= max_length).
    total_truncated: texts truncated over this tokenizer's lifetime.
  """

  def __init__(self, backend: tokenizers.Tokenizer, special_tokens: dict[str, str], *,
               max_length: int = 512, buckets: Sequence[int] = DEFAULT_BUCKETS):
    self.backend = backend
    self.backend.no_padding()
    self.special_tokens = dict(special_tokens)
    pad = self.special_tokens.get("pad_token")
    pad_id = backend.token_to_id(pad) if pad else None
    if pad_id is None:
      raise ValueError(f"tokenizer has no id for its pad token {pad!r}")
    self.pad_id = pad_id
    self.max_length = max_length
    self.buckets = tuple(sorted({b for b in buckets if b < max_length} | {max_length}))
    self.backend.enable_truncation(max_length)
    self.total_truncated = 0

  @classmethod
  def from_pretrained(cls, directory: str | os.PathLike, **kwargs) -> "Tokenizer":
    """Reads `tokenizer.json` (+ `tokenizer_config.json`) from an HF directory.

    A directory with only slow-tokenizer files (`vocab.txt`, `sentencepiece.bpe.model`)
    is converted through transformers.
    """
    d = pathlib.Path(directory)
    special = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
      if (d / name).exists():
        data = json.loads((d / name).read_text(encoding="utf-8"))
        for k in _SPECIAL_KEYS:
          v = data.get(k)
          v = v.get("content") if isinstance(v, dict) else v
          if isinstance(v, str):
            special.setdefault(k, v)
    if (d / "tokenizer.json").exists():
      backend = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
    else:
      import transformers  # pylint: disable=g-import-not-at-top
      try:
        hf = transformers.AutoTokenizer.from_pretrained(str(d), use_fast=True)
      except Exception as e:
        raise ValueError(f"{d}: no tokenizer.json and transformers cannot build a fast "
                         f"tokenizer from it ({e})") from e
      backend = hf.backend_tokenizer
      special.update({k: getattr(hf, k) for k in _SPECIAL_KEYS if getattr(hf, k, None)})
    if "model_max_length" not in kwargs and "max_length" not in kwargs:
      cfg = d / "tokenizer_config.json"
      limit = json.loads(cfg.read_text()).get("model_max_length") if cfg.exists() else None
      if isinstance(limit, int) and limit < 100_000:
        kwargs["max_length"] = limit
    kwargs.pop("model_max_length", None)
    return cls(backend, special, **kwargs)

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, texts: Sequence[str], *, prefix: str = "", max_length: int | None = None,
             batch_size: int | None = None) -> TokenBatch:
    """Tokenises `texts` (each prefixed with `prefix`) into a padded batch.

    Args:
      texts: the texts.
      prefix: prepended to every text, e.g. "query: " or "passage: " for e5.
      max_length: a limit below the tokenizer's own (special tokens included).
      batch_size: pad the batch with empty rows to this many (a fixed batch
        shape for jitted functions); must be >= len(texts).

    Returns:
      a `TokenBatch` of length `bucket_length(longest)`.
    """
    limit = min(max_length or self.max_length, self.max_length)
    if limit != self.backend.truncation["max_length"]:
      self.backend.enable_truncation(limit)
    encs = self.backend.encode_batch([prefix + t for t in texts])
    rows = batch_size or len(texts)
    if rows < len(texts):
      raise ValueError(f"batch_size {batch_size} < {len(texts)} texts")
    longest = max((len(e.ids) for e in encs), default=1)
    # A limit between buckets is a bucket of its own: texts cut at 48 tokens
    # must not be padded into (or overflow) the 32 or 64 bucket.
    length = bucket_length(longest, [b for b in self.buckets if b < limit] + [limit])
    ids = np.full((rows, length), self.pad_id, np.int32)
    mask = np.zeros((rows, length), np.int32)
    special = np.zeros((rows, length), bool)
    truncated = 0
    for i, e in enumerate(encs):
      n = len(e.ids)
      ids[i, :n] = e.ids
      mask[i, :n] = 1
      special[i, :n] = np.asarray(e.special_tokens_mask, bool)
      if prefix:
        # Prefix tokens end within the prefix's characters; the text starts after.
        ends = np.asarray([end for _, end in e.offsets])
        special[i, :n] |= (ends <= len(prefix)) & (ends > 0)
      truncated += bool(e.overflowing)
    if truncated:
      # Warn once; after that the running count (`total_truncated`) is what
      # jobs report, not a line per batch.
      first = not self.total_truncated
      self.total_truncated += truncated
      (log.warning if first else log.debug)(
          "truncated %d of %d texts to %d tokens (%d so far; later truncations are "
          "counted in `total_truncated`)", truncated, len(texts), limit, self.total_truncated)
    return TokenBatch(ids=ids, mask=mask, special=special, num_truncated=truncated,
                      num_texts=len(texts))

  def tokenize(self, text: str) -> list[str]:
    """The token strings of one text (no specials), for inspection."""
    return self.backend.encode(text, add_special_tokens=False).tokens

  def save(self, directory: str | os.PathLike) -> None:
    """Writes tokenizer files that transformers' AutoTokenizer loads."""
    import transformers  # pylint: disable=g-import-not-at-top
    backend = tokenizers.Tokenizer.from_str(self.backend.to_str())
    backend.no_truncation()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=self.max_length, **self.special_tokens)
    fast.save_pretrained(str(directory))
