"""Texts -> the fixed-shape token arrays a training step reads.

`pair_batch` tokenises a batch of bitext pairs for the distillation step,
`triple_batch` a batch of (query, positive, negative) triples for the teacher
step. Both pad to one length every step, so the jitted step compiles once (with
token packing, once more for a batch over the packed budget); truncations are
counted by the tokenizer.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from optical_jax.data import triples as triples_lib
from optical_jax.models import packing
from optical_jax.models import tokenizer as tokenizer_lib


def pair_batch(tokenizer: tokenizer_lib.Tokenizer, src: Sequence[str], tgt: Sequence[str], *,
               src_prefix: str, tgt_prefix: str, max_length: int, batch_size: int,
               pad_to_max: bool = True, student_reads_tgt: bool = False,
               capacities: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
  """Token arrays for a batch of pairs (truncations counted by the tokenizer).

  With `pad_to_max` both sides are padded to `max_length` so the jitted step
  compiles once; otherwise to their length bucket. `student_reads_tgt` adds
  'stu_tgt_*': the English side with the student's (source) prefix.
  `capacities` ('src', 'tgt', 'stu_tgt' -> packed rows C) adds '<side>_pack'
  [C] (`packing.pack_index`) to each side whose real tokens fit: its encoder
  then runs on them only.
  """
  sides = {}
  todo = [("src", src, src_prefix), ("tgt", tgt, tgt_prefix)]
  if student_reads_tgt:
    todo.append(("stu_tgt", tgt, src_prefix))
  for side, texts, prefix in todo:
    b = tokenizer.encode(texts, prefix=prefix, max_length=max_length, batch_size=batch_size)
    if pad_to_max and b.ids.shape[1] < max_length:
      pad = max_length - b.ids.shape[1]
      b.ids = np.pad(b.ids, ((0, 0), (0, pad)), constant_values=tokenizer.pad_id)
      b.mask = np.pad(b.mask, ((0, 0), (0, pad)))
      b.special = np.pad(b.special, ((0, 0), (0, pad)))
    sides.update({f"{side}_ids": b.ids, f"{side}_mask": b.mask, f"{side}_special": b.special})
  return with_packs(sides, pair_masks(sides), capacities)


def with_packs(batch: dict[str, np.ndarray], masks: Mapping[str, np.ndarray],
                capacities: Mapping[str, int] | None) -> dict[str, np.ndarray]:
  """`batch` plus '<side>_pack' (`packing.pack_index`) for each side of `masks`
  that has a budget in `capacities` and fits it."""
  for side, mask in masks.items():
    if capacities and side in capacities:
      index = packing.pack_index(mask, capacities[side])
      if index is not None:
        batch[f"{side}_pack"] = index
  return batch


def pack_capacities(sample: Sequence[Mapping[str, np.ndarray]]) -> dict[str, int]:
  """Packed budgets (`packing.capacity`) from a sample of padded batches' masks.

  Args:
    sample: one `{side: [B, L] mask}` per sampled batch (`pair_masks`,
      `triple_masks`).

  Returns:
    `{side: rows}`; a side where packing saves nothing is left out.
  """
  out = {}
  for side in sample[0]:
    masks = [m[side] for m in sample]
    cap = packing.capacity(np.array([m.sum() for m in masks]), masks[0].size)
    if cap is not None:
      out[side] = cap
  return out


def pair_masks(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`{side: mask}` of a `pair_batch`: what its encoders read (with 'tlm', the
  concatenated pair of `tlm.add_tlm_inputs`, where the batch has it)."""
  return {side: batch[f"{side}_mask"] for side in ("src", "tgt", "stu_tgt", "tlm")
          if f"{side}_mask" in batch}


def triple_masks(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`{side: mask}` of a `triple_batch`: the queries ('q') and, read in one pass,
  the positives then the negatives ('d')."""
  return {"q": batch["q_mask"], "d": np.concatenate([batch["p_mask"], batch["n_mask"]])}


def _padded(tokenizer: tokenizer_lib.Tokenizer, texts: Sequence[str], prefix: str,
             length: int) -> tuple[np.ndarray, np.ndarray]:
  """`[B, length]` ids and mask: one shape every step, so the step compiles once."""
  length = min(length, tokenizer.max_length)    # never past the position table
  enc = tokenizer.encode(list(texts), prefix=prefix, max_length=length)
  pad = length - enc.ids.shape[1]
  return (np.pad(enc.ids, ((0, 0), (0, pad)), constant_values=tokenizer.pad_id),
          np.pad(enc.mask, ((0, 0), (0, pad))))


def triple_batch(tokenizer: tokenizer_lib.Tokenizer, batch: Sequence[triples_lib.Triple], *,
               query_prefix: str, doc_prefix: str, query_max_length: int,
               max_length: int, capacities: Mapping[str, int] | None = None
               ) -> dict[str, np.ndarray]:
  """Token arrays of a batch of triples, the keys `step.teacher_step` reads.

  `capacities` ('q', 'd' -> packed rows) adds 'q_pack' / 'd_pack' where the real
  tokens fit (`triple_masks` says what each side is).
  """
  out = {}
  for side, texts, prefix, length in (
      ("q", [t.query for t in batch], query_prefix, query_max_length),
      ("p", [t.positive for t in batch], doc_prefix, max_length),
      ("n", [t.negative for t in batch], doc_prefix, max_length)):
    out[f"{side}_ids"], out[f"{side}_mask"] = _padded(tokenizer, texts, prefix, length)
  return with_packs(out, triple_masks(out), capacities)
