"""Translation-LM inputs: each bitext pair as one sequence, built on the host.

TLM (XLM, Conneau & Lample 2019) concatenates a source sentence and its English
translation and masks tokens of both, so a masked source word can be recovered
from the translation. The masking happens inside the step
(`core/masking.py`); this module lays out the pair sequences when the batch is
built.
"""
from __future__ import annotations

import numpy as np

TLM_KEYS = ("tlm_ids", "tlm_mask", "tlm_special", "tlm_type_ids")


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
    src_ids, src_mask, src_special: [B, Ls] the source side (as `batches.pair_batch`
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
  """`batch` (with the `src_*` / `tgt_*` keys of `batches.pair_batch`) plus the
  `tlm_*` keys; `max_length` None: both sides' padded lengths together (less
  the dropped target CLS), so nothing is cut."""
  if max_length is None:
    max_length = (batch["src_ids"].shape[1] + batch["tgt_ids"].shape[1]
                  - (target_start_id is None))
  sides = {k: batch[k] for k in ("src_ids", "src_mask", "src_special",
                                  "tgt_ids", "tgt_mask", "tgt_special")}
  return {**batch, **tlm_inputs(**sides, max_length=max_length, pad_id=pad_id,
                                target_start_id=target_start_id)}
