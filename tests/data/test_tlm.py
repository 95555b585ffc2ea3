"""TLM inputs (data/tlm.py): a sentence and its translation in one row, by hand and on
tokenized pairs."""
import numpy as np

from optical_jax.data import tlm
from optical_jax.models import lm_head
from optical_jax.models import tokenizer as tokenizer_lib

from tests import tiny_checkpoints


def test_tlm_inputs_by_hand():
  cls, sep, pad, q = 101, 102, 0, 50             # q: a prefix token, marked special
  src = np.array([[cls, q, 5, 6, sep, pad, pad],
                  [cls, 5, 6, 7, 8, 9, sep],
                  [pad] * 7])
  tgt = np.array([[cls, 7, 8, 9, sep, pad],
                  [cls, 21, 22, 23, 24, sep],
                  [pad] * 6])
  src_sp = np.isin(src, [cls, sep, q])
  tgt_sp = np.isin(tgt, [cls, sep])
  out = tlm.tlm_inputs(src, (src != pad).astype(np.int32), src_sp,
                       tgt, (tgt != pad).astype(np.int32), tgt_sp, max_length=10, pad_id=pad)
  # Row 0 fits (5 + 4 = 9); row 1 (7 + 5) is cut to 10, 5 each, separators kept;
  # row 2 is batch padding.
  np.testing.assert_array_equal(out["tlm_ids"], [
      [cls, q, 5, 6, sep, 7, 8, 9, sep, pad],
      [cls, 5, 6, 7, sep, 21, 22, 23, 24, sep],
      [pad] * 10])
  np.testing.assert_array_equal(out["tlm_mask"], [[1] * 9 + [0], [1] * 10, [0] * 10])
  np.testing.assert_array_equal(out["tlm_special"], [
      [1, 1, 0, 0, 1, 0, 0, 0, 1, 0],
      [1, 0, 0, 0, 1, 0, 0, 0, 0, 1],
      [0] * 10])
  np.testing.assert_array_equal(out["tlm_type_ids"], [
      [0] * 5 + [1] * 4 + [0], [0] * 5 + [1] * 5, [0] * 10])

  # XLM-R layout: the target's <s> becomes </s>; a short source keeps all of
  # itself and the target takes the rest.
  out = tlm.tlm_inputs(src[:1], (src[:1] != pad).astype(np.int32), src_sp[:1],
                       tgt[1:2], (tgt[1:2] != pad).astype(np.int32), tgt_sp[1:2],
                       max_length=9, pad_id=pad, target_start_id=sep)
  np.testing.assert_array_equal(out["tlm_ids"], [[cls, q, 5, 6, sep, sep, 21, 22, sep]])


def test_add_tlm_inputs_on_tokenized_pairs(tmp_path, multilingual_texts):
  d = tiny_checkpoints.write_xlmr(tmp_path / "x")
  tok = tokenizer_lib.Tokenizer.from_pretrained(d)
  src = tok.encode(multilingual_texts[:4], prefix="query: ", max_length=32)
  tgt = tok.encode(multilingual_texts[4:8], prefix="passage: ", max_length=32)
  batch = {"src_ids": src.ids, "src_mask": src.mask, "src_special": src.special,
           "tgt_ids": tgt.ids, "tgt_mask": tgt.mask, "tgt_special": tgt.special}
  out = tlm.add_tlm_inputs(batch, pad_id=tok.pad_id)
  for i in range(4):
    ns, nt = src.mask[i].sum(), tgt.mask[i].sum()
    expect = list(src.ids[i, :ns]) + list(tgt.ids[i, 1:nt])
    assert list(out["tlm_ids"][i, :out["tlm_mask"][i].sum()]) == expect
  ids = lm_head.VocabIds.from_tokenizer(tok)
  backend = tok.backend
  assert ids.mask_id == backend.token_to_id("<mask>")
  assert (ids.cls_id, ids.sep_id, ids.pad_id) == (backend.token_to_id("<s>"),
                                                  backend.token_to_id("</s>"),
                                                  backend.token_to_id("<pad>"))
  assert set(ids.special_ids) == {backend.token_to_id(t) for t in
                                  ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
