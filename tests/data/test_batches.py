"""Texts -> step arrays (data/batches.py)."""
import numpy as np

from optical_jax import models
from optical_jax.data import batches

from tests import tiny_checkpoints


def test_kd_mse_batches_carry_the_english_side_for_the_student(tmp_path):
  tok = models.load(str(tiny_checkpoints.write_xlmr(tmp_path / "t")))[1]
  b = batches.pair_batch(tok, ["moni"], ["hello there"], src_prefix="query: ",
                       tgt_prefix="passage: ", max_length=16, batch_size=2,
                       student_reads_tgt=True)
  want = tok.encode(["hello there"], prefix="query: ", max_length=16, batch_size=2)
  n = want.ids.shape[1]
  np.testing.assert_array_equal(b["stu_tgt_ids"][:, :n], want.ids)
  assert b["stu_tgt_ids"].shape == b["tgt_ids"].shape
